import { describe, expect, it } from 'vitest';
import type { RetryPolicy, TaskRecord, TimerRecord } from '../../../src/store/records.js';
import { decideWake } from '../../../src/steps/wake.js';
import type { StepContext } from '../../../src/steps/types.js';

const RETRY: RetryPolicy = { maxAttempts: 3, backoff: 'exponential', delayMs: 1_000, maxDelayMs: 60_000, jitter: 0 };
const NOW = 60_000;

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const inner of Object.values(value)) deepFreeze(inner);
  }
  return value;
}

function context(firstSeq = 500): StepContext & { readonly next: number } {
  let seq = firstSeq;
  return { now: NOW, seq: () => seq++, random: () => 0, id: () => 'unused', get next() { return seq; } };
}

function taskOf(patch: Partial<TaskRecord> = {}): TaskRecord {
  return {
    id: 't1', agent: 'echo', state: 'sleeping', input: null, priority: 0, lane: 'default', instanceKey: 'echo/default/abc', labels: {}, timeoutMs: 0,
    retry: RETRY, runs: 1, runReason: 'submit', runCreatedAt: 500, attempts: 1, attemptSeq: 1, token: 33, queuedOrder: 10, queuedAt: 500, createdAt: 500, updatedAt: 1_000,
    runAt: NOW, followUp: { step: 2 }, result: { kind: 'sleep' },
    ...patch,
  };
}

const timerOf = (kind: TimerRecord['kind'], run = 1): TimerRecord => ({ id: `${kind}:t1:${run}`, due: NOW, kind, taskId: 't1', run });
const wake = (task: TaskRecord | undefined, timer: TimerRecord, ctx = context()) => decideWake(deepFreeze({ task }), deepFreeze({ timer }), ctx);

describe('decideWake', () => {
  it('wakes a sleeping task into a new run: the slept run recorded, queued, task.queued (reason wake), the timer removed', () => {
    const task = taskOf();
    const timer = timerOf('wake');
    const out = wake(task, timer);
    // The sleep's result goes with the run that slept, not the next one.
    const next = { ...task, state: 'queued', updatedAt: NOW, runs: 2, runReason: 'wake', runCreatedAt: NOW, attempts: 0, attemptSeq: 0, queuedOrder: 500, queuedAt: NOW, result: undefined, error: undefined } as TaskRecord;
    delete next.runAt;
    expect(out).toStrictEqual({
      changes: [
        { kind: 'timer', timer, armed: false },
        // The run that slept, as the task record held it (settledAt: when it went to sleep).
        { kind: 'run', run: { taskId: 't1', run: 1, reason: 'submit', createdAt: 500, settledAt: 1_000, outcome: 'sleeping', attempts: 1, result: { kind: 'sleep' }, error: undefined } },
        { kind: 'task', task: next },
      ],
      events: [{ seq: 500, at: NOW, type: 'task.queued', taskId: 't1', data: { run: 2, reason: 'wake' } }],
      effects: [],
    });
    // The next run is told what the sleep asked for.
    expect(next.followUp).toEqual({ step: 2 });
  });

  it.each(['retry', 'start'] as const)('ends a %s wait: same run, runAt cleared (runnable), no event, updatedAt kept', (kind) => {
    const task = taskOf({ state: 'queued', runAt: NOW, followUp: undefined, result: undefined });
    const timer = timerOf(kind);
    const ctx = context();
    const out = wake(task, timer, ctx);
    const next = { ...task };
    delete next.runAt;
    expect(out).toStrictEqual({ changes: [{ kind: 'timer', timer, armed: false }, { kind: 'task', task: next }], events: [], effects: [] });
    expect(ctx.next).toBe(500);
  });

  it.each([
    ['a task no longer active', undefined, timerOf('wake')],
    ['a timer of an earlier run', taskOf({ runs: 2 }), timerOf('wake', 1)],
    ['a wake for a task that is not sleeping', taskOf({ state: 'queued' }), timerOf('wake')],
    ['a retry timer for a task that is not queued', taskOf({ state: 'cancelled' }), timerOf('retry')],
  ])('only removes the timer of %s', (_name, task, timer) => {
    const ctx = context();
    expect(wake(task, timer, ctx)).toEqual({ changes: [{ kind: 'timer', timer, armed: false }], events: [], effects: [] });
    expect(ctx.next).toBe(500);
  });
});
