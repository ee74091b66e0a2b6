import { describe, expect, it } from 'vitest';
import type { RetryPolicy, TaskRecord } from '../../../src/store/records.js';
import { decideCancel } from '../../../src/steps/cancel.js';
import { decideRetry } from '../../../src/steps/retry.js';
import type { StepContext } from '../../../src/steps/types.js';

const RETRY: RetryPolicy = { maxAttempts: 3, backoff: 'exponential', delayMs: 1_000, maxDelayMs: 60_000, jitter: 0 };
const NOW = 3_000;

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const inner of Object.values(value)) deepFreeze(inner);
  }
  return value;
}

function context(firstSeq = 300): StepContext & { readonly next: number } {
  let seq = firstSeq;
  return { now: NOW, seq: () => seq++, random: () => 0, id: () => 'unused', get next() { return seq; } };
}

function taskOf(patch: Partial<TaskRecord> = {}): TaskRecord {
  return {
    id: 't1', agent: 'echo', state: 'queued', input: null, priority: 0, lane: 'default', instanceKey: 'echo/default/abc', labels: {}, timeoutMs: 0,
    retry: RETRY, runs: 1, runReason: 'submit', runCreatedAt: 500, attempts: 0, attemptSeq: 0, token: 0, queuedOrder: 10, queuedAt: 500, createdAt: 500, updatedAt: 500,
    ...patch,
  };
}

const cancel = (task: TaskRecord, liveAttemptId?: string, reason = 'cancelled', ctx = context()) => decideCancel(deepFreeze({ task, liveAttemptId }), deepFreeze({ reason }), ctx);

describe('decideCancel', () => {
  it('cancels a queued task at once: record, task.cancelled, notify (no run record: the task holds its run)', () => {
    const task = taskOf();
    const out = cancel(task, undefined, 'not needed');
    expect(out).toStrictEqual({
      changes: [
        { kind: 'task', task: { ...task, state: 'cancelled', updatedAt: NOW, reason: 'not needed', settledAt: NOW } },
      ],
      events: [{ seq: 300, at: NOW, type: 'task.cancelled', taskId: 't1', data: { run: 1, reason: 'not needed', from: 'queued' } }],
      effects: [{ kind: 'notify', taskId: 't1' }],
    });
  });

  it('stops a running task’s live attempt and changes nothing until it ends', () => {
    const ctx = context();
    const out = cancel(taskOf({ state: 'running', attemptSeq: 1, attempts: 1 }), 't1:1:1', 'user asked', ctx);
    expect(out).toEqual({ changes: [], events: [], effects: [{ kind: 'stop', attemptId: 't1:1:1', reason: 'cancelled', detail: 'user asked' }] });
    expect(ctx.next).toBe(300);
  });

  it('stops the parked attempt of a waiting task', () => {
    const out = cancel(taskOf({ state: 'waiting', waitingFor: { kind: 'input' } }), 't1:1:1');
    expect(out.effects).toEqual([{ kind: 'stop', attemptId: 't1:1:1', reason: 'cancelled', detail: 'cancelled' }]);
    expect(out.changes).toEqual([]);
  });

  it('cancels a detached waiting task (no live attempt) at once, forgetting what it waited for', () => {
    const out = cancel(taskOf({ state: 'waiting', waitingFor: { kind: 'join', ids: ['c'] } }));
    const task = out.changes[0]!.kind === 'task' ? out.changes[0].task : undefined;
    expect(task).toMatchObject({ state: 'cancelled' });
    expect(task && 'waitingFor' in task).toBe(false);
    expect(out.events[0]!.data).toEqual({ run: 1, reason: 'cancelled', from: 'waiting' });
  });

  it('takes a delayed start off its timer', () => {
    const out = cancel(taskOf({ runAt: 9_000 }));
    const timer = { id: 'start:t1:1', due: 9_000, kind: 'start', taskId: 't1', run: 1 };
    expect(out.changes).toContainEqual({ kind: 'timer', timer, armed: false });
    expect(out.effects).toEqual([{ kind: 'disarm', timer }, { kind: 'notify', taskId: 't1' }]);
    const task = out.changes.find((c) => c.kind === 'task');
    expect(task?.kind === 'task' && 'runAt' in task.task).toBe(false);
  });

  it('takes a retry backoff off its timer, keeping the last error on the task; a later retry records the run with that error', () => {
    const error = { code: 'AGENT_ERROR', message: 'boom', retryable: true, fault: 'agent' as const };
    const out = cancel(taskOf({ runs: 2, attemptSeq: 1, attempts: 1, runAt: 9_000, error }));
    expect(out.changes).toContainEqual({ kind: 'timer', timer: { id: 'retry:t1:2', due: 9_000, kind: 'retry', taskId: 't1', run: 2 }, armed: false });
    expect(out.changes).toContainEqual({ kind: 'task', task: expect.objectContaining({ error }) });
    expect(out.changes.some((c) => c.kind === 'run')).toBe(false);
    // The cancelled run is written when the next begins, from the task as it was cancelled.
    const cancelled = out.changes.find((c) => c.kind === 'task')!.task;
    const retried = decideRetry(deepFreeze({ task: cancelled, runtimeId: 'rt' }), deepFreeze({}), context());
    expect(retried.changes[0]).toStrictEqual({ kind: 'run', run: { taskId: 't1', run: 2, reason: 'submit', createdAt: 500, settledAt: NOW, outcome: 'cancelled', attempts: 1, result: undefined, error } });
  });

  it('takes a sleeping task off its wake timer', () => {
    const out = cancel(taskOf({ state: 'sleeping', runAt: 60_000, attemptSeq: 1, attempts: 1 }));
    expect(out.changes).toContainEqual({ kind: 'timer', timer: { id: 'wake:t1:1', due: 60_000, kind: 'wake', taskId: 't1', run: 1 }, armed: false });
    expect(out.events[0]!.data).toEqual({ run: 1, reason: 'cancelled', from: 'sleeping' });
  });

  it('cancels a task that needs attention, removing the per-task workspace', () => {
    const out = cancel(taskOf({ state: 'needs_attention', reason: 'starved', workspace: '/w/t1', workspaceKeep: 'never' }));
    expect(out.changes[0]).toMatchObject({ task: { state: 'cancelled', reason: 'cancelled' } });
    expect(out.effects).toEqual([
      { kind: 'clean-workspace', taskId: 't1', workspace: '/w/t1', run: 1 },
      { kind: 'notify', taskId: 't1' },
    ]);
  });

  it('cancels a running task with no live attempt at once', () => {
    const out = cancel(taskOf({ state: 'running', attemptSeq: 1, attempts: 1 }));
    expect(out.events[0]).toMatchObject({ type: 'task.cancelled', data: { from: 'running' } });
  });

  it.each(['done', 'failed', 'dropped', 'cancelled'] as const)('throws ILLEGAL_TRANSITION for a %s task, taking no seq', (state) => {
    const ctx = context();
    expect(() => cancel(taskOf({ state }), undefined, 'x', ctx)).toThrow(expect.objectContaining({ code: 'ILLEGAL_TRANSITION' }));
    expect(ctx.next).toBe(300);
  });
});
