import { describe, expect, it } from 'vitest';
import type { WireError, WireResult } from '../../actors/wire.js';
import type { RetryPolicy } from '../../src/store/records.js';
import { backoffDelay, decideSettlement, type AttemptOutcome } from '../../src/tasks/outcome.js';

const RETRY: RetryPolicy = { maxAttempts: 3, backoff: 'exponential', delayMs: 1_000, maxDelayMs: 60_000, jitter: 0 };
const task = (retry: Partial<RetryPolicy> = {}) => ({ retry: { ...RETRY, ...retry } });
const noJitter = () => 0;

function ok(result: Extract<WireResult, { ok: true }>['result']): AttemptOutcome {
  return { kind: 'result', wire: { ok: true, result } };
}

function err(error: Partial<WireError> = {}): AttemptOutcome {
  return { kind: 'result', wire: { ok: false, error: { code: 'AGENT_ERROR', message: 'boom', retryable: true, fault: 'agent', ...error } } };
}

describe('decideSettlement: host stop decisions', () => {
  it('requeues an attempt stopped by shutdown without counting it', () => {
    const s = decideSettlement(task(), 3, ok({ kind: 'success' }), { reason: 'shutdown' }, noJitter);
    expect(s).toEqual({ exit: 'interrupted', event: 'REQUEUE', counts: false, reason: 'interrupted' });
  });

  it('requeues on shutdown even when the attempt would otherwise be exhausted', () => {
    const s = decideSettlement(task({ maxAttempts: 1 }), 1, err(), { reason: 'shutdown' }, noJitter);
    expect(s.event).toBe('REQUEUE');
    expect(s.counts).toBe(false);
    expect(s.retryDelayMs).toBeUndefined();
  });

  it('cancels with the cancel detail, whatever the agent returned afterwards', () => {
    const s = decideSettlement(task(), 1, ok({ kind: 'success', output: 42 }), { reason: 'cancelled', detail: 'user asked' }, noJitter);
    expect(s.exit).toBe('cancelled');
    expect(s.event).toBe('CANCEL');
    expect(s.counts).toBe(true);
    expect(s.reason).toBe('user asked');
    expect(s.result).toBeUndefined();
    expect(s.error).toEqual({ code: 'CANCELLED', message: 'user asked', retryable: false, fault: 'agent' });
  });

  it("cancels with reason 'cancelled' when no detail is given, even over a crash", () => {
    const s = decideSettlement(task(), 1, { kind: 'crash', code: 'THREAD_CRASHED', message: 'gone' }, { reason: 'cancelled' }, noJitter);
    expect(s.event).toBe('CANCEL');
    expect(s.reason).toBe('cancelled');
    expect(s.error?.code).toBe('CANCELLED');
    expect(s.error?.message).toBe('cancelled');
  });

  it('retries a timed-out attempt while the budget lasts, with a backoff delay', () => {
    const s = decideSettlement(task(), 1, ok({ kind: 'success' }), { reason: 'timeout', detail: 'ran past 50ms' }, noJitter);
    expect(s).toMatchObject({ exit: 'timeout', event: 'REQUEUE', counts: true, reason: 'retry', retryDelayMs: 1_000 });
    expect(s.error).toEqual({ code: 'TIMEOUT', message: 'ran past 50ms', retryable: true, fault: 'agent' });
  });

  it('uses a default timeout message when no detail is given', () => {
    const s = decideSettlement(task(), 1, ok({ kind: 'success' }), { reason: 'timeout' }, noJitter);
    expect(s.error?.message).toBe('attempt timed out');
  });

  it('drops a timed-out attempt at the budget with RETRY_EXHAUSTED naming the last error', () => {
    const s = decideSettlement(task(), 3, ok({ kind: 'success' }), { reason: 'timeout', detail: 'ran past 50ms' }, noJitter);
    expect(s).toMatchObject({ exit: 'timeout', event: 'DROP', counts: true, reason: 'retry_exhausted' });
    expect(s.retryDelayMs).toBeUndefined();
    expect(s.error?.code).toBe('RETRY_EXHAUSTED');
    expect(s.error?.retryable).toBe(false);
    expect(s.error?.fault).toBe('agent');
    expect(s.error?.message).toBe('gave up after 3 attempts; last error TIMEOUT: ran past 50ms');
  });
});

