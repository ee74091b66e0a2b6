import { describe, expect, it } from 'vitest';
import type { InboxRecord, RetryPolicy, TaskRecord } from '../../../src/store/records.js';
import { decidePark, type ParkInput } from '../../../src/steps/park.js';
import type { StepContext } from '../../../src/steps/types.js';

const RETRY: RetryPolicy = { maxAttempts: 3, backoff: 'exponential', delayMs: 1_000, maxDelayMs: 60_000, jitter: 0 };
const NOW = 4_000;

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const inner of Object.values(value)) deepFreeze(inner);
  }
  return value;
}

function context(firstSeq = 600): StepContext & { readonly next: number } {
  let seq = firstSeq;
  return { now: NOW, seq: () => seq++, random: () => 0, id: () => 'unused', get next() { return seq; } };
}

function taskOf(patch: Partial<TaskRecord> = {}): TaskRecord {
  return {
    id: 't1', agent: 'ask', state: 'running', input: null, priority: 0, lane: 'default', instanceKey: 'ask/default/abc', labels: {}, timeoutMs: 0,
    retry: RETRY, runs: 1, runReason: 'submit', runCreatedAt: 500, attempts: 1, attemptSeq: 1, token: 44, queuedOrder: 10, queuedAt: 500, createdAt: 500, updatedAt: 1_000,
    ...patch,
  };
}

const park = (task: TaskRecord, input: ParkInput, ctx = context()) => decidePark(deepFreeze({ task, attemptId: 't1:1:1' }), deepFreeze(input), ctx);

describe('decidePark', () => {
  it('parks an agent waiting for input: waiting with the prompt, task.waiting, notify', () => {
    const task = taskOf();
    const out = park(task, { kind: 'input', prompt: { q: 'name?' } });
    expect(out).toStrictEqual({
      changes: [{ kind: 'task', task: { ...task, state: 'waiting', updatedAt: NOW, waitingFor: { kind: 'input', prompt: { q: 'name?' } } } }],
      events: [{ seq: 600, at: NOW, type: 'task.waiting', taskId: 't1', attemptId: 't1:1:1', data: { for: 'input', prompt: { q: 'name?' } } }],
      effects: [{ kind: 'notify', taskId: 't1' }],
    });
  });

  it('stores no prompt key when the agent gave none', () => {
    const out = park(taskOf(), { kind: 'input' });
    expect(out.changes[0]).toStrictEqual({ kind: 'task', task: expect.objectContaining({ waitingFor: { kind: 'input' } }) });
    expect(out.events[0]!.data).toStrictEqual({ for: 'input', prompt: undefined });
  });

  it('hands over a pending input instead of waiting, recording its delivery', () => {
    const task = taskOf({ inbox: 2, delivered: 1 });
    const pending: InboxRecord = { seq: 2, message: 'Ada', at: 3_000 };
    const ctx = context();
    const out = park(task, { kind: 'input', prompt: 'name?', pending }, ctx);
    expect(out).toStrictEqual({
      changes: [
        { kind: 'inbox', taskId: 't1', item: { seq: 2, message: 'Ada', at: 3_000, deliveredAt: NOW, deliveredTo: 't1:1:1' } },
        { kind: 'task', task: { ...task, delivered: 2 } },
      ],
      events: [],
      effects: [],
    });
    expect(ctx.next).toBe(600);
  });

  it('fails with STORE_FAILED when an input is pending but its item was not found', () => {
    expect(() => park(taskOf({ inbox: 1 }), { kind: 'input' })).toThrow(expect.objectContaining({ code: 'STORE_FAILED' }));
  });

  it('parks an agent joining children: waiting for the ids, task.waiting, notify', () => {
    const task = taskOf();
    const out = park(task, { kind: 'join', ids: ['c1', 'c2'] });
    expect(out).toStrictEqual({
      changes: [{ kind: 'task', task: { ...task, state: 'waiting', updatedAt: NOW, waitingFor: { kind: 'join', ids: ['c1', 'c2'] } } }],
      events: [{ seq: 600, at: NOW, type: 'task.waiting', taskId: 't1', attemptId: 't1:1:1', data: { for: 'join', ids: ['c1', 'c2'] } }],
      effects: [{ kind: 'notify', taskId: 't1' }],
    });
  });

  it.each(['waiting', 'queued', 'sleeping', 'done'] as const)('throws ILLEGAL_TRANSITION for a %s task (an agent already waiting cannot wait again)', (state) => {
    const ctx = context();
    expect(() => park(taskOf({ state, inbox: 1 }), { kind: 'input', pending: { seq: 1, message: 'x', at: 1 } }, ctx)).toThrow(expect.objectContaining({ code: 'ILLEGAL_TRANSITION' }));
    expect(() => park(taskOf({ state }), { kind: 'join', ids: ['c1'] }, ctx)).toThrow(expect.objectContaining({ code: 'ILLEGAL_TRANSITION' }));
    expect(ctx.next).toBe(600);
  });
});
