import { assertEvent, assign, emit, setup } from 'xstate';

export type { AttemptExit } from './states.js';
import type { AttemptExit } from './states.js';

/**
 * Exits that are the agent's fault and so count as failed attempts toward degradation. Crashes,
 * expired leases, cancellations and interruptions are the infrastructure's or the user's doing and
 * must not degrade an instance.
 */
export const AGENT_FAULT_EXITS: ReadonlySet<AttemptExit> = new Set<AttemptExit>([
  'fail',
  'error',
  'timeout',
]);

/** Where a live attempt stands; ended attempts leave the counts entirely. */
export type AttemptBucket = 'pending' | 'running' | 'stopping';

/** How many failed attempt ids an instance remembers for the `degraded` report. */
export const RECENT_FAILURES_LIMIT = 10;

/** What the router passes when it creates (or rehydrates) an instance actor. */
export interface InstanceInput {
  /** The instance key all its tasks share. */
  key: string;
  /** The agent that runs this instance's attempts. */
  agent: string;
  /** The lane the instance dispatches in. */
  lane: string;
  /** The workspace directory the attempts share, if any. */
  workspace?: string;
  /** Consecutive failed attempts that degrade the instance; 0 means never degrade. */
  failedAttemptThreshold: number;
  /** Most attempts this instance may hold at once; null or absent means no per-instance limit. */
  target?: number | null;
}

/** The instance actor's context: live attempt counts plus the failure streak. */
export interface InstanceContext {
  key: string;
  agent: string;
  lane: string;
  workspace?: string;
  pending: number;
  running: number;
  stopping: number;
  /** null = no per-instance limit. */
  target: number | null;
  consecutiveFailures: number;
  /** Last {@link RECENT_FAILURES_LIMIT} failed attempt ids, newest last. */
  recentFailures: string[];
  failedAttemptThreshold: number;
  /** `at` of the last attempt event that changed anything; 0 until the first. */
  lastActivityAt: number;
  /** When the instance last entered `degraded`; absent while active. */
  degradedAt?: number;
}

/** An attempt lifecycle change, routed to the instance that owns the attempt. */
export interface AttemptEvent {
  type: 'attempt';
  attemptId: string;
  /** The run it belongs to (`taskId:run`), for whoever reads the event; the machine does not need it. */
  runId?: string;
  change: 'pending' | 'running' | 'stopping' | 'ended' | 'released';
  /**
   * The bucket the attempt leaves (absent for 'pending'). The host is the single writer of an
   * attempt's lifecycle, so counts are enough; keeping a per-attempt map in context cost ~2.5x per
   * event on the dispatch hot path.
   */
  from?: AttemptBucket;
  /** How the attempt ended; only meaningful with `change: 'ended'`. */
  status?: AttemptExit;
  at: number;
}

/** One attempt change of a batch: an {@link AttemptEvent} without its type and time. */
export type AttemptChange = Omit<AttemptEvent, 'type' | 'at'>;

/**
 * The attempt changes of one turn, in order: the router sends each instance one of these per turn
 * instead of one event per change.
 */
export interface AttemptsEvent {
  type: 'attempts';
  changes: AttemptChange[];
  at: number;
}

/** Everything the instance actor accepts. */
export type InstanceEvent =
  | AttemptEvent
  | AttemptsEvent
  /** Sets the dispatch target; the host has already validated it. */
  | { type: 'target'; target: number | null; at: number }
  /** Operator reset: degraded → active and the streak back to 0. */
  | { type: 'reset'; at: number }
  /** After a process restart no attempt survives, so forget every transient one. */
  | { type: 'recover'; at: number };

/** Emitted once when an instance crosses its failure threshold; observe with `actor.on('degraded')`. */
export type InstanceEmitted = {
  type: 'degraded';
  key: string;
  consecutiveFailures: number;
  recentFailures: string[];
  at: number;
};

