import { describe, expect, it } from 'vitest';
import type { RetryPolicy, TaskRecord } from '../../../src/store/records.js';
import { decideRetry } from '../../../src/steps/retry.js';
import type { StepContext } from '../../../src/steps/types.js';

const RETRY: RetryPolicy = { maxAttempts: 3, backoff: 'exponential', delayMs: 1_000, maxDelayMs: 60_000, jitter: 0 };
const NOW = 8_000;

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const inner of Object.values(value)) deepFreeze(inner);
  }
  return value;
}

function context(firstSeq = 400): StepContext & { readonly next: number } {
  let seq = firstSeq;
  return { now: NOW, seq: () => seq++, random: () => 0, id: () => 'unused', get next() { return seq; } };
}

function taskOf(patch: Partial<TaskRecord> = {}): TaskRecord {
  return {
    id: 't1', agent: 'echo', state: 'failed', input: null, priority: 0, lane: 'default', instanceKey: 'echo/default/abc', labels: {}, timeoutMs: 0,
    retry: RETRY, runs: 1, runReason: 'submit', runCreatedAt: 500, attempts: 3, attemptSeq: 4, token: 77, queuedOrder: 10, queuedAt: 500, createdAt: 500, updatedAt: 500,
    ...patch,
  };
}

describe('decideRetry: a settled task starts a new run', () => {
  it.each(['failed', 'dropped', 'cancelled'] as const)('%s → the ended run recorded, queued, run 2, outcome fields cleared', (from) => {
    const error = { code: 'X', message: 'm', retryable: false, fault: 'agent' } as const;
    const task = taskOf({
      state: from,
      error,
      result: { kind: 'fail' },
      output: 1,
      reason: 'r',
      settledAt: 4_000,
      progress: { value: 0.5, at: 3_000 },
      followUp: { f: 1 },
      startedAt: 1_000,
      ladder: { firstCycle: 1, rung: 1 },
    });
    const ctx = context();
    const out = decideRetry(deepFreeze({ task, runtimeId: 'rt' }), deepFreeze({}), ctx);
    expect(out).toStrictEqual({
      changes: [
        // The run that ended, as the task record held it, written now that the next begins.
        { kind: 'run', run: { taskId: 't1', run: 1, reason: 'submit', createdAt: 500, settledAt: 4_000, outcome: from, attempts: 3, result: { kind: 'fail' }, error } },
        {
          kind: 'task',
          task: {
            id: 't1', agent: 'echo', state: 'queued', input: null, priority: 0, lane: 'default', instanceKey: 'echo/default/abc', labels: {}, timeoutMs: 0,
            retry: RETRY, runs: 2, runReason: 'retry', runCreatedAt: NOW, attempts: 0, attemptSeq: 0, token: 77, queuedOrder: 400, queuedAt: NOW, createdAt: 500, updatedAt: NOW,
          },
        },
        // Not settled any more: its entries in the indexes of settled tasks go.
        { kind: 'unindex', task },
      ],
      events: [{ seq: 400, at: NOW, type: 'task.queued', taskId: 't1', data: { run: 2, reason: 'retry', from } }],
      effects: [],
    });
  });

  it.each(['queued', 'running', 'waiting', 'sleeping', 'done'] as const)('throws ILLEGAL_TRANSITION for a %s task, taking no seq', (state) => {
    const ctx = context();
    expect(() => decideRetry(deepFreeze({ task: taskOf({ state }), runtimeId: 'rt' }), deepFreeze({}), ctx)).toThrow(expect.objectContaining({ code: 'ILLEGAL_TRANSITION' }));
    expect(ctx.next).toBe(400);
  });
});

describe('decideRetry: a task that needs attention is requeued in the same run', () => {
  it('requeues a starved task as an operator decision, with a fresh ladder', () => {
    const task = taskOf({ state: 'needs_attention', reason: 'starved', attempts: 0, attemptSeq: 0, ladder: { firstCycle: 2, rung: 1 } });
    const out = decideRetry(deepFreeze({ task, runtimeId: 'rt' }), deepFreeze({}), context());
    const next = { ...task, state: 'queued', updatedAt: NOW, queuedOrder: 400, queuedAt: NOW } as TaskRecord;
    delete next.reason;
    delete next.ladder;
    expect(out).toStrictEqual({
      changes: [{ kind: 'task', task: next }],
      events: [{ seq: 400, at: NOW, type: 'task.queued', taskId: 't1', data: { run: 1, reason: 'operator', from: 'starved', agent: 'echo' } }],
      effects: [],
    });
  });

  it('routes an unmatched task to the agent the caller found, applying its policy', () => {
    const task = taskOf({ state: 'needs_attention', reason: 'unmatched', agent: '', instanceKey: '', requires: ['gpu'], unrouted: { timeoutMs: 9 }, attempts: 0, attemptSeq: 0, queuedOrder: 0 });
    const routed = { agent: 'gpu-runner', instanceKey: 'gpu-runner/default/xyz', retry: { ...RETRY, maxAttempts: 5 }, timeoutMs: 9 };
    const out = decideRetry(deepFreeze({ task, runtimeId: 'rt' }), deepFreeze({ routed }), context());
    const next = out.changes[0]!.kind === 'task' ? out.changes[0].task : undefined;
    expect(next).toMatchObject({ state: 'queued', ...routed, requires: ['gpu'], runs: 1 });
    expect(next && ('unrouted' in next || 'reason' in next)).toBe(false);
    expect(out.events[0]!.data).toEqual({ run: 1, reason: 'operator', from: 'unmatched', agent: 'gpu-runner' });
  });
});
