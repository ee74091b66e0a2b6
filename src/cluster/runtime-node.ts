/**
 * The cluster node a runtime on PostgreSQL runs (node.ts), from the runtime's resolved options: its
 * claims, sweeps and cron fires at the runtime's pace, its spawns and fires admitted against the
 * runtime's `maxQueued` (src/store/postgres/admission.ts), and connections that do not hold the
 * process by themselves. What keeps the process alive is the runtime's KeepAlive
 * (src/keep-alive.ts), as on LMDB: the open runtime until `unref()`, and each pending wait.
 */
import type { RegisteredAgent } from '../agents/registry.js';
import type { Logger } from '../log.js';
import type { ResolvedOptions } from '../options.js';
import { fireDue } from '../store/postgres/schedule-fire.js';
import { openClusterNode, type ClusterNodeHandle } from './node.js';
import { POSTGRES_QUEUE, type AttemptObserver } from './options.js';
import type { Tracing } from '../telemetry/tracing.js';

/** The longest a queued task waits for a claim when no NOTIFY hint wakes the node (ms). */
const POLL_MS = 250;
/** Time between two sweeps for dead nodes and expired leases (ms). */
const SWEEP_MS = 150;
/** Time between two looks for due cron ticks (ms). */
const FIRE_MS = 250;

/** What the node needs from its runtime besides the options. */
export interface RuntimeNodeDeps {
  url: string;
  log: Logger;
  agents: readonly RegisteredAgent[];
  /** After each look for due cron ticks (the runtime reads its copy of the schedules again). */
  fired(): void;
  /** Hears the node's attempts start and end, and its spawns refused (the runtime's metrics). */
  observer: AttemptObserver;
  /** The runtime's tracing (src/telemetry/tracing.ts): the node's attempts and spawns are traced with it. */
  tracing: Tracing | undefined;
}

/** The runtime's `maxQueued` for the cluster's admission, or undefined when none was given (options.ts). */
export function admissionLimit(o: ResolvedOptions): number | undefined {
  return Number.isFinite(o.maxQueued) ? o.maxQueued : undefined;
}

/** Opens the runtime's node (see the module comment). */
export function openRuntimeNode(o: ResolvedOptions, deps: RuntimeNodeDeps): Promise<ClusterNodeHandle> {
  const { log } = deps;
  return openClusterNode(
    {
      connectionString: deps.url,
      agents: new Map(deps.agents.map((a) => [a.name, a])),
      threads: o.threads,
      slotsPerThread: o.slotsPerThread,
      prefetch: o.prefetch,
      leaseMs: o.leaseMs,
      pollMs: POLL_MS,
      sweepMs: SWEEP_MS,
      fireMs: FIRE_MS,
      cancelGraceMs: o.cancelGraceMs,
      logger: log,
      onLost: (error) => log.error({ err: error }, 'this runtime lost its place in the cluster: it runs no more attempts until it is opened again'),
      clock: o.clock,
      random: o.random,
      queue: {
        ...POSTGRES_QUEUE,
        fire: async (pool, node) => {
          const fired = await fireDue(pool, node, { maxQueued: admissionLimit(o) });
          deps.fired();
          return fired;
        },
      },
      createPool: o.createPool,
      observer: deps.observer,
      tracing: deps.tracing,
      maxQueued: admissionLimit(o),
    },
    { keepsProcessAlive: false },
  );
}
