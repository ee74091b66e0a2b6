import { describe, expect, it } from 'vitest';
import type { TaskState } from '../../../machines/index.js';
import type { RetryPolicy, TaskRecord } from '../../../src/store/records.js';
import { decideStart } from '../../../src/steps/start.js';
import type { StepContext } from '../../../src/steps/types.js';

const RETRY: RetryPolicy = { maxAttempts: 3, backoff: 'exponential', delayMs: 1_000, maxDelayMs: 60_000, jitter: 0 };

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const inner of Object.values(value)) deepFreeze(inner);
  }
  return value;
}

function context(now = 2_000, firstSeq = 70): StepContext & { readonly next: number } {
  let seq = firstSeq;
  return { now, seq: () => seq++, random: () => 0, id: () => 'unused', get next() { return seq; } };
}

function taskOf(patch: Partial<TaskRecord> = {}): TaskRecord {
  return {
    id: 't1', agent: 'echo', state: 'queued', input: null, priority: 0, lane: 'default', instanceKey: 'echo/default/abc', labels: {}, timeoutMs: 0,
    retry: RETRY, runs: 1, runReason: 'submit', runCreatedAt: 500, attempts: 0, attemptSeq: 0, token: 0, queuedOrder: 10, queuedAt: 1_500, createdAt: 500, updatedAt: 500,
    ...patch,
  };
}

const viewOf = (task: TaskRecord) => deepFreeze({ task, runtimeId: 'rt', leaseMs: 30_000 });

describe('decideStart', () => {
  it('starts the next attempt: running, counted, token = seq of task.started, then dispatch', () => {
    const ctx = context();
    const task = taskOf();
    const out = decideStart(viewOf(task), deepFreeze({}), ctx);
    expect(out).toEqual({
      changes: [
        { kind: 'task', task: { ...task, state: 'running', updatedAt: 2_000, attemptSeq: 1, attempts: 1, startedAt: 2_000, runAt: undefined, token: 70 } },
      ],
      events: [{ seq: 70, at: 2_000, type: 'task.started', taskId: 't1', attemptId: 't1:1:1', data: { run: 1, attempt: 1, queuedMs: 500 } }],
      effects: [
        {
          kind: 'dispatch',
          taskId: 't1',
          attemptId: 't1:1:1',
          attempt: { taskId: 't1', run: 1, attempt: 1, attemptId: 't1:1:1', token: 70, owner: 'rt', startedAt: 2_000, leaseExpiresAt: 32_000, endedAt: undefined, exit: undefined, error: undefined },
        },
      ],
    });
    expect(ctx.next).toBe(71);
  });

  it('keeps the first startedAt, numbers attempts within the run, and clears a spent runAt', () => {
    const task = taskOf({ runs: 2, attemptSeq: 3, attempts: 2, startedAt: 100, runAt: 1_900, token: 55 });
    const out = decideStart(viewOf(task), deepFreeze({}), context());
    expect(out.changes[0]).toMatchObject({ task: { startedAt: 100, attemptSeq: 4, attempts: 3, token: 70 } });
    expect(out.changes[0]!.kind === 'task' && out.changes[0].task.runAt).toBeUndefined();
    expect(out.events[0]).toMatchObject({ attemptId: 't1:2:4', data: { run: 2, attempt: 4 } });
  });

  it('measures queuedMs from createdAt when the task was never stamped queued', () => {
    const out = decideStart(viewOf(taskOf({ queuedAt: undefined })), deepFreeze({}), context());
    expect(out.events[0]!.data).toEqual({ run: 1, attempt: 1, queuedMs: 1_500 });
  });

  it('commits the spent flow state with the start', () => {
    const flow = { tokens: 4, refilledAt: 2_000, fastFails: 0 };
    const out = decideStart(viewOf(taskOf()), deepFreeze({ flow }), context());
    expect(out.changes).toHaveLength(2);
    expect(out.changes[1]).toEqual({ kind: 'flow', agent: 'echo', state: flow });
  });

  it.each<TaskState>(['running', 'waiting', 'sleeping', 'needs_attention', 'done', 'failed', 'dropped', 'cancelled'])('refuses to start a %s task, deciding nothing', (state) => {
    const ctx = context();
    expect(() => decideStart(viewOf(taskOf({ state })), deepFreeze({}), ctx)).toThrow(expect.objectContaining({ code: 'ILLEGAL_TRANSITION' }));
    expect(ctx.next).toBe(70);
  });
});

describe('record shapes', () => {
  it('a started task and its attempt keep the shape they were created with (one hidden class, one stored structure)', async () => {
    const { createTaskRecord } = await import('../../../src/store/records.js');
    const { decideStart } = await import('../../../src/steps/start.js');
    const { decideSettle } = await import('../../../src/steps/settle.js');
    const { endedAttemptOf } = await import('../../../src/steps/common.js');
    const task = { ...createTaskRecord({ id: 'T', agent: 'a', state: 'queued', input: null, priority: 0, lane: 'default', instanceKey: 'k', labels: {}, timeoutMs: 0, retry: { maxAttempts: 1, backoff: 'fixed', delayMs: 0, maxDelayMs: 0, jitter: 0 }, runReason: 'submit', createdAt: 1 }), queuedAt: 1 };
    let seq = 10;
    const ctx = { now: 5, seq: () => seq++, random: () => 0, id: () => 'X' };
    const started = decideStart({ task, runtimeId: 'r', leaseMs: 100 }, {}, ctx);
    const running = started.changes.find((c) => c.kind === 'task')!.task;
    // The start writes no attempt record: the attempt travels in the dispatch effect.
    expect(started.changes.some((c) => c.kind === 'attempt')).toBe(false);
    const attempt = started.effects.find((e) => e.kind === 'dispatch')!.attempt;
    expect(Object.keys(running)).toEqual(Object.keys(task));
    const settled = decideSettle({ task: running, attempt }, { settlement: { exit: 'success', event: 'SUCCEED', counts: true, result: { kind: 'success', output: 1 } } }, ctx);
    const done = settled.changes.find((c) => c.kind === 'task')!.task;
    // The settled task holds its final attempt; the record it gives has the started one's shape.
    expect(settled.changes.some((c) => c.kind === 'attempt')).toBe(false);
    const ended = endedAttemptOf(done, 'r')!;
    expect(Object.keys(done)).toEqual(Object.keys(task));
    expect(Object.keys(ended)).toEqual(Object.keys(attempt));
  });
});
