/**
 * `rt.stats()`: one plain snapshot of counts, gathered from the parts that own them.
 */
import type { TaskState } from '../machines/index.js';
import type { GovernorStats } from './governor/governor.js';
import type { AgentFlowView } from './governor/flow.js';
import type { RetentionStats } from './tasks/retention.js';
import type { Engine } from './engine.js';
import type { EngineSlot } from './engine-slot.js';
import type { ResolvedOptions } from './options.js';

/** One agent in `rt.stats()`. */
export type AgentStats = GovernorStats['agents'][string] & {
  /** Every stored task of this agent by state (non-zero counts only). */
  tasks: Partial<Record<TaskState, number>>;
  /** Rate tokens, today's count, fast-failure streak and backoff pause; null for an agent never registered. */
  flow: AgentFlowView | null;
};

/** What `rt.stats()` returns. */
export interface RuntimeStats {
  /** Lifecycle state of the runtime. */
  state: 'starting' | 'running' | 'draining' | 'closed';
  /** Every stored task by state (empty once closed). */
  tasks: Partial<Record<TaskState, number>>;
  /** Tasks waiting in the governor for a slot. */
  queued: number;
  /** Queued tasks waiting out a retry backoff. */
  delayed: number;
  /** Attempts by phase: starting (start commit in flight), ready (durable, waiting for a thread), executing. */
  attempts: { starting: number; ready: number; executing: number };
  /** Agent slots (threads × slotsPerThread) and how many are busy. */
  slots: { total: number; busy: number; free: number };
  /**
   * Start-ahead: attempts started beyond the free slots (`window`, at most `max`), sized from the
   * moving averages of the start commit's latency and of an attempt's run time, in ms.
   */
  prefetch: { window: number; max: number; startMs: number; execMs: number };
  /**
   * Per agent: queued and reserved attempts, its limits (total and per model), whether flow control
   * holds it back (`paused`), its tasks by state, and its flow-control state.
   */
  agents: Record<string, AgentStats>;
  /** Instance actors in memory, and the active (non-terminal) tasks of each instance by state. */
  instances: { live: number; tasks: Record<string, Partial<Record<TaskState, number>>> };
  /** What the last open found: whether the previous shutdown was clean, and what it rebuilt. */
  rebuild: RebuildReport;
  frozen: boolean;
  /** Supervisor cycles counted by the starvation ladder (durable). */
  supervisor: { cycles: number };
  /** Why it is frozen, and whether kill() froze it. */
  freeze: { reason?: string; killed: boolean; since?: number } | null;
  /**
   * Set while the store is stopped after a failed commit: why, since when, and how many times the
   * runtime has tried to open it again (see the README, "A full disk"); null once it has recovered.
   */
  storeFailure: StoreFailure | null;
  /** The background retention sweep: sweeps finished and tasks removed since start, the last and next sweep; null when `retention: false`. */
  retention: RetentionStats | null;
}

/** Why the store stopped, and the runtime's tries to open it again. */
export interface StoreFailure {
  message: string;
  /** When the commit failed, epoch ms. */
  since: number;
  /** Tries to open the data dir again so far. */
  retries: number;
  /** Why the last try failed. */
  lastError?: string;
}

/** What the rebuild on open did. */
export interface RebuildReport {
  previousShutdownClean: boolean;
  /** Non-terminal tasks loaded. */
  active: number;
  /** Attempts found running from a process that died, ended as `crashed`. */
  crashed: number;
  /** Attempts the runtime stopped itself to open its failed store again, requeued without counting. */
  interrupted: number;
  /** Durable timers re-armed. */
  timers: number;
  /** Time from the store being open to dispatch starting. */
  ms: number;
}

/** Inputs of {@link collectStats}. */
export interface StatsSources {
  state: RuntimeStats['state'];
  counts: Record<TaskState, number> | undefined;
  governor: GovernorStats;
  attempts: RuntimeStats['attempts'];
  slots: number;
  prefetch: { window: number; max: number; startMs: number; execMs: number };
  liveInstances: number;
  delayed: number;
  rebuild: RebuildReport;
  owners: { agents: Record<string, Partial<Record<TaskState, number>>>; instances: Record<string, Partial<Record<TaskState, number>>> } | undefined;
  flow(agent: string): AgentFlowView | undefined;
  control: { frozen: boolean; reason?: string; killed?: boolean; since?: number };
  cycles: number;
  storeFailure: RuntimeStats['storeFailure'];
  retention: RetentionStats | null;
}

/** Assembles {@link RuntimeStats}. */
export function collectStats(s: StatsSources): RuntimeStats {
  return {
    state: s.state,
    tasks: s.counts ? { ...s.counts } : {},
    queued: s.governor.queued,
    delayed: Math.max(0, s.delayed),
    attempts: { ...s.attempts },
    slots: { total: s.slots, busy: s.attempts.executing, free: Math.max(0, s.slots - s.attempts.executing) },
    prefetch: { ...s.prefetch },
    agents: Object.fromEntries(
      [...new Set([...Object.keys(s.governor.agents), ...Object.keys(s.owners?.agents ?? {})])].sort().map((name) => {
        const governed = s.governor.agents[name] ?? { queued: 0, reserved: 0, limit: 0, paused: false, models: {} };
        return [name, { ...governed, tasks: s.owners?.agents[name] ?? {}, flow: s.flow(name) ?? null }];
      }),
    ),
    instances: { live: s.liveInstances, tasks: s.owners?.instances ?? {} },
    rebuild: { ...s.rebuild },
    frozen: s.governor.frozen,
    supervisor: { cycles: s.cycles },
    freeze: s.control.frozen ? { reason: s.control.reason, killed: s.control.killed === true, since: s.control.since } : null,
    storeFailure: s.storeFailure && { ...s.storeFailure },
    retention: s.retention,
  };
}

/** `rt.stats()`: what the engine and its slot say now, as {@link collectStats} puts it together. */
export function runtimeStats(state: RuntimeStats['state'], e: Engine, slot: EngineSlot, options: ResolvedOptions): RuntimeStats {
  const closed = state === 'closed';
  return collectStats({
    state,
    counts: closed ? undefined : e.table.countsByState(),
    governor: e.governor.stats(),
    attempts: e.dispatcher.counts,
    slots: options.threads * options.slotsPerThread,
    prefetch: { ...e.dispatcher.prefetch, max: options.prefetch },
    liveInstances: e.router.liveCount,
    delayed: e.table.count('queued' satisfies TaskState) - e.governor.queued,
    rebuild: slot.rebuild,
    owners: closed ? undefined : e.table.countsByOwner(),
    flow: (agent) => e.flow.view(agent, options.clock.now()),
    control: e.controls.state,
    cycles: e.cycle.cycles,
    storeFailure: slot.recovery.failure,
    retention: e.retention.stats,
  });
}
