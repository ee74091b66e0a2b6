/**
 * Park: a running agent asks the host to wait, for its next input or for child tasks to settle.
 * The task becomes `waiting`, with what it waits for stored on it. An input already pending is
 * handed over instead, with its delivery recorded and no wait. Giving the attempt's slot back,
 * watching the joined tasks, and answering the agent call after the commit stay with the caller;
 * a join whose tasks have all settled already needs no step.
 */
import type { InboxRecord, TaskRecord } from '../store/records.js';
import { TroupeError } from '../errors.js';
import { emit, nextState } from './common.js';
import { nothing, notifyEffect, taskChange, type StepContext, type StepResult } from './types.js';

/** What park reads. */
export interface ParkView {
  /** The task, running its live attempt. */
  task: TaskRecord;
  /** The live attempt asking. */
  attemptId: string;
}

/** What the agent asked for. */
export type ParkInput =
  /** `ctx.waitForInput(prompt)`; `pending` is inbox item `delivered + 1` when one is pending (the caller reads it). */
  | { kind: 'input'; prompt?: unknown; pending?: InboxRecord }
  /** `ctx.join(ids)`, validated (children of the task, not all settled yet). */
  | { kind: 'join'; ids: readonly string[] };

/** Decides a wait. Throws ILLEGAL_TRANSITION (deciding nothing) unless the task is running. */
export function decidePark(view: ParkView, input: ParkInput, ctx: StepContext): StepResult {
  const { task, attemptId } = view;
  const state = nextState(task, 'WAIT');
  const { now } = ctx;
  const out = nothing();
  if (input.kind === 'input') {
    const delivered = task.delivered ?? 0;
    if (delivered < (task.inbox ?? 0)) {
      const item = input.pending;
      if (item === undefined || item.seq !== delivered + 1) throw new TroupeError('STORE_FAILED', `inbox item ${delivered + 1} of task ${task.id} is missing`);
      // An input is pending: hand it over now, recording the delivery first.
      out.changes.push({ kind: 'inbox', taskId: task.id, item: { ...item, deliveredAt: now, deliveredTo: attemptId } }, taskChange({ ...task, delivered: item.seq }));
      return out;
    }
    const { prompt } = input;
    const next: TaskRecord = { ...task, state, updatedAt: now, waitingFor: prompt === undefined ? { kind: 'input' } : { kind: 'input', prompt } };
    out.changes.push(taskChange(next));
    emit(out, ctx, 'task.waiting', task.id, attemptId, { for: 'input', prompt });
  } else {
    const ids = [...input.ids];
    out.changes.push(taskChange({ ...task, state, updatedAt: now, waitingFor: { kind: 'join', ids } }));
    emit(out, ctx, 'task.waiting', task.id, attemptId, { for: 'join', ids });
  }
  out.effects.push(notifyEffect(task.id));
  return out;
}
