import { describe, expect, it } from 'vitest';
import type { RetryPolicy, TaskRecord } from '../../../src/store/records.js';
import { decideProgress } from '../../../src/steps/progress.js';
import type { StepContext } from '../../../src/steps/types.js';

const RETRY: RetryPolicy = { maxAttempts: 3, backoff: 'exponential', delayMs: 1_000, maxDelayMs: 60_000, jitter: 0 };
const NOW = 100_000;

function context(firstSeq = 900): StepContext & { readonly next: number } {
  let seq = firstSeq;
  return { now: NOW, seq: () => seq++, random: () => 0, id: () => 'unused', get next() { return seq; } };
}

const running: TaskRecord = Object.freeze({
  id: 't1', agent: 'echo', state: 'running', input: null, priority: 0, lane: 'default', instanceKey: 'echo/default/abc', labels: {}, timeoutMs: 0,
  retry: RETRY, runs: 1, runReason: 'submit', runCreatedAt: 500, attempts: 1, attemptSeq: 1, token: 7, queuedOrder: 10, queuedAt: 400, createdAt: 500, updatedAt: 600,
}) as TaskRecord;

describe('decideProgress', () => {
  it('gives a new version of the task with the progress, never the view changed, and its event at the reported time', () => {
    const ctx = context();
    const out = decideProgress({ task: running }, { attemptId: 't1:1:1', value: 0.5, message: 'half', at: 99_000 }, ctx);
    expect(out.changes).toEqual([{ kind: 'task', task: { ...running, progress: { value: 0.5, message: 'half', at: 99_000 } } }]);
    expect((out.changes[0] as { task: TaskRecord }).task).not.toBe(running);
    expect(running.progress).toBeUndefined();
    expect(out.events).toEqual([{ seq: 900, at: 99_000, type: 'task.progress', taskId: 't1', attemptId: 't1:1:1', data: { value: 0.5, message: 'half' } }]);
    expect(out.effects).toEqual([]);
    expect(ctx.next).toBe(901);
  });

  it('leaves the message out of the stored progress when the agent gave none, and keeps the state and updatedAt', () => {
    const out = decideProgress({ task: running }, { attemptId: 't1:1:1', value: 3, at: 99_500 }, context());
    const task = (out.changes[0] as { task: TaskRecord }).task;
    expect(task.progress).toStrictEqual({ value: 3, at: 99_500 });
    expect(task.state).toBe('running');
    expect(task.updatedAt).toBe(600);
  });
});