// Which bucket each change may move an attempt out of. Attempts never move backwards, so a late
// 'pending' cannot undo a 'running', and a count never goes below zero.
const ALLOWED_FROM: Readonly<Record<AttemptEvent['change'], ReadonlyArray<AttemptBucket | undefined>>> = {
  pending: [undefined],
  running: [undefined, 'pending'],
  stopping: ['pending', 'running'],
  // From none: an attempt that parked (released its place while it waits on the host) and ends
  // there; nothing is counted down, but its exit still counts in the failure streak.
  ended: [undefined, 'pending', 'running', 'stopping'],
  released: ['pending', 'running', 'stopping'],
};

/**
 * The context changes of an attempt event, or undefined when the event changes nothing (a move
 * backwards, or leaving an empty bucket). Kept as one pure function so the guard that decides on
 * degradation sees exactly the update the action will apply.
 */
function applyAttempt(context: InstanceContext, event: AttemptEvent): Partial<InstanceContext> | undefined {
  if (!attemptApplies(context, event)) return undefined;
  const { from, change } = event;
  const patch: Partial<InstanceContext> = { lastActivityAt: event.at };
  if (from !== undefined) patch[from] = context[from] - 1;
  if (change === 'pending' || change === 'running' || change === 'stopping') patch[change] = (patch[change] ?? context[change]) + 1;
  if (change === 'ended' && event.status !== undefined) {
    if (event.status === 'success' || event.status === 'fork') {
      if (context.consecutiveFailures !== 0) patch.consecutiveFailures = 0;
    } else if (AGENT_FAULT_EXITS.has(event.status)) {
      patch.consecutiveFailures = context.consecutiveFailures + 1;
      patch.recentFailures = [...context.recentFailures, event.attemptId].slice(-RECENT_FAILURES_LIMIT);
    }
  }
  return patch;
}

/** Whether an attempt event changes anything; allocation-free, since it runs on every dispatch. */
function attemptApplies(context: InstanceContext, event: AttemptEvent): boolean {
  const { from } = event;
  return attemptMoves(from, event.change) && (from === undefined || context[from] > 0);
}

/**
 * Whether an attempt in bucket `from` (undefined: in none) moves on `change`. The host asks before
 * it tells a change, so that the bucket it keeps for the attempt is always the one the instance
 * counts it in: a move the machine would ignore (a late 'running' once stopping) is not told.
 */
export function attemptMoves(from: AttemptBucket | undefined, change: AttemptEvent['change']): boolean {
  return ALLOWED_FROM[change].includes(from);
}

/**
 * The context changes of a batch of attempt changes, folded in order by the same rule as
 * {@link applyAttempt}, and whether the streak reached the threshold on the way. One working copy
 * of the counters, not one context per change: a turn can carry hundreds of changes.
 */
function applyAttempts(context: InstanceContext, event: AttemptsEvent): { patch: Partial<InstanceContext>; crossed: boolean; atCrossing?: Pick<InstanceContext, 'consecutiveFailures' | 'recentFailures'> } {
  const acc = { pending: context.pending, running: context.running, stopping: context.stopping, consecutiveFailures: context.consecutiveFailures };
  let recentFailures = context.recentFailures;
  let changed = false;
  let crossed = false;
  /** The streak as it reached the threshold: what `degraded` reports, whatever the rest of the batch does to it. */
  let atCrossing: Pick<InstanceContext, 'consecutiveFailures' | 'recentFailures'> | undefined;
  const threshold = context.failedAttemptThreshold;
  for (const c of event.changes) {
    const { from, change } = c;
    if (!ALLOWED_FROM[change].includes(from) || (from !== undefined && acc[from] <= 0)) continue;
    changed = true;
    if (from !== undefined) acc[from]--;
    if (change === 'pending' || change === 'running' || change === 'stopping') acc[change]++;
    if (change !== 'ended' || c.status === undefined) continue;
    if (c.status === 'success' || c.status === 'fork') acc.consecutiveFailures = 0;
    else if (AGENT_FAULT_EXITS.has(c.status)) {
      acc.consecutiveFailures++;
      recentFailures = [...recentFailures, c.attemptId].slice(-RECENT_FAILURES_LIMIT);
      if (threshold > 0 && acc.consecutiveFailures >= threshold && !crossed) {
        crossed = true;
        atCrossing = { consecutiveFailures: acc.consecutiveFailures, recentFailures };
      }
    }
  }
  if (!changed) return { patch: {}, crossed };
  const patch: Partial<InstanceContext> = { ...acc, lastActivityAt: event.at };
  if (recentFailures !== context.recentFailures) patch.recentFailures = recentFailures;
  return atCrossing ? { patch, crossed, atCrossing } : { patch, crossed };
}

