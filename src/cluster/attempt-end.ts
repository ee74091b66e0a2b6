/**
 * How a claimed attempt's outcome becomes the end the queue settles: decided by the LMDB runtime's
 * own rules (src/tasks/outcome.ts), so a task settles the same way on either store. Pure: no I/O,
 * no clock reads.
 */
import type { AbortReason, WireError } from '../../actors/wire.js';
import type { RetryPolicy, TaskResult } from '../store/records.js';
import type { ClaimedTask } from '../store/postgres/queue.js';
import { decideEnd, type AttemptEnd } from '../store/postgres/settle.js';
import { jsonOf, jsonOfFixed, withoutNul } from '../store/postgres/transaction.js';
import { decideSettlement, resultOf, type AttemptOutcome } from '../tasks/outcome.js';

/**
 * The end of `claimed` after `outcome`, with `stop` what the node asked of it (that wins over what
 * the agent returned afterwards, as in the LMDB runtime). The node decides how the attempt ended,
 * its error and a retry's delay (from the agent's `retry` backoff); whether a failure is retried or
 * dropped is the database's to decide, under the task's lock, from the budget the task was
 * submitted with. So the budget given to decideSettlement here is unbounded: it never drops, and
 * the error it gives is the attempt's own, not a RETRY_EXHAUSTED the queue would wrap again.
 */
export function attemptEnd(
  claimed: Pick<ClaimedTask, 'id' | 'token' | 'attempts'>,
  retry: Readonly<RetryPolicy>,
  outcome: AttemptOutcome,
  stop: { reason: AbortReason; detail?: string } | undefined,
  random: () => number,
): AttemptEnd {
  const settlement = decideSettlement(unbounded(retry), claimed.attempts, outcome, stop, random);
  const end: AttemptEnd = { taskId: claimed.id, token: claimed.token, exit: settlement.exit };
  const result = settlement.result;
  if (settlement.event === 'SLEEP' && result?.kind === 'sleep') {
    // The task sleeps until the wake (on the database's clock), then wakes into a new run.
    end.sleep = result.followUp === undefined ? { wakeAfterMs: result.wakeAfterMs } : { wakeAfterMs: result.wakeAfterMs, followUp: result.followUp };
  }
  const output = result !== undefined && 'output' in result ? result.output : undefined;
  if (output !== undefined) end.output = output;
  // What the task shows as its `result` once settled, as the LMDB runtime derives it (src/steps/settle.ts).
  if (result !== undefined) end.result = resultOf(result);
  if (settlement.error !== undefined) end.error = settlement.error;
  if (settlement.event === 'REQUEUE' && settlement.retryDelayMs) end.retryDelayMs = settlement.retryDelayMs;
  if (settlement.reason === 'killed') end.killed = true;
  return storable(end);
}

/**
 * `retry` with an unbounded budget, as decideSettlement takes it (see {@link attemptEnd}): made once
 * per policy, which is an agent's, shared by its attempts, unless a task gives retry fields of its own.
 */
function unbounded(retry: Readonly<RetryPolicy>): { retry: Readonly<RetryPolicy> } {
  let policy = unboundedPolicies.get(retry);
  if (policy === undefined) unboundedPolicies.set(retry, (policy = { retry: { ...retry, maxAttempts: Number.MAX_SAFE_INTEGER } }));
  return policy;
}

const unboundedPolicies = new WeakMap<Readonly<RetryPolicy>, { retry: Readonly<RetryPolicy> }>();

/**
 * The error the task gets from `end` (none for a success or an interruption), as the queue decides
 * it from the task's budget (store/postgres/end-decision.ts): the attempt's own, or
 * RETRY_EXHAUSTED once a retryable failure spent the budget. A cancel that turns a retry into
 * `cancelled` at the settle (a user's, asked meanwhile) is not foreseen here.
 */
export function taskErrorOf(claimed: Pick<ClaimedTask, 'attempts' | 'maxAttempts'>, end: AttemptEnd): WireError | undefined {
  return decideEnd(end.exit, end.error, claimed.attempts, claimed.maxAttempts, end.sleep !== undefined).error;
}

/**
 * The end as jsonb can hold it. Worker threads pass Dates, Uint8Arrays and BigInts, which jsonb
 * cannot; an output like that fails its attempt (INVALID_RESULT) rather than the whole settle
 * batch it goes in. A NUL character in an error's or a result's text is replaced.
 */
function storable(end: AttemptEnd): AttemptEnd {
  try {
    jsonOfFixed(end.output, 'the output');
    jsonOf(end.sleep?.followUp, 'the followUp');
    // A wake past what the database's timestamps hold (the worker checked it is a whole number).
    if (end.sleep !== undefined && !Number.isSafeInteger(end.sleep.wakeAfterMs)) throw new Error('wakeAfterMs is past what a timestamp holds');
  } catch (error) {
    const { output: _dropped, result: _result, sleep: _sleep, ...rest } = end;
    return { ...rest, exit: 'error', error: { code: 'INVALID_RESULT', message: `the agent's output cannot be stored in PostgreSQL: ${(error as Error).message}`, retryable: false, fault: 'agent' } };
  }
  if (end.error !== undefined) {
    try {
      jsonOfFixed(end.error, 'the error');
    } catch {
      end.error = errorWithoutNul(end.error);
    }
  }
  if (end.result !== undefined) {
    try {
      jsonOfFixed(end.result, 'the result');
    } catch {
      end.result = resultWithoutNul(end.result);
    }
  }
  return end;
}

function errorWithoutNul(error: WireError): WireError {
  const copy: WireError = { code: withoutNul(String(error.code)), message: withoutNul(String(error.message)), retryable: error.retryable, fault: error.fault };
  if (error.stack !== undefined) copy.stack = withoutNul(String(error.stack));
  return copy;
}

function resultWithoutNul(result: TaskResult): TaskResult {
  const copy: TaskResult = { kind: result.kind };
  for (const field of ['summary', 'branch', 'rev'] as const) {
    const text = result[field];
    if (text !== undefined) copy[field] = withoutNul(text);
  }
  return copy;
}
