/**
 * Retry (`rt.retry`): a failed, dropped or cancelled task starts a new run; a task that needs
 * attention is requeued in the same run (an operator's answer to `starved` or `unmatched`). Routing
 * an unmatched task reads the registry and the governor, so the caller does it and passes the
 * result; waiting for a settle still in flight to be durable also stays with the caller.
 */
import type { TaskRecord } from '../store/records.js';
import { beginRun, endedAttemptOf, endedRunOf, nextState, queue } from './common.js';
import { attemptChange, nothing, taskChange, type StepContext, type StepResult } from './types.js';

/** What retry reads. */
export interface RetryView {
  /** The task as stored (terminal) or in memory (needs_attention). */
  task: TaskRecord;
  /** The data dir's runtime: the owner of the final attempt a terminal task holds. */
  runtimeId: string;
}

/** The agent an unmatched task was routed to, with that agent's policy applied. */
export type Routed = Pick<TaskRecord, 'agent' | 'instanceKey' | 'retry' | 'timeoutMs'>;

/** What the caller decided. */
export interface RetryInput {
  /** For a task that needs attention as `unmatched`: where it routes now (the caller throws UNKNOWN_AGENT when nowhere). */
  routed?: Routed;
}

/** Fields a new run starts without. */
const CLEARED = ['error', 'result', 'output', 'reason', 'settledAt', 'runAt', 'progress', 'followUp', 'startedAt', 'waitingFor', 'attemptStartedAt', 'attemptLeaseUntil', 'attemptExit'] as const;

/** Decides a retry. Throws ILLEGAL_TRANSITION (deciding nothing) unless the task is failed, dropped, cancelled or needs attention. */
export function decideRetry(view: RetryView, input: RetryInput, ctx: StepContext): StepResult {
  const { task } = view;
  const { now } = ctx;
  const out = nothing();
  if (task.state === 'needs_attention') {
    const state = nextState(task, 'REQUEUE');
    const next: TaskRecord = { ...task, state, updatedAt: now };
    const from = task.reason;
    delete next.reason;
    const { routed } = input;
    if (routed !== undefined) {
      next.agent = routed.agent;
      next.instanceKey = routed.instanceKey;
      next.retry = routed.retry;
      next.timeoutMs = routed.timeoutMs;
      delete next.unrouted;
    }
    queue(out, ctx, next, { run: next.runs, reason: 'operator', from, agent: next.agent });
    out.changes.push(taskChange(next));
    return out;
  }
  const state = nextState(task, 'RETRY');
  const from = task.state;
  const next: TaskRecord = { ...task, state, updatedAt: now };
  // The run that ended, and its final attempt, are written now that the next run begins (the task
  // record held them).
  out.changes.push({ kind: 'run', run: endedRunOf(task) });
  const attempt = endedAttemptOf(task, view.runtimeId);
  if (attempt) out.changes.push(attemptChange(attempt));
  beginRun(next, 'retry', now);
  for (const field of CLEARED) delete next[field];
  queue(out, ctx, next, { run: next.runs, reason: 'retry', from });
  out.changes.push(taskChange(next));
  // Not settled any more: its entries in the indexes of settled tasks go (settling again writes new ones).
  out.changes.push({ kind: 'unindex', task });
  return out;
}
