/**
 * `rt.stats()`: one plain snapshot of counts, gathered from the parts that own them.
 */
import type { TaskState } from '../machines/index.js';
import type { GovernorStats } from './governor/governor.js';

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
  /** Per agent: queued and reserved attempts and its concurrency limit (null = none). */
  agents: GovernorStats['agents'];
  /** Instance actors in memory. */
  instances: { live: number };
  /** What the last open found: whether the previous shutdown was clean, and what it rebuilt. */
  rebuild: RebuildReport;
  frozen: boolean;
}

/** What the rebuild on open did. */
export interface RebuildReport {
  previousShutdownClean: boolean;
  /** Non-terminal tasks loaded. */
  active: number;
  /** Attempts found running from a process that died, ended as `crashed`. */
  crashed: number;
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
    agents: s.governor.agents,
    instances: { live: s.liveInstances },
    rebuild: { ...s.rebuild },
    frozen: s.governor.frozen,
  };
}
