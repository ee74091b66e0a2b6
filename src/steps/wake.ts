/**
 * Wake: a durable timer fell due. A retry backoff or delayed start ends (the task, still queued in
 * the same run, becomes runnable); a sleeping task wakes into a new run. A timer of a run that is
 * over, or for a task no longer in the state it was armed for, only leaves the store.
 */
import type { TaskRecord, TimerRecord } from '../store/records.js';
import { beginRun, endedRunOf, nextState, queue } from './common.js';
import { nothing, taskChange, type StepContext, type StepResult } from './types.js';

/** What wake reads. */
export interface WakeView {
  /** The timer's task in memory, if it is still active. */
  task: TaskRecord | undefined;
}

/** What fired. */
export interface WakeInput {
  /** The timer, already off the wheel. */
  timer: TimerRecord;
}

/** Decides what a fired timer does. Never throws: a stale timer is only removed. */
export function decideWake(view: WakeView, input: WakeInput, ctx: StepContext): StepResult {
  const { task } = view;
  const { timer } = input;
  const out = nothing();
  out.changes.push({ kind: 'timer', timer, armed: false });
  if (task === undefined || task.runs !== timer.run || task.state !== (timer.kind === 'wake' ? 'sleeping' : 'queued')) return out;
  const { now } = ctx;
  if (timer.kind !== 'wake') {
    // Still queued in the same run, now without a `runAt`: runnable.
    const next: TaskRecord = { ...task };
    delete next.runAt;
    out.changes.push(taskChange(next));
    return out;
  }
  // The sleep's result belongs to the run that slept (recorded below), not to the next one.
  const next: TaskRecord = { ...task, state: nextState(task, 'WAKE'), updatedAt: now, result: undefined, error: undefined };
  delete next.runAt;
  // The run that slept is written now that the next one begins (the task record held it).
  out.changes.push({ kind: 'run', run: endedRunOf(task) });
  beginRun(next, 'wake', now);
  queue(out, ctx, next, { run: next.runs, reason: 'wake' });
  out.changes.push(taskChange(next));
  return out;
}
