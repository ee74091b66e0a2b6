/**
 * What several steps share: the legality check against the one transition table, event stamping,
 * entering `queued`, starting a run, durable timers, and the bookkeeping of a task that settles
 * (written here once: settledAt, the run record, workspace, notify).
 *
 * Helpers that take a task change it in place: callers pass their own fresh copy, never the view.
 */
import { nextTaskState, type TaskEventType, type TaskState } from '../../machines/index.js';
import { TroupeError } from '../errors.js';
import type { AttemptRecord, EventType, RunRecord, TaskRecord, TimerRecord } from '../store/records.js';
import { notifyEffect, taskChange, type NewEvent, type StepContext, type StepResult } from './types.js';
import { plainConstructor } from '../allocation.js';
import type { EventData } from '../api/events.js';

/** The state `event` moves the task to, or ILLEGAL_TRANSITION (checked before any seq is taken). */
export function nextState(task: Pick<TaskRecord, 'id' | 'state'>, event: TaskEventType): TaskState {
  const next = nextTaskState(task.state, event);
  if (next === undefined) throw illegal(task, event);
  return next;
}

/** The ILLEGAL_TRANSITION error for `event` from the task's state. */
export function illegal(task: Pick<TaskRecord, 'id' | 'state'>, event: TaskEventType): TroupeError {
  return new TroupeError('ILLEGAL_TRANSITION', `task ${task.id} is ${task.state}; ${event} is not allowed from there`);
}

/** Stamps an event with the next seq and appends it. */
export function emit<K extends EventType>(out: StepResult, ctx: StepContext, type: K, taskId: string | undefined, attemptId: string | undefined, data: EventData<K>): NewEvent {
  const event = new StepEvent(ctx.seq(), ctx.now, type, data, taskId, attemptId);
  out.events.push(event);
  return event;
}

/**
 * An event as a step makes it: a plain object (listeners get it as it is), made by a constructor
 * rather than a literal, which V8 pretenured (see src/allocation.ts). Only the ids it has are set.
 */
const StepEvent = plainConstructor(function (this: NewEvent, seq: number, at: number, type: EventType, data: unknown, taskId: string | undefined, attemptId: string | undefined) {
  this.seq = seq;
  this.at = at;
  this.type = type;
  this.data = data as NewEvent['data'];
  if (taskId !== undefined) this.taskId = taskId;
  if (attemptId !== undefined) this.attemptId = attemptId;
});

/** Stamps a task entering `queued`: its FIFO order (the seq of the event that queued it), when, and a fresh ladder. */
export function markQueued(task: TaskRecord, order: number, at: number): void {
  task.queuedOrder = order;
  task.queuedAt = at;
  if (task.ladder !== undefined) delete task.ladder;
}

/** Emits `task.queued` and stamps the task with its seq. */
export function queue(out: StepResult, ctx: StepContext, task: TaskRecord, data: EventData<'task.queued'>): void {
  markQueued(task, emit(out, ctx, 'task.queued', task.id, undefined, data).seq, ctx.now);
}

/** Starts a new run: the next run number, why, when, and a fresh attempt budget. */
export function beginRun(task: TaskRecord, reason: TaskRecord['runReason'], now: number): void {
  task.runs++;
  task.runReason = reason;
  task.runCreatedAt = now;
  task.attempts = 0;
  task.attemptSeq = 0;
}

/**
 * waiting → queued as a new run (reason `resume`): what a task waits for is there and no attempt
 * of its runs (its process died, or shut down, or it was killed, while it waited). `task` may be
 * the view or the step's own copy.
 */
export function resumeAsNewRun(out: StepResult, task: TaskRecord, ctx: StepContext): StepResult {
  const { now } = ctx;
  const next: TaskRecord = { ...task, state: nextState(task, 'REQUEUE'), updatedAt: now };
  delete next.waitingFor;
  beginRun(next, 'resume', now);
  queue(out, ctx, next, { run: next.runs, reason: 'resume' });
  out.changes.push(taskChange(next));
  out.effects.push(notifyEffect(task.id));
  return out;
}

/** The id of an attempt. */
export function attemptIdOf(taskId: string, run: number, attempt: number): string {
  return `${taskId}:${run}:${attempt}`;
}