/** Whether a batch holds an agent-fault ending at all (the cheap test before folding it for the guard). */
function hasFault(event: AttemptsEvent): boolean {
  for (const c of event.changes) if (c.change === 'ended' && c.status !== undefined && AGENT_FAULT_EXITS.has(c.status)) return true;
  return false;
}

function crossesThreshold(context: InstanceContext, event: AttemptEvent): boolean {
  // Cheap checks first: this guard runs for every attempt event of an active instance.
  if (event.change !== 'ended' || context.failedAttemptThreshold <= 0) return false;
  if (event.status === undefined || !AGENT_FAULT_EXITS.has(event.status)) return false;
  const patch = applyAttempt(context, event);
  return patch?.consecutiveFailures !== undefined && patch.consecutiveFailures >= context.failedAttemptThreshold;
}

/**
 * An execution instance: the actor that all tasks with the same instance key share. It tracks live
 * attempts and the dispatch target, and degrades after a streak of agent-fault failures so the
 * governor stops feeding it. Anything that must outlive the process is in context, never in a
 * delayed transition, because XState timers do not survive a restore.
 */
export const instanceMachine = setup({
  types: {
    context: {} as InstanceContext,
    events: {} as InstanceEvent,
    input: {} as InstanceInput,
    emitted: {} as InstanceEmitted,
  },
  guards: {
    attemptApplies: ({ context, event }) => {
      assertEvent(event, 'attempt');
      return attemptApplies(context, event);
    },
    attemptDegrades: ({ context, event }) => {
      assertEvent(event, 'attempt');
      return crossesThreshold(context, event);
    },
    attemptsDegrade: ({ context, event }) => {
      assertEvent(event, 'attempts');
      return context.failedAttemptThreshold > 0 && hasFault(event) && applyAttempts(context, event).crossed;
    },
  },
  actions: {
    applyAttempt: assign(({ context, event }) => {
      assertEvent(event, 'attempt');
      return applyAttempt(context, event) ?? {};
    }),
    applyAttempts: assign(({ context, event }) => {
      assertEvent(event, 'attempts');
      return applyAttempts(context, event).patch;
    }),
    markDegraded: assign(({ event }) => ({ degradedAt: event.at })),
    emitDegraded: emit(({ context, event }) => ({
      type: 'degraded' as const,
      key: context.key,
      consecutiveFailures: context.consecutiveFailures,
      recentFailures: [...context.recentFailures],
      at: event.at,
    })),
    // Before the batch is applied: a success later in the same batch must not make the streak
    // reported 0 (one event at a time, it degrades at the crossing and reports the streak there).
    emitDegradedBatch: emit(({ context, event }) => {
      assertEvent(event, 'attempts');
      const at = applyAttempts(context, event).atCrossing ?? context;
      return { type: 'degraded' as const, key: context.key, consecutiveFailures: at.consecutiveFailures, recentFailures: [...at.recentFailures], at: event.at };
    }),
    setTarget: assign(({ event }) => {
      assertEvent(event, 'target');
      return { target: event.target };
    }),
    resetStreak: assign({ consecutiveFailures: 0, degradedAt: undefined }),
    forgetAttempts: assign({ pending: 0, running: 0, stopping: 0 }),
  },
}).createMachine({
  id: 'instance',
  initial: 'active',
  context: ({ input }) => ({
    key: input.key,
    agent: input.agent,
    lane: input.lane,
    ...(input.workspace !== undefined ? { workspace: input.workspace } : {}),
    pending: 0,
    running: 0,
    stopping: 0,
    target: input.target ?? null,
    consecutiveFailures: 0,
    recentFailures: [],
    failedAttemptThreshold: input.failedAttemptThreshold,
    lastActivityAt: 0,
  }),
  // Shared by both states: running work still ends while degraded, and the target is settable
  // either way. A state's own handler wins when its guard passes, otherwise these apply.
  on: {
    attempt: { guard: 'attemptApplies', actions: 'applyAttempt' },
    attempts: { actions: 'applyAttempts' },
    target: { actions: 'setTarget' },
    recover: { actions: 'forgetAttempts' },
  },
  states: {
    active: {
      on: {
        attempt: {
          guard: 'attemptDegrades',
          target: 'degraded',
          // Order matters: the emitted report must carry the streak after this attempt.
          actions: ['applyAttempt', 'markDegraded', 'emitDegraded'],
        },
        attempts: {
          guard: 'attemptsDegrade',
          target: 'degraded',
          actions: ['emitDegradedBatch', 'applyAttempts', 'markDegraded'],
        },
        // Lets an operator clear a streak that has not yet degraded the instance.
        reset: { actions: 'resetStreak' },
      },
    },
    degraded: {
      on: {
        reset: { target: 'active', actions: 'resetStreak' },
      },
    },
  },
});

