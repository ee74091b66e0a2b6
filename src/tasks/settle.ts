/**
 * Writing a settlement: the task's new state, the ended attempt, the run record when the run is
 * over, the one settling event, and any retry or wake timer, all in one step. Effects that must
 * only happen once the step is durable (waking waiters, requeueing, arming the timer) are returned
 * and run after the commit.
 */
import { isTerminal } from '../../machines/index.js';
import type { StepWriter } from '../store/port.js';
import type { AttemptRecord, TaskRecord, TaskResult, TimerRecord } from '../store/records.js';
import type { AgentResult } from '../../actors/wire.js';
import { cleanWorkspace, entryOf, markQueued, timerIdOf, transition, writeQueued, type Kernel } from './kernel.js';
import type { Settlement } from './outcome.js';

/** Writes a settlement into `w`; returns what to do once it has committed. */
export function settleInto(w: StepWriter, k: Kernel, task: TaskRecord, attempt: AttemptRecord, decision: Settlement, now: number): () => void {
  if (task.state === 'waiting') {
    if (decision.event === 'REQUEUE' && (decision.reason === 'interrupted' || decision.reason === 'killed')) return detach(w, k, task, attempt, decision, now);
    // The agent returned while it was (still) waiting, e.g. after its own input timeout.
    if (decision.event === 'SUCCEED' || decision.event === 'FAIL' || decision.event === 'SLEEP') {
      transition(task, 'RESUME', now);
      k.table.moved(task, 'waiting');
    }
  }
  delete task.waitingFor;
  const from = task.state;
  if (!decision.counts) task.attempts--;
  const { result } = decision;
  if (result) {
    task.result = resultOf(result);
    if ('output' in result && result.output !== undefined) task.output = result.output;
  }
  if (decision.event === 'SUCCEED' || decision.event === 'SLEEP') delete task.error;
  else if (decision.error) task.error = decision.error;
  if (decision.reason !== undefined && decision.event !== 'REQUEUE') task.reason = decision.reason;
  transition(task, decision.event, now);
  k.table.moved(task, from);

  attempt.endedAt = now;
  attempt.exit = decision.exit;
  if (decision.error) attempt.error = decision.error;
  w.putAttempt(attempt);

  const base = { at: now, taskId: task.id, attemptId: attempt.attemptId };
  const run = { run: task.runs, attempt: attempt.attempt, exit: decision.exit, attemptMs: now - attempt.startedAt };
  let timer: TimerRecord | undefined;
  switch (decision.event) {
    case 'SUCCEED':
      w.event('task.done', { ...base, data: { ...run, kind: task.result?.kind, summary: task.result?.summary } });
      break;
    case 'FAIL':
      w.event('task.failed', { ...base, data: { ...run, error: task.error } });
      break;
    case 'DROP':
      w.event('task.dropped', { ...base, data: { ...run, reason: task.reason, error: task.error } });
      break;
    case 'CANCEL':
      w.event('task.cancelled', { ...base, data: { ...run, reason: task.reason } });
      break;
    case 'REQUEUE':
      if (decision.reason === 'interrupted' || decision.reason === 'killed') {
        writeQueued(w, task, { ...run, reason: decision.reason }, now);
      } else {
        const delayMs = decision.retryDelayMs ?? 0;
        const event = w.event('task.retrying', { ...base, data: { ...run, delayMs, error: task.error } });
        markQueued(task, event.seq, now);
        if (delayMs > 0) {
          task.runAt = now + delayMs;
          timer = { id: timerIdOf(task, 'retry'), due: task.runAt, kind: 'retry', taskId: task.id, run: task.runs };
        }
      }
      break;
    case 'SLEEP': {
      const wakeAfterMs = result?.kind === 'sleep' ? result.wakeAfterMs : 0;
      task.followUp = result?.kind === 'sleep' ? result.followUp : undefined;
      task.runAt = now + wakeAfterMs;
      timer = { id: timerIdOf(task, 'wake'), due: task.runAt, kind: 'wake', taskId: task.id, run: task.runs };
      w.event('task.sleeping', { ...base, data: { ...run, wakeAt: task.runAt } });
      break;
    }
  }
  const terminal = isTerminal(task.state);
  if (terminal) {
    task.settledAt = now;
    w.removeActive(task.id);
  }
  if (terminal || task.state === 'sleeping') {
    w.putRun({
      taskId: task.id,
      run: task.runs,
      reason: task.runReason,
      createdAt: task.runCreatedAt,
      settledAt: now,
      outcome: task.state,
      attempts: task.attempts,
      ...(task.result ? { result: task.result } : {}),
      ...(task.error ? { error: task.error } : {}),
    });
  }
  if (timer) w.putTimer(timer);
  w.putTask(task);
  return () => {
    if (terminal) {
      k.table.retire(task);
      cleanWorkspace(k, task);
    }
    k.table.notify(task);
    if (timer) k.timers.add(timer);
    else if (task.state === 'queued' && !k.governor.has(task.id)) {
      k.governor.enqueue(entryOf(task));
      k.pump();
    }
  };
}

/**
 * A waiting task whose attempt is interrupted (shutdown, kill) keeps waiting with no live attempt:
 * the input or join it waits for resumes it with a new run. The attempt does not count.
 */
function detach(w: StepWriter, k: Kernel, task: TaskRecord, attempt: AttemptRecord, decision: Settlement, now: number): () => void {
  if (!decision.counts) task.attempts--;
  attempt.endedAt = now;
  attempt.exit = decision.exit;
  w.putAttempt(attempt);
  w.putTask(task);
  const data = { run: task.runs, attempt: attempt.attempt, exit: decision.exit, attemptMs: now - attempt.startedAt, reason: decision.reason, for: task.waitingFor?.kind, detached: true };
  w.event('task.waiting', { at: now, taskId: task.id, attemptId: attempt.attemptId, data });
  return () => k.table.notify(task);
}

/** Commits a settlement as its own step; `extra` adds writes to it (agent flow state). */
export function writeSettlement(k: Kernel, task: TaskRecord, attempt: AttemptRecord, decision: Settlement, now: number, extra?: (w: StepWriter) => void): void {
  let after: (() => void) | undefined;
  k.store
    .commit((w) => {
      after = settleInto(w, k, task, attempt, decision, now);
      extra?.(w);
    })
    .then(
      () => after?.(),
      (error: unknown) => k.log.error({ err: error, taskId: task.id }, 'committing a settlement failed'),
    );
}

function resultOf(result: AgentResult): TaskResult {
  const out: TaskResult = { kind: result.kind };
  if (result.summary !== undefined) out.summary = result.summary;
  if ('branch' in result && result.branch !== undefined) out.branch = result.branch;
  if ('rev' in result && result.rev !== undefined) out.rev = result.rev;
  return out;
}
