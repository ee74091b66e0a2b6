/**
 * The event catalogue: every event type with its typed payload, in one place. Steps emit events
 * through it (steps/common.ts `emit`, the store's `event`), so a payload that strays from its type
 * does not compile; `rt.on('task.done', ev => ev.data.exit)` and `rt.events()` narrow by `type`.
 *
 * Declaration-only, like tasks.ts: no lmdb, Piscina or XState behind it.
 */
import type { AttemptExit, TaskState } from '../../machines/states.js';
import type { TaskError } from './tasks.js';

/** Every event type of the log (see DESIGN.md). */
export const EVENT_TYPES = [
  'task.queued',
  'task.started',
  'task.progress',
  'task.waiting',
  'task.input',
  'task.sleeping',
  'task.retrying',
  'task.done',
  'task.failed',
  'task.dropped',
  'task.cancelled',
  'task.starved',
  'task.needs_attention',
  'task.stale_result',
  'instance.degraded',
  'instance.target',
  'runtime.frozen',
  'runtime.unfrozen',
  'schedule.fired',
  'agent.paused',
  'agent.resumed',
  'store.quarantined',
  'store.failed',
  'store.recovered',
] as const satisfies ReadonlyArray<keyof EventPayloads>;

/** An event type. */
export type EventType = (typeof EVENT_TYPES)[number];

/** What every event about an attempt that ended says about it. */
export type AttemptEnded = {
  run: number;
  /** The attempt's number within its run. */
  attempt: number;
  exit: AttemptExit;
  /** How long the attempt ran. */
  attemptMs: number;
};

/** Why a run was queued again. */
export type QueuedReason = 'retry' | 'operator' | 'wake' | 'resume' | 'interrupted' | 'killed';

/** The payload (`data`) of each event type. */
export interface EventPayloads {
  /**
   * The task entered `queued`: submitted (with `agent`, `priority`, `runAt` for a delayed start),
   * retried by an operator or after a failure (`reason`, `from`), woken, resumed, or requeued after
   * a shutdown interrupted its attempt (with that attempt's end).
   */
  'task.queued': {
    run: number;
    agent?: string;
    priority?: number;
    runAt?: number;
    reason?: QueuedReason;
    /** What the task was before an operator's or a run's retry: its state, or its reason. */
    from?: string;
    attempt?: number;
    exit?: AttemptExit;
    attemptMs?: number;
  };
  /** An attempt started: `queuedMs` since the task entered `queued`. */
  'task.started': { run: number; attempt: number; queuedMs: number };
  /** The agent reported progress (0..1). */
  'task.progress': { value: number; message?: string };
  /**
   * The task waits for an input (`prompt`) or for tasks to join (`ids`); `detached` when its
   * attempt was interrupted while it waited (it keeps waiting with none live).
   */
  'task.waiting':
    | { for: 'input'; prompt?: unknown }
    | { for: 'join'; ids: string[] }
    | (AttemptEnded & { for?: 'input' | 'join'; reason?: string; detached: true });
  /** An input was stored (its inbox `seq`); `delivered` when a live attempt took it at once. */
  'task.input': { seq: number; idempotencyKey?: string; delivered: boolean };
  /** The agent asked to sleep; the next run starts at `wakeAt`. */
  'task.sleeping': AttemptEnded & { wakeAt: number };
  /** A retryable failure: the run goes on after `delayMs`. */
  'task.retrying': AttemptEnded & { delayMs: number; error?: TaskError };
  /** The task succeeded. */
  'task.done': AttemptEnded & { kind?: 'success' | 'fork' | 'fail' | 'sleep'; summary?: string };
  /** The task failed for good. */
  'task.failed': AttemptEnded & { error?: TaskError };
  /** The task was dropped: attempts ran out, or its instance stayed degraded while it was queued. */
  'task.dropped': { run: number; reason?: string; error?: TaskError; attempt?: number; exit?: AttemptExit; attemptMs?: number; instanceKey?: string };
  /** The task was cancelled, while running (with its attempt's end) or before (`from`: its state then). */
  'task.cancelled': { run: number; reason?: string; from?: TaskState; attempt?: number; exit?: AttemptExit; attemptMs?: number };
  /** The task sat queued past the starvation threshold (`cycles`: supervisor cycles so far). */
  'task.starved': { run: number; agent: string; queuedMs: number; cycles: number };
  /** The task needs an operator: no agent covers what it requires, or it starved for too long. */
  'task.needs_attention':
    | { run: number; reason: 'unmatched'; agent: string; requires?: string[] }
    | { run: number; reason: 'starved'; agent: string; queuedMs: number; cycles: number };
  /** A fenced attempt (no longer the task's current one) tried to write its `kind` of message. */
  'task.stale_result': { kind: 'result' | 'log' | 'progress' | (string & {}) };
  /** An instance failed too often and stopped dispatching. */
  'instance.degraded': { instanceKey: string; consecutiveFailures: number; recentFailures: string[] };
  /** An instance's dispatch target changed (null: no per-instance limit). */
  'instance.target': { instanceKey: string; target: number | null };
  'runtime.frozen': { reason?: string; killed: boolean };
  'runtime.unfrozen': Record<string, never>;
  /**
   * A schedule's tick: the task it submitted (the event's `taskId`), or `skipped` and why
   * (`error` for a tick whose task could not be submitted).
   */
  'schedule.fired': { scheduleId: string; tick: number; tickIso: string; skipped?: 'overlap' | 'catch_up' | 'error'; error?: string };
  /** Fast failures paused the agent until `until`. */
  'agent.paused': { agent: string; until: number; reason: 'fast_failures' };
  'agent.resumed': { agent: string; by: 'clock' | 'operator' };
  /** A record that could not be read was moved aside. */
  'store.quarantined': { db: string; key: string; problem: string };
  /** A commit failed and the store stopped (see the README's "A full disk"). */
  'store.failed': { message: string };
  /** The runtime opened its store again and carries on. */
  'store.recovered': { since: number; downMs: number; retries: number };
}

/** The payload of events of type `K`. */
export type EventData<K extends EventType> = EventPayloads[K];

/** An event of type `K` (a union over the types, narrowed by `type`), with its cursor. */
export type RuntimeEvent<K extends EventType = EventType> = {
  [T in K]: {
    seq: number;
    /** When it happened (epoch ms). */
    at: number;
    type: T;
    taskId?: string;
    attemptId?: string;
    data: EventPayloads[T];
    /** Opaque cursor that sorts in log order; pass it as `after` to resume. */
    cursor: string;
  };
}[K];

/** `rt.on` listeners by event type; `'*'` receives every event. */
export type RuntimeEventMap = {
  [K in EventType | '*']: (event: K extends EventType ? RuntimeEvent<K> : RuntimeEvent) => void;
};

/** Options of `rt.events()`. */
export interface EventStreamOptions<K extends EventType = EventType> {
  /** Only events after this one (exclusive): its `cursor`, or its numeric `seq`. Omitted: from the start of the log. */
  after?: string | number | undefined;
  taskId?: string | undefined;
  /** Only events of these types. */
  types?: readonly K[] | undefined;
  /** Ends the iteration when aborted. */
  signal?: AbortSignal | undefined;
}
