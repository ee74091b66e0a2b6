import { describe, expect, it } from 'vitest';
import type { RetryPolicy, TaskRecord } from '../../../src/store/records.js';
import { decidePrune } from '../../../src/steps/prune.js';
import type { StepContext } from '../../../src/steps/types.js';

const RETRY: RetryPolicy = { maxAttempts: 3, backoff: 'exponential', delayMs: 1_000, maxDelayMs: 60_000, jitter: 0 };
const ctx: StepContext = { now: 100_000, seq: () => 900, random: () => 0, id: () => 'unused' };

function taskOf(patch: Partial<TaskRecord> = {}): TaskRecord {
  return Object.freeze({
    id: 't1', agent: 'echo', state: 'done', input: null, priority: 0, lane: 'default', instanceKey: 'echo/default/abc', labels: {}, timeoutMs: 0,
    retry: RETRY, runs: 2, runReason: 'retry', runCreatedAt: 500, attempts: 1, attemptSeq: 1, token: 7, queuedOrder: 10, createdAt: 500, updatedAt: 600, settledAt: 600,
    ...patch,
  }) as TaskRecord;
}

describe('decidePrune', () => {
  it('removes the record and every key it is given, the task and input idempotency keys, and takes no seq', () => {
    const out = decidePrune(
      {
        task: taskOf({ idempotencyKey: 'k1' }),
        runs: [['t1', 1], ['t1', 2]],
        attempts: [['t1', 1, 1], ['t1', 2, 1]],
        logs: [['t1', 1, 1, 0]],
        inbox: [{ seq: 1, idempotencyKey: 'in-a' }, { seq: 2 }],
      },
      undefined,
      { ...ctx, seq: () => { throw new Error('no seq'); } },
    );
    expect(out.changes).toEqual([
      { kind: 'remove', db: 'tasks', key: 't1' },
      { kind: 'remove', db: 'runs', key: ['t1', 1] },
      { kind: 'remove', db: 'runs', key: ['t1', 2] },
      { kind: 'remove', db: 'attempts', key: ['t1', 1, 1] },
      { kind: 'remove', db: 'attempts', key: ['t1', 2, 1] },
      { kind: 'remove', db: 'logs', key: ['t1', 1, 1, 0] },
      { kind: 'remove', db: 'inbox', key: ['t1', 1] },
      { kind: 'remove', db: 'idempotency', key: 'input:t1:in-a' },
      { kind: 'remove', db: 'inbox', key: ['t1', 2] },
      { kind: 'remove', db: 'idempotency', key: 'k1' },
      { kind: 'unindex', task: taskOf({ idempotencyKey: 'k1' }) },
    ]);
    expect(out.events).toEqual([]);
    expect(out.effects).toEqual([]);
  });

  it("removes a child's entry in its parent's children index", () => {
    const out = decidePrune({ task: taskOf({ parentId: 'P1' }), runs: [], attempts: [], logs: [], inbox: [] }, undefined, ctx);
    expect(out.changes).toEqual([
      { kind: 'remove', db: 'tasks', key: 't1' },
      { kind: 'remove', db: 'children', key: ['P1', 't1'] },
      { kind: 'unindex', task: taskOf({ parentId: 'P1' }) },
    ]);
  });

  it('removes a workspace Troupe made and kept, and leaves a user-given one alone', () => {
    const made = decidePrune({ task: taskOf({ workspace: '/w/t1', workspaceKeep: 'always' }), runs: [], attempts: [], logs: [], inbox: [] }, undefined, ctx);
    expect(made.effects).toEqual([{ kind: 'clean-workspace', taskId: 't1', workspace: '/w/t1', run: 2 }]);
    const given = decidePrune({ task: taskOf({ workspace: '/home/me/repo' }), runs: [], attempts: [], logs: [], inbox: [] }, undefined, ctx);
    expect(given.effects).toEqual([]);
  });

  it.each(['queued', 'running', 'waiting', 'sleeping', 'needs_attention'] as const)('refuses a task that is %s', (state) => {
    expect(() => decidePrune({ task: taskOf({ state }), runs: [], attempts: [], logs: [], inbox: [] }, undefined, ctx)).toThrow(expect.objectContaining({ code: 'ILLEGAL_TRANSITION' }));
  });
});
