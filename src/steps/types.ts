/**
 * The shape of a durable step: `decide(view, input, ctx) → { changes, events, effects }`, the shape
 * of XState's `transition`. A step reads the task as it is in memory (`view`) and never writes: it
 * returns the records it changes (new objects, never the view mutated), the events that describe the
 * change, and what must happen once the batch holding them is durable. The pipeline applies the
 * changes to memory when the step joins the turn's batch (so a later step in the same turn sees
 * them), commits the batch, and then runs the effects in order.
 *
 * Allowed task transitions come from the one table in machines/ (`nextTaskState`); a step that is
 * asked for a transition the table does not allow throws ILLEGAL_TRANSITION and changes nothing.
 */
import type { AttemptExit } from '../../machines/index.js';
import type { AbortReason } from '../../actors/wire.js';
import type { Key } from '../store/port.js';
import type { AgentFlowState, AttemptRecord, EventRecord, InboxRecord, RunRecord, ScheduleRecord, TaskRecord, TimerRecord } from '../store/records.js';

/** What every step gets besides its view and input. Time and randomness come in; nothing is read. */
export interface StepContext {
  /** Epoch ms. */
  readonly now: number;
  /** Allocates the next event seq. A fencing token is the seq of its `task.started` event. */
  seq(): number;
  /** Random source in [0, 1) for retry jitter. */
  random(): number;
  /** Allocates a new task id (a time-ordered ULID), as submit and a schedule's fire need. */
  id(): string;
}

/** A record a step writes (a put) or deletes (a remove). Applied to memory at once, durable with the batch. */
export type Change =
  | { kind: 'task'; task: TaskRecord }
  | { kind: 'attempt'; attempt: AttemptRecord }
  | { kind: 'run'; run: RunRecord }
  | { kind: 'timer'; timer: TimerRecord; armed: boolean }
  | { kind: 'idempotency'; key: string; taskId: string }
  | { kind: 'inbox'; taskId: string; item: InboxRecord }
  /** An input's idempotency key: `key` (`input:<taskId>:<idempotencyKey>`) maps to the inbox `seq` (stored as a string). */
  | { kind: 'input-key'; key: string; taskId: string; seq: number }
  | { kind: 'schedule'; schedule: ScheduleRecord }
  /** The supervisor's durable cycle counter (`control` key `supervisor`), the clock of the starvation ladder. */
  | { kind: 'cycle'; cycle: number }
  /** An agent's flow-control state (key `agent:<name>` of the control database). */
  | { kind: 'flow'; agent: string; state: AgentFlowState }
  /** A task submitted as a child of `parentId`: the children index. */
  | { kind: 'child'; parentId: string; childId: string }
  /** A record of a pruned task removed (see steps/prune.ts). */
  | { kind: 'remove'; db: PrunedDatabase; key: Key }
  /** A settled task's entries in the indexes of settled tasks removed (a retry, a prune): see StepWriter.unindexSettled. */
  | { kind: 'unindex'; task: TaskRecord };

/** The databases that hold a task's records, removed when it is pruned. */
export type PrunedDatabase = 'tasks' | 'runs' | 'attempts' | 'logs' | 'inbox' | 'idempotency' | 'children';

/** An event a step decides, stamped with its seq by the step (from `ctx.seq()`): the record the event log stores. */
export type NewEvent = EventRecord;

/**
 * What runs once the batch is durable, in order. Nothing outside the store learns of a change
 * before its commit: threads get starts, waiters and listeners get news, only after it.
 */
export type Effect =
  /**
   * Hand a durable start to its thread. The attempt's record travels with it: its start is
   * durable as the task's (state, attempt number, token, time); the attempt record itself is
   * written when the attempt ends.
   */
  | { kind: 'dispatch'; taskId: string; attemptId: string; attempt: AttemptRecord }
  /** The task reached a state `wait()` resolves on (terminal or needs_attention), or entered or left `waiting`: wake whoever watches it. */
  | { kind: 'notify'; taskId: string }
  /** Put a durable timer on the wheel (or take it off). */
  | { kind: 'arm'; timer: TimerRecord }
  | { kind: 'disarm'; timer: TimerRecord }
  /** Ask the live attempt to stop (cancel, timeout, kill); it settles when it ends. */
  | { kind: 'stop'; attemptId: string; reason: AbortReason; detail?: string }
  /**
   * Remove the workspace Troupe made for a settled task. The step has applied the keep policy (only
   * emitted when it says remove); `workspace` and `run` are as of the settle, since the task in memory
   * may have moved on (a retry) by the time the effect runs.
   */
  | { kind: 'clean-workspace'; taskId: string; workspace: string; run: number }
  /** Put a schedule's next tick on the scheduler's wheel at `due`, or take it off (`null`: paused). */
  | { kind: 'arm-schedule'; scheduleId: string; due: number | null };

/** What a step decides. */
export interface StepResult {
  changes: Change[];
  events: NewEvent[];
  effects: Effect[];
}

/** How an attempt ended, as the host observed it (see src/tasks/outcome.ts `AttemptOutcome`). */
export type { AttemptOutcome, Settlement } from '../tasks/outcome.js';

/** An attempt exit, re-exported for steps. */
export type { AttemptExit };

/**
 * Templates of the changes and effects a step makes for every task: each is made as a spread of its
 * template, which has every field, not as an object literal, which V8 pretenured (src/allocation.ts).
 */
const TASK_CHANGE: Extract<Change, { kind: 'task' }> = { kind: 'task', task: undefined as never };
const ATTEMPT_CHANGE: Extract<Change, { kind: 'attempt' }> = { kind: 'attempt', attempt: undefined as never };
const NOTIFY: Extract<Effect, { kind: 'notify' }> = { kind: 'notify', taskId: '' };
const DISPATCH: Extract<Effect, { kind: 'dispatch' }> = { kind: 'dispatch', taskId: '', attemptId: '', attempt: undefined as never };

/** A task record put (see the templates above). */
export function taskChange(task: TaskRecord): Change {
  return { ...TASK_CHANGE, task };
}

/** An attempt record put. */
export function attemptChange(attempt: AttemptRecord): Change {
  return { ...ATTEMPT_CHANGE, attempt };
}

/** Wake the task's waiters once the batch is durable. */
export function notifyEffect(taskId: string): Effect {
  return { ...NOTIFY, taskId };
}

/** Hand a started attempt to its thread once its start is durable. */
export function dispatchEffect(taskId: string, attemptId: string, attempt: AttemptRecord): Effect {
  return { ...DISPATCH, taskId, attemptId, attempt };
}

/** An empty result, for steps that decide nothing changes. */
export function nothing(): StepResult {
  return { changes: roomForTwo(), events: roomForTwo(), effects: roomForTwo() };
}

/**
 * An empty array with room for two elements. A step pushes one or two of each kind, and V8 gives
 * an empty literal sixteen slots on its first push: measured 600 bytes for the three arrays of a
 * step, 240 this way, on a path that runs three steps per task.
 */
function roomForTwo<T>(): T[] {
  const array: T[] = [undefined as T, undefined as T];
  array.pop();
  array.pop();
  return array;
}
