/**
 * Drop: the supervisor gives up on a queued task that sat on a degraded instance for longer than
 * `degradedDropMs` (the caller measures that; it reads the router). The task is dead-lettered as
 * `dropped` with reason `instance_degraded`.
 */
import type { TaskRecord } from '../store/records.js';
import { TroupeError } from '../errors.js';
import { emit, finish, nextState } from './common.js';
import { nothing, type StepContext, type StepResult } from './types.js';

/** What drop reads. */
export interface DropView {
  /** A queued task (with no live attempt: a running one is dropped by settle). */
  task: TaskRecord;
}

/** What the caller decided. */
export interface DropInput {
  /** The configured `degradedDropMs` the task waited past (named in the error). */
  degradedDropMs: number;
}

/** Decides a degraded drop. Throws ILLEGAL_TRANSITION (deciding nothing) unless the task is queued. */
export function decideDrop(view: DropView, input: DropInput, ctx: StepContext): StepResult {
  const { task } = view;
  if (task.state !== 'queued') throw new TroupeError('ILLEGAL_TRANSITION', `task ${task.id} is ${task.state}; only a queued task is dropped from a degraded instance`);
  const { now } = ctx;
  const error = {
    code: 'INSTANCE_DEGRADED',
    message: `instance ${task.instanceKey} stayed degraded for ${input.degradedDropMs} ms while the task was queued`,
    retryable: false,
    fault: 'infrastructure' as const,
  };
  const next: TaskRecord = { ...task, state: nextState(task, 'DROP'), updatedAt: now, reason: 'instance_degraded', error };
  const out = nothing();
  emit(out, ctx, 'task.dropped', task.id, undefined, { run: task.runs, reason: next.reason, error, instanceKey: task.instanceKey });
  finish(out, next, now);
  return out;
}
