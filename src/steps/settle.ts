/**
 * Settle: an attempt ended, and the caller decided what that means with `decideSettlement`
 * (src/tasks/outcome.ts; it needs the exit first to update flow control). This step writes it: the
 * task's new state, the ended attempt, the one settling event, the run record when the run is over,
 * a retry or wake timer, and the agent's flow state. A result from an attempt that is no longer
 * current is ignored and recorded as `task.stale_result`; settling an ended attempt again is a no-op.
 */
import { isTerminal, nextTaskState } from '../../machines/index.js';
import type { AgentFlowState, AttemptRecord, TaskRecord, TimerRecord } from '../store/records.js';
import { resultOf, type Settlement } from '../tasks/outcome.js';
import type { EventData } from '../api/events.js';
import { arm, attemptIdOf, emit, finish, illegal, markQueued, nextState, queue, resumeAsNewRun, timerOf } from './common.js';
import { attemptChange, nothing, notifyEffect, taskChange, type StepContext, type StepResult } from './types.js';

/** What settle reads. */
export interface SettleView {
  /** The attempt's task in memory (undefined: no longer active, so the result is stale). */
  task: TaskRecord | undefined;
  /** The attempt that ended, as recorded (see {@link lostAttemptOf} when a rebuild finds none). */
  attempt: AttemptRecord;
}

/** The agent's flow state after this attempt ended, as `FlowControl.ended` returns it. */
export interface FlowEnded {
  state: AgentFlowState;
  /** Set when this failure paused the agent. */
  pausedUntil?: number;
}

/** What the caller decided. */
export interface SettleInput {
  /** From `decideSettlement(task, task.attempts, outcome, stop, random)`. */
  settlement: Settlement;
  flow?: FlowEnded;
}

/** Decides a settlement. Throws ILLEGAL_TRANSITION (deciding nothing) when the task's state does not allow it. */
export function decideSettle(view: SettleView, input: SettleInput, ctx: StepContext): StepResult {
  const { task, attempt } = view;
  if (task === undefined || task.token !== attempt.token) {
    const out = nothing();
    emit(out, ctx, 'task.stale_result', attempt.taskId, attempt.attemptId, { kind: 'result' });
    return out;
  }
  if (attempt.exit !== undefined) return nothing();
  const d = input.settlement;
  const interrupted = d.event === 'REQUEUE' && d.exit === 'interrupted';
  const out = task.state === 'waiting' && interrupted ? detach(task, attempt, d, ctx) : settle(task, attempt, d, interrupted, ctx);
  if (input.flow !== undefined) {
    out.changes.push({ kind: 'flow', agent: task.agent, state: input.flow.state });
    const until = input.flow.pausedUntil;
    if (until !== undefined) emit(out, ctx, 'agent.paused', task.id, attempt.attemptId, { agent: task.agent, until, reason: 'fast_failures' });
  }
  return out;
}

