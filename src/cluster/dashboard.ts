/**
 * The dashboard of a runtime on PostgreSQL: the LMDB runtime's (src/dashboard/: the same options,
 * token and URL), served over this runtime's public methods. What it shows is the cluster's where
 * the runtime answers for the cluster (tasks, their counts and queues, events, logs, schedules, the
 * freeze) and this runtime's own where it counts only itself (its slots, and the chart of attempts
 * from `metrics()`); the page says which. Calls with no backing on PostgreSQL answer as a store
 * without those records would (no instances, no children), or, as actions, with UNSUPPORTED_STORE.
 */
import type { DashboardRuntime, DashboardStore } from '../dashboard/api.js';
import type { ResolvedDashboard } from '../dashboard/options.js';
import { serveDashboard, type DashboardServer } from '../dashboard/server.js';
import type { Logger } from '../log.js';
import { parseCursor } from '../store/postgres/events.js';

/** The cluster's store, to the dashboard: its cursors are `<xid>:<seq>`, and a bare number is an event's seq. */
const POSTGRES_DASHBOARD: DashboardStore = {
  kind: 'postgres',
  eventsAfter: (cursor) => (/^\d{1,16}$/.test(cursor) ? Number(cursor) : (parseCursor(cursor), cursor)),
};

/** The runtime's dashboard, once opened (nothing when `options.dashboard` is off). */
export class ClusterDashboard {
  #server: DashboardServer | undefined;

  /** Listens as `options` ask; INVALID_OPTIONS for a port that cannot be had. */
  async open(options: ResolvedDashboard | null, rt: DashboardRuntime, log: Logger): Promise<void> {
    if (!options) return;
    this.#server = await serveDashboard(rt, options, POSTGRES_DASHBOARD);
    // A generated token is shown once: whoever runs the runtime needs it to open the page.
    if (options.generated) log.warn({ url: this.#server.url }, 'dashboard listening beyond loopback: open it with this URL (it holds the token)');
  }

  /** Its URL (with `#token=` when it needs one); undefined when off. */
  get url(): string | undefined {
    return this.#server?.url;
  }

  /** Ends its streams and stops listening. */
  async close(): Promise<void> {
    await this.#server?.close();
  }
}
