import { describe, expect, it } from 'vitest';
import type { StarvationPolicy } from '../../../src/options.js';
import type { RetryPolicy, TaskRecord } from '../../../src/store/records.js';
import { decideAttend } from '../../../src/steps/attend.js';
import type { StepContext } from '../../../src/steps/types.js';

const RETRY: RetryPolicy = { maxAttempts: 3, backoff: 'exponential', delayMs: 1_000, maxDelayMs: 60_000, jitter: 0 };
const NOW = 100_000;

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const inner of Object.values(value)) deepFreeze(inner);
  }
  return value;
}

function context(firstSeq = 900): StepContext & { readonly next: number } {
  let seq = firstSeq;
  return { now: NOW, seq: () => seq++, random: () => 0, id: () => 'unused', get next() { return seq; } };
}

function taskOf(patch: Partial<TaskRecord> = {}): TaskRecord {
  return {
    id: 't1', agent: 'echo', state: 'queued', input: null, priority: 0, lane: 'default', instanceKey: 'echo/default/abc', labels: {}, timeoutMs: 0,
    retry: RETRY, runs: 1, runReason: 'submit', runCreatedAt: 500, attempts: 0, attemptSeq: 0, token: 0, queuedOrder: 10, queuedAt: 40_000, createdAt: 500, updatedAt: 500,
    ...patch,
  };
}

const LADDER: StarvationPolicy = { minQueuedMs: 10_000, starvedAfterCycles: 2, attentionAfterCycles: 3 };
const attend = (tasks: TaskRecord[], cycle: number, ladder: StarvationPolicy = LADDER, ctx = context()) => decideAttend(deepFreeze({ tasks, cycle }), deepFreeze({ ...ladder }), ctx);

describe('decideAttend', () => {
  it('decides nothing (not even a cycle) when no task has waited past minQueuedMs', () => {
    const ctx = context();
    expect(attend([taskOf({ queuedAt: NOW - 9_999 })], 4, LADDER, ctx)).toEqual({ changes: [], events: [], effects: [] });
    expect(ctx.next).toBe(900);
  });

  it('counts from a delayed start’s runAt, not from when it was queued', () => {
    expect(attend([taskOf({ queuedAt: 0, runAt: NOW - 5_000 })], 4).changes).toEqual([]);
  });

  it('advances the cycle and records the first cycle of a task seen hungry (rung 0: no event, state and updatedAt kept)', () => {
    const task = taskOf();
    expect(attend([task], 4)).toStrictEqual({
      changes: [
        { kind: 'cycle', cycle: 5 },
        { kind: 'task', task: { ...task, ladder: { firstCycle: 5, rung: 0 } } },
      ],
      events: [],
      effects: [],
    });
  });

  it('emits task.starved once at starvedAfterCycles, without changing the state', () => {
    const task = taskOf({ ladder: { firstCycle: 5, rung: 0 } });
    const out = attend([task], 5);
    expect(out).toStrictEqual({
      changes: [
        { kind: 'cycle', cycle: 6 },
        { kind: 'task', task: { ...task, ladder: { firstCycle: 5, rung: 1 } } },
      ],
      events: [{ seq: 900, at: NOW, type: 'task.starved', taskId: 't1', data: { run: 1, agent: 'echo', queuedMs: 60_000, cycles: 2 } }],
      effects: [],
    });
  });

  it('writes nothing for a starved task between its rungs, but still advances the cycle', () => {
    const task = taskOf({ ladder: { firstCycle: 5, rung: 1 } });
    expect(attend([task], 5, { ...LADDER, attentionAfterCycles: 4 }).changes).toEqual([{ kind: 'cycle', cycle: 6 }]);
  });

  it('moves a task to needs_attention (reason starved) at attentionAfterCycles, and wakes waiters', () => {
    const task = taskOf({ ladder: { firstCycle: 5, rung: 1 } });
    expect(attend([task], 6)).toStrictEqual({
      changes: [
        { kind: 'cycle', cycle: 7 },
        { kind: 'task', task: { ...task, state: 'needs_attention', updatedAt: NOW, reason: 'starved' } },
      ],
      events: [{ seq: 900, at: NOW, type: 'task.needs_attention', taskId: 't1', data: { run: 1, reason: 'starved', agent: 'echo', queuedMs: 60_000, cycles: 3 } }],
      effects: [{ kind: 'notify', taskId: 't1' }],
    });
  });

  it('can starve and need attention in one cycle, task.starved first', () => {
    const out = attend([taskOf()], 0, { minQueuedMs: 0, starvedAfterCycles: 1, attentionAfterCycles: 1 });
    expect(out.events.map((e) => [e.seq, e.type])).toEqual([
      [900, 'task.starved'],
      [901, 'task.needs_attention'],
    ]);
    expect(out.changes[1]).toMatchObject({ task: { state: 'needs_attention', ladder: { firstCycle: 1, rung: 1 } } });
  });

  it('does not look at a starved task when the policy has no attention rung', () => {
    const ctx = context();
    const starved = taskOf({ ladder: { firstCycle: 1, rung: 1 } });
    expect(attend([starved], 9, { ...LADDER, attentionAfterCycles: 0 }, ctx).changes).toEqual([]);
    expect(ctx.next).toBe(900);
  });

  it('skips tasks that are not queued, and numbers events in task order', () => {
    const a = taskOf({ id: 'a', ladder: { firstCycle: 3, rung: 0 } });
    const b = taskOf({ id: 'b', state: 'running' });
    const c = taskOf({ id: 'c', ladder: { firstCycle: 3, rung: 0 } });
    const out = attend([a, b, c], 3);
    expect(out.events.map((e) => [e.seq, e.taskId, e.type])).toEqual([
      [900, 'a', 'task.starved'],
      [901, 'c', 'task.starved'],
    ]);
    expect(out.changes.filter((x) => x.kind === 'task')).toHaveLength(2);
  });
});