describe('decideSettlement: crashes', () => {
  it.each(['THREAD_CRASHED', 'PROCESS_CRASHED'] as const)('retries a %s as an infrastructure fault', (code) => {
    const s = decideSettlement(task(), 1, { kind: 'crash', code, message: 'thread 3 exited' }, undefined, noJitter);
    expect(s).toMatchObject({ exit: 'crashed', event: 'REQUEUE', counts: true, reason: 'retry', retryDelayMs: 1_000 });
    expect(s.error).toEqual({ code, message: 'thread 3 exited', retryable: true, fault: 'infrastructure' });
  });

  it.each(['THREAD_CRASHED', 'PROCESS_CRASHED'] as const)('drops a %s at the budget, keeping the infrastructure fault', (code) => {
    const s = decideSettlement(task({ maxAttempts: 2 }), 2, { kind: 'crash', code, message: 'thread 3 exited' }, undefined, noJitter);
    expect(s).toMatchObject({ exit: 'crashed', event: 'DROP', reason: 'retry_exhausted' });
    expect(s.error?.code).toBe('RETRY_EXHAUSTED');
    expect(s.error?.fault).toBe('infrastructure');
    expect(s.error?.message).toContain(`last error ${code}: thread 3 exited`);
  });

  it('treats an abandoned attempt as a thread crash', () => {
    const s = decideSettlement(task(), 1, { kind: 'abandoned' }, undefined, noJitter);
    expect(s.exit).toBe('crashed');
    expect(s.event).toBe('REQUEUE');
    expect(s.error?.code).toBe('THREAD_CRASHED');
    expect(s.error?.fault).toBe('infrastructure');
  });
});

describe('decideSettlement: wire errors', () => {
  it('fails at once on a non-retryable error, even with attempts left', () => {
    const s = decideSettlement(task(), 1, err({ code: 'INVALID_RESULT', message: 'a function', retryable: false }), undefined, noJitter);
    expect(s).toEqual({
      exit: 'error',
      event: 'FAIL',
      counts: true,
      error: { code: 'INVALID_RESULT', message: 'a function', retryable: false, fault: 'agent' },
    });
  });

  it('retries a retryable error with the backoff of this attempt number', () => {
    const s = decideSettlement(task(), 2, err(), undefined, noJitter);
    expect(s).toMatchObject({ exit: 'error', event: 'REQUEUE', counts: true, reason: 'retry', retryDelayMs: 2_000 });
    expect(s.error?.code).toBe('AGENT_ERROR');
  });

  it('drops a retryable error at the budget; the message names the last error and keeps its stack', () => {
    const s = decideSettlement(task({ maxAttempts: 1 }), 1, err({ message: 'disk full', stack: 'Error: disk full\n at x' }), undefined, noJitter);
    expect(s.event).toBe('DROP');
    expect(s.error).toEqual({
      code: 'RETRY_EXHAUSTED',
      message: 'gave up after 1 attempt; last error AGENT_ERROR: disk full',
      retryable: false,
      fault: 'agent',
      stack: 'Error: disk full\n at x',
    });
  });

  it('drops when attempts so far exceed the budget too', () => {
    const s = decideSettlement(task({ maxAttempts: 2 }), 5, err(), undefined, noJitter);
    expect(s.event).toBe('DROP');
  });
});