function settle(task: TaskRecord, attempt: AttemptRecord, d: Settlement, interrupted: boolean, ctx: StepContext): StepResult {
  const { now } = ctx;
  // The agent returned while it was (still) waiting, e.g. after its own input timeout: it resumed first.
  const from = task.state === 'waiting' && (d.event === 'SUCCEED' || d.event === 'FAIL' || d.event === 'SLEEP') ? nextState(task, 'RESUME') : task.state;
  const state = nextTaskState(from, d.event);
  if (state === undefined) throw illegal({ id: task.id, state: from }, d.event);

  const next: TaskRecord = { ...task, state, updatedAt: now };
  if (next.waitingFor !== undefined) next.waitingFor = undefined;
  if (!d.counts) next.attempts--;
  const { result } = d;
  if (result) {
    next.result = resultOf(result);
    if ('output' in result && result.output !== undefined) next.output = result.output;
  }
  if (d.event === 'SUCCEED' || d.event === 'SLEEP') {
    if (next.error !== undefined) next.error = undefined;
  } else if (d.error) next.error = d.error;
  if (d.reason !== undefined && d.event !== 'REQUEUE') next.reason = d.reason;

  const out = nothing();
  // A task that settles holds its final attempt (written when a retry starts a new run, if one
  // does): one record per settled task, not two. It can when the attempt's error is the task's.
  if (isTerminal(state) && d.error === next.error) {
    next.attemptStartedAt = attempt.startedAt;
    next.attemptLeaseUntil = attempt.leaseExpiresAt;
    next.attemptExit = d.exit;
  } else {
    const ended: AttemptRecord = { ...attempt, endedAt: now, exit: d.exit };
    if (d.error) ended.error = d.error;
    out.changes.push(attemptChange(ended));
  }

  const { attemptId } = attempt;
  const run = task.runs;
  const no = attempt.attempt;
  const attemptMs = now - attempt.startedAt;
  let timer: TimerRecord | undefined;
  switch (d.event) {
    case 'SUCCEED':
      emit(out, ctx, 'task.done', task.id, attemptId, { ...DONE, run, attempt: no, exit: d.exit, attemptMs, kind: next.result?.kind, summary: next.result?.summary });
      break;
    case 'FAIL':
      emit(out, ctx, 'task.failed', task.id, attemptId, { run, attempt: no, exit: d.exit, attemptMs, error: next.error });
      break;
    case 'DROP':
      emit(out, ctx, 'task.dropped', task.id, attemptId, { run, attempt: no, exit: d.exit, attemptMs, reason: next.reason, error: next.error });
      break;
    case 'CANCEL':
      emit(out, ctx, 'task.cancelled', task.id, attemptId, { run, attempt: no, exit: d.exit, attemptMs, reason: next.reason });
      break;
    case 'REQUEUE':
      if (interrupted) {
        // Shutdown or kill stopped the runtime, not the task: queued again, its budget unspent.
        queue(out, ctx, next, { run, attempt: no, exit: d.exit, attemptMs, reason: d.reason === 'killed' ? 'killed' : 'interrupted' });
      } else {
        const delayMs = d.retryDelayMs ?? 0;
        const event = emit(out, ctx, 'task.retrying', task.id, attemptId, { run, attempt: no, exit: d.exit, attemptMs, delayMs, error: next.error });
        markQueued(next, event.seq, now);
        if (delayMs > 0) {
          next.runAt = now + delayMs;
          timer = timerOf(next, 'retry', next.runAt);
        }
      }
      break;
    case 'SLEEP': {
      const sleep = result?.kind === 'sleep' ? result : undefined;
      next.followUp = sleep?.followUp;
      next.runAt = now + (sleep === undefined ? 0 : sleep.wakeAfterMs);
      timer = timerOf(next, 'wake', next.runAt);
      emit(out, ctx, 'task.sleeping', task.id, attemptId, { run, attempt: no, exit: d.exit, attemptMs, wakeAt: next.runAt });
      break;
    }
  }
  if (isTerminal(state)) {
    finish(out, next, now);
    return out;
  }
  // A sleep ends the run: the wake starts a new one.
  out.changes.push(taskChange(next));
  if (task.state === 'waiting') out.effects.push(notifyEffect(task.id));
  if (timer) arm(out, timer);
  return out;
}

/**
 * A waiting task whose attempt is interrupted (shutdown, kill, a crash found at open) keeps waiting
 * with no live attempt: the input or join it waits for resumes it with a new run. The attempt does
 * not count. An input that came while the attempt was being stopped was kept for the task, not
 * given to the attempt: it resumes the task now, as it would have had it come a moment later.
 */
function detach(task: TaskRecord, attempt: AttemptRecord, d: Settlement, ctx: StepContext): StepResult {
  const { now } = ctx;
  const next: TaskRecord = { ...task };
  if (!d.counts) next.attempts--;
  const out = nothing();
  out.changes.push(attemptChange({ ...attempt, endedAt: now, exit: d.exit }));
  const data = { run: task.runs, attempt: attempt.attempt, exit: d.exit, attemptMs: Math.max(0, now - attempt.startedAt), reason: d.reason, for: task.waitingFor?.kind, detached: true as const };
  emit(out, ctx, 'task.waiting', task.id, attempt.attemptId, data);
  if (next.waitingFor?.kind === 'input' && (next.inbox ?? 0) > (next.delivered ?? 0)) return resumeAsNewRun(out, next, ctx);
  out.changes.push(taskChange(next));
  return out;
}

/**
 * The attempt record a rebuild settles when a running task's current attempt was never found in the
 * store: the task's token, started and expired when the task was last written.
 */
export function lostAttemptOf(task: TaskRecord, runtimeId: string): AttemptRecord {
  return {
    taskId: task.id,
    run: task.runs,
    attempt: task.attemptSeq,
    attemptId: attemptIdOf(task.id, task.runs, task.attemptSeq),
    token: task.token,
    owner: runtimeId,
    startedAt: task.updatedAt,
    leaseExpiresAt: task.updatedAt,
  };
}

/** The data of `task.done`: a template spread, not a literal (see src/allocation.ts). */
const DONE: EventData<'task.done'> = { run: 0, attempt: 0, exit: 'success', attemptMs: 0, kind: undefined, summary: undefined };
