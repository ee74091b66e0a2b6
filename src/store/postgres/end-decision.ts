/**
 * What the end of an attempt does to its task on the PostgreSQL queue, decided by a pure function
 * from its exit and the task's attempt budget (settle.ts writes it; the sweeper decides the ends of
 * dead nodes' attempts with it too). No I/O.
 */
import type { WireError } from '../../../actors/wire.js';
import { nextTaskState, type AttemptExit, type TaskEventType, type TaskState } from '../../../machines/index.js';

/** What ending an attempt does to its task. */
export interface EndDecision {
  state: TaskState;
  /** Whether the attempt counts against `maxAttempts` (an interrupted one does not). */
  counts: boolean;
  /** The task's error after it (the attempt's own, or RETRY_EXHAUSTED when the budget is spent). */
  error?: WireError;
}

/**
 * What ending an attempt with `exit` does to a running task that has counted `attempts` attempts
 * in this run, this one included, out of `maxAttempts`. The same outcomes as the LMDB runtime
 * (src/tasks/outcome.ts): success and fork are done, fail and a non-retryable error are failed,
 * a retryable failure is retried until the budget is spent and then dropped (RETRY_EXHAUSTED, with
 * the last error's stack), an interrupted attempt is requeued without counting. The state comes
 * from the task machine's table.
 */
export function decideEnd(exit: AttemptExit, error: WireError | undefined, attempts: number, maxAttempts: number, sleeps = false): EndDecision {
  const cause = error ?? defaultError(exit);
  let event: TaskEventType;
  let counts = true;
  switch (exit) {
    case 'success':
    case 'fork':
      event = sleeps ? 'SLEEP' : 'SUCCEED';
      break;
    case 'fail':
      event = 'FAIL';
      break;
    case 'cancelled':
      event = 'CANCEL';
      break;
    case 'interrupted':
      event = 'REQUEUE';
      counts = false;
      break;
    case 'error':
      event = cause?.retryable === false ? 'FAIL' : attempts < maxAttempts ? 'REQUEUE' : 'DROP';
      break;
    case 'timeout':
    case 'lease_expired':
    case 'crashed':
      event = attempts < maxAttempts ? 'REQUEUE' : 'DROP';
      break;
  }
  const state = nextTaskState('running', event)!;
  if (event !== 'DROP') return cause === undefined ? { state, counts } : { state, counts, error: cause };
  const exhausted: WireError = {
    code: 'RETRY_EXHAUSTED',
    message: `gave up after ${attempts} attempt${attempts === 1 ? '' : 's'}; last error ${cause!.code}: ${cause!.message}`,
    retryable: false,
    fault: cause!.fault,
  };
  // The last error's stack, for operators, as the LMDB runtime keeps it (src/tasks/outcome.ts).
  if (cause!.stack !== undefined) exhausted.stack = cause!.stack;
  return { state, counts, error: exhausted };
}

/** The error an exit stands for when its node gave none (none for success and fork). */
export function defaultError(exit: AttemptExit): WireError | undefined {
  switch (exit) {
    case 'success':
    case 'fork':
    case 'interrupted':
      return undefined;
    case 'fail':
      return { code: 'AGENT_FAILED', message: 'the agent reported failure', retryable: false, fault: 'agent' };
    case 'error':
      return { code: 'AGENT_ERROR', message: 'the agent threw', retryable: true, fault: 'agent' };
    case 'timeout':
      return { code: 'TIMEOUT', message: 'the attempt timed out', retryable: true, fault: 'agent' };
    case 'lease_expired':
      return { code: 'LEASE_EXPIRED', message: 'the attempt stopped renewing its lease', retryable: true, fault: 'infrastructure' };
    case 'crashed':
      return { code: 'PROCESS_CRASHED', message: 'the node died during the attempt', retryable: true, fault: 'infrastructure' };
    case 'cancelled':
      return { code: 'CANCELLED', message: 'cancelled', retryable: false, fault: 'agent' };
  }
}
