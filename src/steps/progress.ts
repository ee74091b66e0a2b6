/**
 * Progress: a running attempt reported how far it is. The task's record carries its latest
 * progress, and a `task.progress` event says so, stamped with the time the agent reported it.
 * Fencing (only the live attempt with the current token reports) stays with the caller.
 */
import type { TaskRecord } from '../store/records.js';
import { nothing, taskChange, type StepContext, type StepResult } from './types.js';

/** What progress reads. */
export interface ProgressView {
  /** The task of the reporting attempt. */
  task: TaskRecord;
}

/** What the attempt reported. */
export interface ProgressInput {
  attemptId: string;
  value: number;
  message?: string;
  /** When the agent reported it (epoch ms, its thread's clock). */
  at: number;
}

/** Decides a progress report: a new version of the task with it, and its event. Changes no state. */
export function decideProgress(view: ProgressView, input: ProgressInput, ctx: StepContext): StepResult {
  const { task } = view;
  const { attemptId, value, message, at } = input;
  const out = nothing();
  const progress = message === undefined ? { value, at } : { value, message, at };
  out.changes.push(taskChange({ ...task, progress }));
  out.events.push({ seq: ctx.seq(), at, type: 'task.progress', taskId: task.id, attemptId, data: { value, message } });
  return out;
}