describe('decideSettlement: agent results', () => {
  it('succeeds on success and passes the result through', () => {
    const result = { kind: 'success', summary: 'did it', output: { n: 1 } } as const;
    const s = decideSettlement(task(), 1, ok(result), undefined, noJitter);
    expect(s).toEqual({ exit: 'success', event: 'SUCCEED', counts: true, result });
  });

  it('succeeds on fork with exit fork', () => {
    const result = { kind: 'fork', branch: 'b', rev: 'abc' } as const;
    const s = decideSettlement(task(), 1, ok(result), undefined, noJitter);
    expect(s).toEqual({ exit: 'fork', event: 'SUCCEED', counts: true, result });
  });

  it('fails on fail with AGENT_FAILED carrying the summary, without retrying', () => {
    const result = { kind: 'fail', summary: 'tests red' } as const;
    const s = decideSettlement(task(), 1, ok(result), undefined, noJitter);
    expect(s).toEqual({
      exit: 'fail',
      event: 'FAIL',
      counts: true,
      result,
      error: { code: 'AGENT_FAILED', message: 'tests red', retryable: false, fault: 'agent' },
    });
  });

  it('uses a default message for a fail without summary', () => {
    const s = decideSettlement(task(), 1, ok({ kind: 'fail' }), undefined, noJitter);
    expect(s.error?.message).toBe('the agent reported failure');
  });

  it('sleeps on sleep', () => {
    const result = { kind: 'sleep', wakeAfterMs: 500, followUp: 'again' } as const;
    const s = decideSettlement(task(), 1, ok(result), undefined, noJitter);
    expect(s).toEqual({ exit: 'success', event: 'SLEEP', counts: true, result });
  });
});

describe('backoffDelay', () => {
  const policy = (p: Partial<RetryPolicy>): RetryPolicy => ({ ...RETRY, ...p });

  it('keeps a fixed delay for every retry', () => {
    const p = policy({ backoff: 'fixed', delayMs: 750 });
    expect([1, 2, 3, 10].map((n) => backoffDelay(p, n, noJitter))).toEqual([750, 750, 750, 750]);
  });

  it('doubles an exponential delay from delayMs', () => {
    const p = policy({ backoff: 'exponential', delayMs: 100 });
    expect([1, 2, 3, 4, 5].map((n) => backoffDelay(p, n, noJitter))).toEqual([100, 200, 400, 800, 1_600]);
  });

  it('treats 0 failed attempts like the first retry', () => {
    expect(backoffDelay(policy({ delayMs: 100 }), 0, noJitter)).toBe(100);
  });

  it('caps exponential and fixed delays at maxDelayMs', () => {
    expect(backoffDelay(policy({ delayMs: 1_000, maxDelayMs: 5_000 }), 10, noJitter)).toBe(5_000);
    expect(backoffDelay(policy({ backoff: 'fixed', delayMs: 9_000, maxDelayMs: 5_000 }), 1, noJitter)).toBe(5_000);
  });

  it('shortens by up to jitter × delay: random 0 gives the full delay, 1 gives delay × (1 - jitter)', () => {
    const p = policy({ delayMs: 1_000, jitter: 0.2 });
    expect(backoffDelay(p, 1, () => 0)).toBe(1_000);
    expect(backoffDelay(p, 1, () => 1)).toBe(800);
    expect(backoffDelay(p, 2, () => 0.5)).toBe(1_800);
  });

  it('applies jitter after the cap', () => {
    const p = policy({ delayMs: 1_000, maxDelayMs: 3_000, jitter: 0.5 });
    expect(backoffDelay(p, 5, () => 1)).toBe(1_500);
  });

  it('stays within [delay × (1 - jitter), delay] for any random in [0, 1)', () => {
    const p = policy({ delayMs: 1_000, jitter: 0.3 });
    for (let r = 0; r < 1; r += 0.05) {
      const d = backoffDelay(p, 3, () => r);
      expect(d).toBeGreaterThanOrEqual(2_800);
      expect(d).toBeLessThanOrEqual(4_000);
    }
  });

  it('returns whole milliseconds and never below zero', () => {
    const p = policy({ backoff: 'fixed', delayMs: 333, jitter: 1 });
    expect(Number.isInteger(backoffDelay(p, 1, () => 0.5))).toBe(true);
    expect(backoffDelay(p, 1, () => 1)).toBe(0);
  });

  it('feeds decideSettlement: the retry delay uses the injected random', () => {
    const s = decideSettlement(task({ jitter: 0.5 }), 1, err(), undefined, () => 1);
    expect(s.retryDelayMs).toBe(500);
  });
});
