/**
 * The dashboard of a runtime on PostgreSQL: the LMDB runtime's (src/dashboard/: the same options,
 * token and URL, opened and closed by src/endpoints.ts), served over this runtime's public methods
 * with {@link POSTGRES_DASHBOARD} for a store (see {@link clusterEndpoints}). What it shows is the cluster's where the runtime
 * answers for the cluster (tasks, their counts and queues, events, logs, schedules, the freeze)
 * and this runtime's own where it counts only itself (its slots, and the chart of attempts from
 * `metrics()`); the page says which. Calls with no backing on PostgreSQL answer as a store without
 * those records would (no instances, no children), or, as actions, with UNSUPPORTED_STORE.
 */
import type { DashboardStore } from '../dashboard/api.js';
import { Endpoints } from '../endpoints.js';
import { parseCursor } from '../store/postgres/events.js';

/** The cluster's store, to the dashboard: its cursors are `<xid>:<seq>`, and a bare number is an event's seq. */
export const POSTGRES_DASHBOARD: DashboardStore = {
  kind: 'postgres',
  eventsAfter: (cursor) => (/^\d{1,16}$/.test(cursor) ? Number(cursor) : (parseCursor(cursor), cursor)),
};

/** The runtime's `/metrics` (`metricsPort`) and dashboard, opened and closed as on LMDB, showing the cluster's store. */
export function clusterEndpoints(): Endpoints {
  return new Endpoints(POSTGRES_DASHBOARD);
}
