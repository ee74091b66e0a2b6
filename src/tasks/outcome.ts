/**
 * Pure decisions: how an attempt's outcome moves its task (done, failed, retried, dropped,
 * cancelled, requeued), and how long a retry waits. No I/O, no clock reads: time comes in.
 */
import type { AbortReason, AgentResult, WireError, WireResult } from '../../actors/wire.js';
import type { AttemptExit, TaskEventType } from '../../machines/index.js';
import type { RetryPolicy, TaskRecord, TaskResult } from '../store/records.js';

/** How an attempt ended, as the host observed it. */
export type AttemptOutcome =
  | { kind: 'result'; wire: WireResult }
  | { kind: 'crash'; code: 'THREAD_CRASHED' | 'PROCESS_CRASHED' | 'STORE_FAILED' | 'WORKSPACE_FAILED'; message: string }
  /** The host stopped waiting (grace period over, or process shutdown) without a result. */
  | { kind: 'abandoned' };

/** What to do with the task. */
export interface Settlement {
  exit: AttemptExit;
  /** The task machine event to apply. */
  event: Extract<TaskEventType, 'SUCCEED' | 'FAIL' | 'DROP' | 'CANCEL' | 'REQUEUE' | 'SLEEP'>;
  /** Whether this attempt counts against `retry.maxAttempts`. */
  counts: boolean;
  error?: WireError;
  result?: AgentResult;
  /** Why (dropped: retry_exhausted; cancelled: the cancel reason; requeued: interrupted or killed). */
  reason?: string;
  /** REQUEUE as a retry: wait this long first. */
  retryDelayMs?: number;
}

/**
 * Decides the settlement. `stopReason` is set when the host asked the attempt to stop; that
 * decision wins over whatever the agent returned afterwards. `attemptsSoFar` includes this attempt.
 */
export function decideSettlement(
  task: Pick<TaskRecord, 'retry'>,
  attemptsSoFar: number,
  outcome: AttemptOutcome,
  stop: { reason: AbortReason; detail?: string } | undefined,
  random: () => number,
): Settlement {
  // Shutdown and kill() stop the runtime, not the task: requeue it without spending its budget.
  if (stop?.reason === 'shutdown' || stop?.reason === 'killed') {
    return { exit: 'interrupted', event: 'REQUEUE', counts: false, reason: stop.reason === 'killed' ? 'killed' : 'interrupted' };
  }
  if (stop?.reason === 'cancelled') {
    return {
      exit: 'cancelled',
      event: 'CANCEL',
      counts: true,
      reason: stop.detail ?? 'cancelled',
      error: { code: 'CANCELLED', message: stop.detail ?? 'cancelled', retryable: false, fault: 'agent' },
    };
  }
  if (stop?.reason === 'lease_expired') {
    const error: WireError = { code: 'LEASE_EXPIRED', message: stop.detail ?? 'the attempt stopped renewing its lease', retryable: true, fault: 'infrastructure' };
    return retryOrDrop(task.retry, attemptsSoFar, 'lease_expired', error, random);
  }
  if (stop?.reason === 'timeout') {
    const error: WireError = { code: 'TIMEOUT', message: stop.detail ?? 'attempt timed out', retryable: true, fault: 'agent' };
    return retryOrDrop(task.retry, attemptsSoFar, 'timeout', error, random);
  }
  if (outcome.kind === 'crash' || outcome.kind === 'abandoned') {
    const error: WireError =
      outcome.kind === 'crash'
        ? { code: outcome.code, message: outcome.message, retryable: true, fault: 'infrastructure' }
        : { code: 'THREAD_CRASHED', message: 'the attempt was abandoned after its thread stopped answering', retryable: true, fault: 'infrastructure' };
    return retryOrDrop(task.retry, attemptsSoFar, 'crashed', error, random);
  }
  const { wire } = outcome;
  if (!wire.ok) {
    if (!wire.error.retryable) return { exit: 'error', event: 'FAIL', counts: true, error: wire.error };
    return retryOrDrop(task.retry, attemptsSoFar, 'error', wire.error, random);
  }
  const { result } = wire;
  switch (result.kind) {
    case 'success':
      return { exit: 'success', event: 'SUCCEED', counts: true, result };
    case 'fork':
      return { exit: 'fork', event: 'SUCCEED', counts: true, result };
    case 'fail':
      return {
        exit: 'fail',
        event: 'FAIL',
        counts: true,
        result,
        error: { code: 'AGENT_FAILED', message: result.summary ?? 'the agent reported failure', retryable: false, fault: 'agent' },
      };
    case 'sleep':
      return { exit: 'success', event: 'SLEEP', counts: true, result };
  }
}

function retryOrDrop(policy: RetryPolicy, attemptsSoFar: number, exit: AttemptExit, error: WireError, random: () => number): Settlement {
  if (attemptsSoFar < policy.maxAttempts) {
    return { exit, event: 'REQUEUE', counts: true, error, reason: 'retry', retryDelayMs: backoffDelay(policy, attemptsSoFar, random) };
  }
  return {
    exit,
    event: 'DROP',
    counts: true,
    reason: 'retry_exhausted',
    error: {
      code: 'RETRY_EXHAUSTED',
      message: `gave up after ${attemptsSoFar} attempt${attemptsSoFar === 1 ? '' : 's'}; last error ${error.code}: ${error.message}`,
      retryable: false,
      fault: error.fault,
      stack: error.stack,
    },
  };
}

/** What {@link resultOf} spreads: a template, not a literal (see src/allocation.ts). */
const RESULT: TaskResult = { kind: 'success' };

/**
 * The `result` a task shows after an attempt that returned `result`: its kind, and its summary,
 * branch and rev when given (the output is kept apart). The same on both stores.
 */
export function resultOf(result: AgentResult): TaskResult {
  const out: TaskResult = { ...RESULT, kind: result.kind };
  if (result.summary !== undefined) out.summary = result.summary;
  if ('branch' in result && result.branch !== undefined) out.branch = result.branch;
  if ('rev' in result && result.rev !== undefined) out.rev = result.rev;
  return out;
}

/**
 * Delay before retry number `failedAttempts` (1 after the first failure). Exponential doubles from
 * `delayMs`; both kinds are capped at `maxDelayMs` and then shortened by up to `jitter` × delay.
 */
export function backoffDelay(policy: RetryPolicy, failedAttempts: number, random: () => number): number {
  const base = policy.backoff === 'fixed' ? policy.delayMs : policy.delayMs * 2 ** Math.max(0, failedAttempts - 1);
  const capped = Math.min(policy.maxDelayMs, base);
  return Math.max(0, Math.round(capped * (1 - policy.jitter * random())));
}