/** The id of a start, retry or wake timer of a task's current run. */
export function timerIdOf(task: Pick<TaskRecord, 'id' | 'runs'>, kind: TimerRecord['kind']): string {
  return `${kind}:${task.id}:${task.runs}`;
}

/** A durable timer of a task's current run, due at `due`. */
export function timerOf(task: Pick<TaskRecord, 'id' | 'runs'>, kind: TimerRecord['kind'], due: number): TimerRecord {
  return { id: timerIdOf(task, kind), due, kind, taskId: task.id, run: task.runs };
}

/**
 * The timer armed for a task as it stands: a sleeping task's wake, a queued task's delayed start
 * (no attempt yet in its run) or retry backoff (after one). Every step that sets `runAt` arms it, and
 * every step that consumes it clears `runAt`, so the record alone says which timer is armed.
 */
export function armedTimerOf(task: TaskRecord): TimerRecord | undefined {
  if (task.runAt === undefined) return undefined;
  if (task.state === 'sleeping') return timerOf(task, 'wake', task.runAt);
  if (task.state === 'queued') return timerOf(task, task.attemptSeq === 0 ? 'start' : 'retry', task.runAt);
  return undefined;
}

/** Stores a timer and puts it on the wheel after the commit. */
export function arm(out: StepResult, timer: TimerRecord): void {
  out.changes.push({ kind: 'timer', timer, armed: true });
  out.effects.push({ kind: 'arm', timer });
}

/** Removes a stored timer and takes it off the wheel after the commit. */
export function disarm(out: StepResult, timer: TimerRecord): void {
  out.changes.push({ kind: 'timer', timer, armed: false });
  out.effects.push({ kind: 'disarm', timer });
}

/**
 * The record of the run a task ended (settled, or went to sleep in). The task record holds its
 * current run until the next one begins; only then is the ended run written as a Run record, so a
 * task that runs once is one record, not two.
 */
export function endedRunOf(task: TaskRecord): RunRecord {
  const run: RunRecord = { taskId: task.id, run: task.runs, reason: task.runReason, createdAt: task.runCreatedAt, settledAt: task.settledAt ?? task.updatedAt, outcome: task.state, attempts: task.attempts, result: undefined, error: undefined };
  if (task.result !== undefined) run.result = task.result;
  if (task.error !== undefined) run.error = task.error;
  return run;
}

/**
 * The attempt record a terminal task holds (see TaskRecord.attemptExit), or undefined when it holds
 * none. `owner` is the runtime of the data dir: the one that ran it.
 */
export function endedAttemptOf(task: TaskRecord, owner: string): AttemptRecord | undefined {
  if (task.attemptExit === undefined) return undefined;
  const attempt: AttemptRecord = {
    taskId: task.id,
    run: task.runs,
    attempt: task.attemptSeq,
    attemptId: attemptIdOf(task.id, task.runs, task.attemptSeq),
    token: task.token,
    owner,
    startedAt: task.attemptStartedAt!,
    leaseExpiresAt: task.attemptLeaseUntil!,
    endedAt: task.settledAt ?? task.updatedAt,
    exit: task.attemptExit,
    error: undefined,
  };
  if (task.error !== undefined) attempt.error = task.error;
  return attempt;
}

/**
 * Terminal bookkeeping: the task (now in a terminal state) gets `settledAt` and is written (the
 * store drops it from its active index), and after the commit its workspace is removed (when its
 * keep policy says so) and its watchers are woken. (Its run lives on in the task record: see {@link endedRunOf}.)
 */
export function finish(out: StepResult, task: TaskRecord, now: number): void {
  task.settledAt = now;
  out.changes.push(taskChange(task));
  const keep = task.workspaceKeep;
  // 'on_failure' keeps the workspace of a task that did not end done; 'always' keeps every one.
  if (task.workspace !== undefined && (keep === 'never' || (keep === 'on_failure' && task.state === 'done'))) {
    out.effects.push({ kind: 'clean-workspace', taskId: task.id, workspace: task.workspace, run: task.runs });
  }
  out.effects.push(notifyEffect(task.id));
}
