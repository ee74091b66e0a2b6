import { describe, expect, it } from 'vitest';
import type { WireResult } from '../../actors/wire.js';
import { attemptEnd } from '../../src/cluster/attempt-end.js';
import type { RetryPolicy } from '../../src/store/records.js';
import { decideEnd } from '../../src/store/postgres/settle.js';
import type { AttemptOutcome } from '../../src/tasks/outcome.js';

const RETRY: RetryPolicy = { maxAttempts: 1, backoff: 'exponential', delayMs: 1_000, maxDelayMs: 60_000, jitter: 0 };
const claimed = (attempts: number) => ({ id: 't1', token: 7, attempts });
const noJitter = () => 0;
const result = (wire: WireResult): AttemptOutcome => ({ kind: 'result', wire });

describe('attemptEnd: a claimed attempt\'s end for the PostgreSQL queue', () => {
  it('keeps the output and result of a success, and the error and result of a failure', () => {
    expect(attemptEnd(claimed(1), RETRY, result({ ok: true, result: { kind: 'success', output: { a: 1 } } }), undefined, noJitter)).toEqual({ taskId: 't1', token: 7, exit: 'success', output: { a: 1 }, result: { kind: 'success' } });
    const fork = { kind: 'fork' as const, summary: 'forked', branch: 'b', rev: 'abc', output: 3 };
    expect(attemptEnd(claimed(1), RETRY, result({ ok: true, result: fork }), undefined, noJitter)).toEqual({ taskId: 't1', token: 7, exit: 'fork', output: 3, result: { kind: 'fork', summary: 'forked', branch: 'b', rev: 'abc' } });
    expect(attemptEnd(claimed(1), RETRY, result({ ok: true, result: { kind: 'fail', summary: 'no', output: 2 } }), undefined, noJitter)).toEqual({
      taskId: 't1',
      token: 7,
      exit: 'fail',
      output: 2,
      result: { kind: 'fail', summary: 'no' },
      error: { code: 'AGENT_FAILED', message: 'no', retryable: false, fault: 'agent' },
    });
    // A thrown error, or a stop, carries no result.
    expect(attemptEnd(claimed(1), RETRY, result({ ok: false, error: { code: 'X', message: 'x', retryable: false, fault: 'agent' } }), undefined, noJitter)).not.toHaveProperty('result');
    expect(attemptEnd(claimed(1), RETRY, result({ ok: true, result: { kind: 'success' } }), { reason: 'cancelled' }, noJitter)).not.toHaveProperty('result');
  });

  it('leaves retry or drop to the database: the attempt\'s own error and a backoff, never RETRY_EXHAUSTED', () => {
    // The agent's budget says 1 attempt, and this is the third of the task's: still the plain error.
    const end = attemptEnd(claimed(3), RETRY, result({ ok: false, error: { code: 'AGENT_ERROR', message: 'boom', retryable: true, fault: 'agent' } }), undefined, noJitter);
    expect(end).toEqual({ taskId: 't1', token: 7, exit: 'error', error: { code: 'AGENT_ERROR', message: 'boom', retryable: true, fault: 'agent' }, retryDelayMs: 4_000 });
    // The queue then drops it when the task's budget is spent, wrapping the error once.
    expect(decideEnd(end.exit, end.error, 3, 3)).toMatchObject({ state: 'dropped', error: { code: 'RETRY_EXHAUSTED', message: 'gave up after 3 attempts; last error AGENT_ERROR: boom' } });
    expect(decideEnd(end.exit, end.error, 2, 3)).toMatchObject({ state: 'queued' });
    // The last error's stack stays with RETRY_EXHAUSTED, as on LMDB; an error without one gives none.
    const thrown = { code: 'AGENT_ERROR', message: 'boom', retryable: true, fault: 'agent' as const, stack: 'Error: boom\n    at agent.js:1' };
    expect(decideEnd('error', thrown, 3, 3).error).toEqual({ code: 'RETRY_EXHAUSTED', message: 'gave up after 3 attempts; last error AGENT_ERROR: boom', retryable: false, fault: 'agent', stack: thrown.stack });
    expect(decideEnd('timeout', undefined, 3, 3).error).not.toHaveProperty('stack');
  });

  it('lets the node\'s stop win over what the agent returned afterwards', () => {
    const aborted = result({ ok: false, error: { code: 'ABORTED', message: 'stopped', retryable: false, fault: 'agent' } });
    expect(attemptEnd(claimed(1), RETRY, aborted, { reason: 'shutdown' }, noJitter)).toEqual({ taskId: 't1', token: 7, exit: 'interrupted' });
    // A kill's: interrupted too (its budget unspent), marked so that its task.queued says killed, as on LMDB.
    expect(attemptEnd(claimed(1), RETRY, aborted, { reason: 'killed', detail: 'runaway' }, noJitter)).toEqual({ taskId: 't1', token: 7, exit: 'interrupted', killed: true });
    expect(attemptEnd(claimed(1), RETRY, { kind: 'abandoned' }, { reason: 'timeout', detail: 'late' }, noJitter)).toMatchObject({ exit: 'timeout', error: { code: 'TIMEOUT', message: 'late' } });
    expect(attemptEnd(claimed(1), RETRY, { kind: 'crash', code: 'THREAD_CRASHED', message: 'gone' }, undefined, noJitter)).toMatchObject({ exit: 'crashed', error: { code: 'THREAD_CRASHED', fault: 'infrastructure' } });
  });

  it('ends a sleep as a success that sleeps, with its follow-up and its result', () => {
    const sleep = attemptEnd(claimed(1), RETRY, result({ ok: true, result: { kind: 'sleep', wakeAfterMs: 10, followUp: { step: 2 }, summary: 'nap' } }), undefined, noJitter);
    expect(sleep).toEqual({ taskId: 't1', token: 7, exit: 'success', sleep: { wakeAfterMs: 10, followUp: { step: 2 } }, result: { kind: 'sleep', summary: 'nap' } });
    expect(attemptEnd(claimed(1), RETRY, result({ ok: true, result: { kind: 'sleep', wakeAfterMs: 0 } }), undefined, noJitter)).toEqual({ taskId: 't1', token: 7, exit: 'success', sleep: { wakeAfterMs: 0 }, result: { kind: 'sleep' } });
    expect(decideEnd('success', undefined, 1, 1, true)).toEqual({ state: 'sleeping', counts: true });
  });

  it('fails an attempt whose output or follow-up jsonb cannot hold, or whose wake no timestamp holds, instead of storing something else', () => {
    const dated = attemptEnd(claimed(1), RETRY, result({ ok: true, result: { kind: 'success', summary: 'dated', output: { at: new Date(0) } } }), undefined, noJitter);
    expect(dated).toEqual({ taskId: 't1', token: 7, exit: 'error', error: expect.objectContaining({ code: 'INVALID_RESULT', retryable: false }) });
    const bigint = attemptEnd(claimed(1), RETRY, result({ ok: true, result: { kind: 'sleep', wakeAfterMs: 10, followUp: { n: 1n } } }), undefined, noJitter);
    expect(bigint).toEqual({ taskId: 't1', token: 7, exit: 'error', error: expect.objectContaining({ code: 'INVALID_RESULT', message: expect.stringContaining('followUp') }) });
    const forever = attemptEnd(claimed(1), RETRY, result({ ok: true, result: { kind: 'sleep', wakeAfterMs: 1e300 } }), undefined, noJitter);
    expect(forever).toEqual({ taskId: 't1', token: 7, exit: 'error', error: expect.objectContaining({ code: 'INVALID_RESULT', message: expect.stringContaining('wakeAfterMs') }) });
    const nul = attemptEnd(claimed(1), RETRY, result({ ok: false, error: { code: 'AGENT_ERROR', message: 'a\u0000b', retryable: false, fault: 'agent' } }), undefined, noJitter);
    expect(nul.error!.message).toBe('a\uFFFDb');
    const nulResult = attemptEnd(claimed(1), RETRY, result({ ok: true, result: { kind: 'fork', summary: 's\u0000', branch: 'b\u0000', rev: 'r' } }), undefined, noJitter);
    expect(nulResult.result).toEqual({ kind: 'fork', summary: 's\uFFFD', branch: 'b\uFFFD', rev: 'r' });
  });
});
