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
      { kind: 'remove', db: 'settled', key: ['echo', 'done', 600, 't1'] },
      { kind: 'remove', db: 'listed', key: ['echo', 'done', 't1'] },
    ]);
    expect(out.events).toEqual([]);
    expect(out.effects).toEqual([]);
  });

  it("removes a child's entry in its parent's children index", () => {
    const out = decidePrune({ task: taskOf({ parentId: 'P1' }), runs: [], attempts: [], logs: [], inbox: [] }, undefined, ctx);
    expect(out.changes).toEqual([
      { kind: 'remove', db: 'tasks', key: 't1' },
      { kind: 'remove', db: 'children', key: ['P1', 't1'] },
      { kind: 'remove', db: 'settled', key: ['echo', 'done', 600, 't1'] },
      { kind: 'remove', db: 'listed', key: ['echo', 'done', 't1'] },
    ]);
  });

  it("removes a task's entries in list()'s label index, one per label short enough to be indexed", () => {
    const long = 'x'.repeat(2_000);
    const out = decidePrune({ task: taskOf({ labels: { model: 'opus', team: 'a', huge: long } }), runs: [], attempts: [], logs: [], inbox: [] }, undefined, ctx);
    expect(out.changes.filter((c) => c.kind === 'remove' && c.db === 'labelled')).toEqual([
      { kind: 'remove', db: 'labelled', key: ['model', 'opus', 't1'] },
      { kind: 'remove', db: 'labelled', key: ['team', 'a', 't1'] },
    ]);
  });

  it('removes the retention entry of a task under its own rule from the expiry index, one kept for good too (at Infinity)', () => {
    const own = decidePrune({ task: taskOf({ retention: { done: 1_000 } }), runs: [], attempts: [], logs: [], inbox: [] }, undefined, ctx);
    expect(own.changes).toEqual([
      { kind: 'remove', db: 'tasks', key: 't1' },
      { kind: 'remove', db: 'expiry', key: [1_600, 't1'] },
      { kind: 'remove', db: 'listed', key: ['echo', 'done', 't1'] },
    ]);
    const forever = decidePrune({ task: taskOf({ retention: { done: Infinity } }), runs: [], attempts: [], logs: [], inbox: [] }, undefined, ctx);
    expect(forever.changes).toEqual([
      { kind: 'remove', db: 'tasks', key: 't1' },
      { kind: 'remove', db: 'expiry', key: [Infinity, 't1'] },
      { kind: 'remove', db: 'listed', key: ['echo', 'done', 't1'] },
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
