/**
 * Resume: what a waiting task waits for is there, or an input arrives for any active task.
 *
 * - `input`: the input is stored in the task's inbox. An agent parked on an input gets it at once
 *   (the task runs again); a task waiting for input with no live attempt (its process died or shut
 *   down while it waited) resumes with a new run, whose agent sees the pending inputs. Otherwise
 *   it waits in the inbox for the next `waitForInput`.
 * - `ready`: the joined tasks have all settled (or, at open, a waiting task finds what it waits for
 *   there). A parked agent runs again; with no live attempt the task resumes with a new run.
 * - `unwait`: the parked agent stopped waiting on its own (its input timeout): it runs again.
 *
 * Unparking the attempt (its slot), the join watches, and answering the agent's call after the
 * commit stay with the caller.
 */
import { isTerminal } from '../../machines/index.js';
import { TroupeError } from '../errors.js';
import type { InboxRecord, TaskRecord } from '../store/records.js';
import { emit, nextState, resumeAsNewRun } from './common.js';
import { nothing, notifyEffect, taskChange, type StepContext, type StepResult } from './types.js';

/** What resume reads. */
export interface ResumeView {
  task: TaskRecord;
  /** The task's live attempt, if any: whether its agent is parked on the host, and whether it is being stopped. */
  live: { attemptId: string; parked: boolean; stopping: boolean } | undefined;
}

/** What happened. */
export type ResumeInput = { kind: 'input'; message: unknown; idempotencyKey?: string } | { kind: 'ready' } | { kind: 'unwait' };

/**
 * Decides a resume. Throws ILLEGAL_TRANSITION (deciding nothing) for an input to a terminal task,
 * and for `ready` or `unwait` on a task that is not waiting.
 */
export function decideResume(view: ResumeView, input: ResumeInput, ctx: StepContext): StepResult {
  if (input.kind === 'input') return arrive(view, input.message, input.idempotencyKey, ctx);
  const { task, live } = view;
  if (task.state !== 'waiting') throw new TroupeError('ILLEGAL_TRANSITION', `task ${task.id} is ${task.state}; only a waiting task resumes`);
  if (live === undefined) {
    if (input.kind === 'unwait') return nothing();
    return resumeAsNewRun(nothing(), task, ctx);
  }
  // A live attempt that is not parked (it is ending) resumes nothing: its end settles the task.
  if (!live.parked) return nothing();
  const out = nothing();
  out.changes.push(taskChange(running(task, ctx.now)));
  out.effects.push(notifyEffect(task.id));
  return out;
}

function arrive(view: ResumeView, message: unknown, idempotencyKey: string | undefined, ctx: StepContext): StepResult {
  const { task, live } = view;
  if (isTerminal(task.state)) throw new TroupeError('ILLEGAL_TRANSITION', `task ${task.id} is ${task.state}; it takes no more input`);
  const { now } = ctx;
  const seq = (task.inbox ?? 0) + 1;
  const item: InboxRecord = idempotencyKey === undefined ? { seq, message, at: now } : { seq, message, at: now, idempotencyKey };
  const waitsForInput = task.state === 'waiting' && task.waitingFor?.kind === 'input';
  // Never to an attempt that is stopping: its wait has been (or is being) aborted.
  const deliverNow = waitsForInput && live !== undefined && live.parked && !live.stopping && (task.delivered ?? 0) + 1 === seq;
  // No live attempt waits for it: the input itself resumes the task with a new run.
  const resumeRun = waitsForInput && live === undefined;
  const out = nothing();
  let next: TaskRecord;
  if (deliverNow) {
    next = running(task, now);
    next.delivered = seq;
    out.changes.push({ kind: 'inbox', taskId: task.id, item: { ...item, deliveredAt: now, deliveredTo: live.attemptId } });
  } else {
    next = { ...task };
    out.changes.push({ kind: 'inbox', taskId: task.id, item });
  }
  next.inbox = seq;
  if (idempotencyKey !== undefined) out.changes.push({ kind: 'input-key', key: `input:${task.id}:${idempotencyKey}`, taskId: task.id, seq });
  emit(out, ctx, 'task.input', task.id, undefined, { seq, idempotencyKey, delivered: deliverNow });
  if (resumeRun) return resumeAsNewRun(out, next, ctx);
  out.changes.push(taskChange(next));
  if (deliverNow) out.effects.push(notifyEffect(task.id));
  return out;
}

/** waiting → running with its live attempt. */
function running(task: TaskRecord, now: number): TaskRecord {
  const next: TaskRecord = { ...task, state: nextState(task, 'RESUME'), updatedAt: now };
  delete next.waitingFor;
  return next;
}