/** A snapshot of an instance actor, live or persisted. */
export interface InstanceSnapshotLike {
  readonly value: unknown;
  readonly context: InstanceContext;
}

/** What the router and CLI report for an instance. */
export type InstanceStatus = 'active' | 'degraded' | 'idle';

/** `idle` is active with no pending, running or stopping attempts: safe to passivate. */
export function instanceStatus(snapshot: InstanceSnapshotLike, counts: Pick<InstanceContext, 'pending' | 'running' | 'stopping'> = snapshot.context): InstanceStatus {
  if (snapshot.value === 'degraded') return 'degraded';
  const { pending, running, stopping } = counts;
  return pending + running + stopping === 0 ? 'idle' : 'active';
}

/**
 * A stored instance snapshot with this runtime's `failedAttemptThreshold`: the option is the
 * runtime's, not the instance's, so a restart with another value applies it to the instances seen
 * before as to new ones (the changed snapshot is written back with the instance's next change).
 */
export function withFailedAttemptThreshold(snapshot: unknown, threshold: number): unknown {
  const context = (snapshot as { context?: Partial<InstanceContext> }).context;
  if (!context || context.failedAttemptThreshold === threshold) return snapshot;
  return { ...(snapshot as object), context: { ...context, failedAttemptThreshold: threshold } };
}

/** Whether the governor may start one more attempt here: not degraded and under the target. */
export function instanceAdmits(snapshot: InstanceSnapshotLike): boolean {
  if (snapshot.value === 'degraded') return false;
  const { pending, running, stopping, target } = snapshot.context;
  return target === null || pending + running + stopping < target;
}

/**
 * Changes only when something that must survive a restart changes: state value, target,
 * consecutiveFailures. Attempt counts are left out because `recover` wipes them on restart anyway,
 * so the host can skip a snapshot write for every pending/running change.
 */
export function durableFingerprint(snapshot: InstanceSnapshotLike): string {
  const { target, consecutiveFailures } = snapshot.context;
  return `${String(snapshot.value)}|${target ?? ''}|${consecutiveFailures}`;
}
