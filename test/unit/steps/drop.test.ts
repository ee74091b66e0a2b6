import { describe, expect, it } from 'vitest';
import type { RetryPolicy, TaskRecord } from '../../../src/store/records.js';
import { decideDrop } from '../../../src/steps/drop.js';
import { decideRetry } from '../../../src/steps/retry.js';
import type { StepContext } from '../../../src/steps/types.js';

const RETRY: RetryPolicy = { maxAttempts: 3, backoff: 'exponential', delayMs: 1_000, maxDelayMs: 60_000, jitter: 0 };
const NOW = 90_000;

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const inner of Object.values(value)) deepFreeze(inner);
  }
  return value;
}

function context(firstSeq = 800): StepContext & { readonly next: number } {
  let seq = firstSeq;
  return { now: NOW, seq: () => seq++, random: () => 0, id: () => 'unused', get next() { return seq; } };
}

function taskOf(patch: Partial<TaskRecord> = {}): TaskRecord {
  return {
    id: 't1', agent: 'echo', state: 'queued', input: null, priority: 0, lane: 'default', instanceKey: 'echo/default/abc', labels: {}, timeoutMs: 0,
    retry: RETRY, runs: 1, runReason: 'submit', runCreatedAt: 500, attempts: 1, attemptSeq: 1, token: 12, queuedOrder: 10, queuedAt: 500, createdAt: 500, updatedAt: 500,
    ...patch,
  };
}

const drop = (task: TaskRecord, ctx = context()) => decideDrop(deepFreeze({ task }), deepFreeze({ degradedDropMs: 60_000 }), ctx);

describe('decideDrop', () => {
  it('dead-letters a queued task on a degraded instance: dropped, INSTANCE_DEGRADED, notify (no run record: the task holds its run)', () => {
    const task = taskOf();
    const error = { code: 'INSTANCE_DEGRADED', message: 'instance echo/default/abc stayed degraded for 60000 ms while the task was queued', retryable: false, fault: 'infrastructure' };
    expect(drop(task)).toStrictEqual({
      changes: [
        { kind: 'task', task: { ...task, state: 'dropped', updatedAt: NOW, reason: 'instance_degraded', error, settledAt: NOW } },
      ],
      events: [{ seq: 800, at: NOW, type: 'task.dropped', taskId: 't1', data: { run: 1, reason: 'instance_degraded', error, instanceKey: 'echo/default/abc' } }],
      effects: [{ kind: 'notify', taskId: 't1' }],
    });
  });

  it('writes no run record; a later retry records the dropped run with the task’s error and result as they stood', () => {
    const out = drop(taskOf({ runs: 2, result: { kind: 'sleep' } }));
    expect(out.changes.some((c) => c.kind === 'run')).toBe(false);
    const dropped = out.changes.find((c) => c.kind === 'task')!.task;
    const error = { code: 'INSTANCE_DEGRADED', message: 'instance echo/default/abc stayed degraded for 60000 ms while the task was queued', retryable: false, fault: 'infrastructure' };
    const retried = decideRetry(deepFreeze({ task: dropped, runtimeId: 'rt' }), deepFreeze({}), context());
    expect(retried.changes[0]).toStrictEqual({ kind: 'run', run: { taskId: 't1', run: 2, reason: 'submit', createdAt: 500, settledAt: NOW, outcome: 'dropped', attempts: 1, result: { kind: 'sleep' }, error } });
  });

  it('removes a per-task workspace per its keep policy', () => {
    expect(drop(taskOf({ workspace: '/w/t1', workspaceKeep: 'never' })).effects[0]).toEqual({ kind: 'clean-workspace', taskId: 't1', workspace: '/w/t1', run: 1 });
    expect(drop(taskOf({ workspace: '/w/t1', workspaceKeep: 'on_failure' })).effects).toEqual([{ kind: 'notify', taskId: 't1' }]);
  });

  it.each(['running', 'waiting', 'sleeping', 'needs_attention', 'done', 'dropped'] as const)('throws ILLEGAL_TRANSITION for a %s task, taking no seq', (state) => {
    const ctx = context();
    expect(() => drop(taskOf({ state }), ctx)).toThrow(expect.objectContaining({ code: 'ILLEGAL_TRANSITION' }));
    expect(ctx.next).toBe(800);
  });
});
