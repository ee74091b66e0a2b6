/**
 * Cancel: a task with a live attempt (running, or waiting with its agent parked) has that attempt
 * stopped, and is cancelled by settle when the attempt ends; any other active task is cancelled at
 * once. Cascading to children, and answering for a task that is already cancelled, stay with the
 * caller (each child is its own cancel).
 */
import type { TaskRecord } from '../store/records.js';
import { armedTimerOf, disarm, emit, finish, nextState } from './common.js';
import { nothing, type StepContext, type StepResult } from './types.js';

/** What cancel reads. */
export interface CancelView {
  task: TaskRecord;
  /** The id of the task's live attempt, if one is live (starting, executing or parked). */
  liveAttemptId: string | undefined;
}

/** What the caller asked. */
export interface CancelInput {
  /** Why (`rt.cancel(id, reason)`, 'cancelled' by default; `parent cancelled: …` for a child). */
  reason: string;
}

/** Decides a cancel. Throws ILLEGAL_TRANSITION (deciding nothing) for a terminal task. */
export function decideCancel(view: CancelView, input: CancelInput, ctx: StepContext): StepResult {
  const { task, liveAttemptId } = view;
  const state = nextState(task, 'CANCEL');
  const { reason } = input;
  const out = nothing();
  if ((task.state === 'running' || task.state === 'waiting') && liveAttemptId !== undefined) {
    // Nothing changes yet: the attempt's `ctx.signal` aborts, and its end settles the task.
    out.effects.push({ kind: 'stop', attemptId: liveAttemptId, reason: 'cancelled', detail: reason });
    return out;
  }
  const { now } = ctx;
  const from = task.state;
  const timer = armedTimerOf(task);
  const next: TaskRecord = { ...task, state, updatedAt: now, reason };
  if (next.runAt !== undefined) delete next.runAt;
  if (next.waitingFor !== undefined) delete next.waitingFor;
  if (timer) disarm(out, timer);
  emit(out, ctx, 'task.cancelled', task.id, undefined, { run: task.runs, reason, from });
  finish(out, next, now);
  return out;
}
