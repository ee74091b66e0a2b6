/**
 * `rt.stats()` on PostgreSQL, in the LMDB runtime's shape (collectStats): what one runtime knows
 * without asking the database (stats() is synchronous): its lifecycle, its slots and the attempts
 * its node holds, its start-ahead window, its agents, and the cluster's freeze and its agents'
 * concurrency limits (their rows, whichever runtime stored them: null where none is stored, as
 * LMDB shows an agent registered without one) and fast-failure pauses as last seen; its retention sweeps (retention.ts); and the cluster's tasks by
 * state, in all and per agent, as last counted in the background (task-counts.ts: how fresh they
 * are). `queued` (and each agent's) is the cluster's queued tasks due to run (`run_at` come),
 * `delayed` those whose `run_at` is still to come (a `delayMs` or `runAt`, a retry's backoff), as
 * last counted too: 0 before the first count. The LMDB-only parts (instances, supervisor) are empty.
 */
import type { RegisteredAgent } from '../agents/registry.js';
import type { RuntimeState } from '../lifecycle.js';
import type { ResolvedOptions } from '../options.js';
import { collectStats, type RuntimeStats } from '../stats.js';
import type { ClusterControl } from '../store/postgres/control.js';
import type { RetentionStats } from '../tasks/retention.js';
import type { StoredConcurrency } from './agents-view.js';
import type { ClusterNodeHandle } from './node.js';
import type { TaskCountsView } from './task-counts.js';

/** What {@link clusterStats} reads. */
export interface ClusterStatsSources {
  state: RuntimeState;
  options: ResolvedOptions;
  agents: readonly RegisteredAgent[];
  node: ClusterNodeHandle | undefined;
  control: ClusterControl;
  /** How long the start took (ms). */
  startedMs: number;
  /** The tasks by state as last counted; undefined before the first count. */
  counts: TaskCountsView | undefined;
  /** This runtime's retention sweeps; null with `retention: false`. */
  retention: RetentionStats | null;
  /** Whether a fast-failure pause holds the agent, as last seen (agents-view.ts). */
  paused(agent: string): boolean;
  /** The agent's concurrency as the cluster holds it, as last read (agents-view.ts); undefined before its row was read. */
  stored(agent: string): StoredConcurrency | undefined;
}

/** See the module comment. */
export function clusterStats(s: ClusterStatsSources): RuntimeStats {
  const slots = s.options.threads * s.options.slotsPerThread;
  const executing = s.node && s.state !== 'closed' ? s.node.running : 0;
  const held = s.node && s.state !== 'closed' ? s.node.held : 0;
  const frozen = s.control.frozen;
  // Empty once closed, as on LMDB.
  const counts = s.state === 'closed' ? undefined : s.counts;
  const due = (agent: string) => (counts?.agents[agent]?.queued ?? 0) - (counts?.delayed.agents[agent] ?? 0);
  const registered = new Set(s.agents.map((agent) => agent.name));
  return collectStats({
    state: s.state,
    counts: counts?.tasks,
    governor: {
      slots,
      reserved: held,
      used: executing,
      queued: counts ? counts.tasks.queued - counts.delayed.total : 0,
      frozen,
      agents: Object.fromEntries([
        ...s.agents.map((agent) => {
          // The limits the claims enforce are the agent's row, whichever runtime stored it; its registration's until the row is read.
          const { concurrency, models } = s.stored(agent.name) ?? agent;
          // What this runtime alone has reserved is not counted here.
          return [agent.name, { queued: due(agent.name), reserved: 0, limit: concurrency, paused: s.paused(agent.name), models: Object.fromEntries(Object.entries(models).map(([model, limit]) => [model, { reserved: 0, limit }])) }];
        }),
        // The cluster's other agents that have tasks: their queue, with no limits of this runtime's.
        ...Object.keys(counts?.agents ?? {})
          .filter((name) => !registered.has(name))
          .map((name) => [name, { queued: due(name), reserved: 0, limit: 0, paused: s.paused(name), models: {} }]),
      ]),
    },
    // Held attempts not yet ended are executing or queued on their threads; the rest wait for their settle.
    attempts: { starting: 0, ready: Math.max(0, held - executing), executing },
    slots,
    prefetch: { ...(s.node?.prefetch ?? { window: 0, startMs: 0, execMs: 0 }), max: s.options.prefetch },
    liveInstances: 0,
    delayed: counts?.delayed.total ?? 0,
    rebuild: { previousShutdownClean: true, active: 0, crashed: 0, interrupted: 0, timers: 0, ms: Math.round(s.startedMs) },
    owners: counts && { agents: counts.agents, instances: {} },
    flow: () => undefined,
    control: frozen ? { frozen, ...(s.control.reason === undefined ? {} : { reason: s.control.reason }), killed: s.control.killed, since: s.control.since } : { frozen },
    cycles: 0,
    storeFailure: null,
    retention: s.retention,
  });
}
