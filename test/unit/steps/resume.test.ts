import { describe, expect, it } from 'vitest';
import type { RetryPolicy, TaskRecord } from '../../../src/store/records.js';
import { decideResume, type ResumeInput, type ResumeView } from '../../../src/steps/resume.js';
import type { StepContext } from '../../../src/steps/types.js';

const RETRY: RetryPolicy = { maxAttempts: 3, backoff: 'exponential', delayMs: 1_000, maxDelayMs: 60_000, jitter: 0 };
const NOW = 7_000;

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const inner of Object.values(value)) deepFreeze(inner);
  }
  return value;
}

function context(firstSeq = 700): StepContext & { readonly next: number } {
  let seq = firstSeq;
  return { now: NOW, seq: () => seq++, random: () => 0, id: () => 'unused', get next() { return seq; } };
}

function waiting(patch: Partial<TaskRecord> = {}): TaskRecord {
  return {
    id: 't1', agent: 'ask', state: 'waiting', input: null, priority: 0, lane: 'default', instanceKey: 'ask/default/abc', labels: {}, timeoutMs: 0,
    retry: RETRY, runs: 1, runReason: 'submit', runCreatedAt: 500, attempts: 1, attemptSeq: 1, token: 44, queuedOrder: 10, queuedAt: 500, createdAt: 500, updatedAt: 1_000,
    waitingFor: { kind: 'input', prompt: 'name?' },
    ...patch,
  };
}

const PARKED = { attemptId: 't1:1:1', parked: true, stopping: false };
const resume = (task: TaskRecord, live: ResumeView['live'], input: ResumeInput, ctx = context()) => decideResume(deepFreeze({ task, live }), deepFreeze(input), ctx);

/** The task as a new run resumed at NOW, its FIFO order `order`. */
function newRun(task: TaskRecord, order: number, patch: Partial<TaskRecord> = {}): TaskRecord {
  const next = { ...task, state: 'queued', updatedAt: NOW, runs: task.runs + 1, runReason: 'resume', runCreatedAt: NOW, attempts: 0, attemptSeq: 0, queuedOrder: order, queuedAt: NOW, ...patch } as TaskRecord;
  delete next.waitingFor;
  return next;
}

describe('decideResume: an input arrives', () => {
  it('delivers it at once to an agent parked on input: running again, delivered, task.input, notify', () => {
    const task = waiting();
    const out = resume(task, PARKED, { kind: 'input', message: 'Ada', idempotencyKey: 'k1' });
    const next = { ...task, state: 'running', updatedAt: NOW, delivered: 1, inbox: 1 } as TaskRecord;
    delete next.waitingFor;
    expect(out).toStrictEqual({
      changes: [
        { kind: 'inbox', taskId: 't1', item: { seq: 1, message: 'Ada', at: NOW, idempotencyKey: 'k1', deliveredAt: NOW, deliveredTo: 't1:1:1' } },
        { kind: 'input-key', key: 'input:t1:k1', taskId: 't1', seq: 1 },
        { kind: 'task', task: next },
      ],
      events: [{ seq: 700, at: NOW, type: 'task.input', taskId: 't1', data: { seq: 1, idempotencyKey: 'k1', delivered: true } }],
      effects: [{ kind: 'notify', taskId: 't1' }],
    });
  });

  it('resumes a waiting task with no live attempt as a new run: task.input, then task.queued', () => {
    const task = waiting({ inbox: 1, delivered: 1 });
    const out = resume(task, undefined, { kind: 'input', message: 'again' });
    expect(out).toStrictEqual({
      changes: [
        { kind: 'inbox', taskId: 't1', item: { seq: 2, message: 'again', at: NOW } },
        { kind: 'task', task: newRun(task, 701, { inbox: 2 }) },
      ],
      events: [
        { seq: 700, at: NOW, type: 'task.input', taskId: 't1', data: { seq: 2, idempotencyKey: undefined, delivered: false } },
        { seq: 701, at: NOW, type: 'task.queued', taskId: 't1', data: { run: 2, reason: 'resume' } },
      ],
      effects: [{ kind: 'notify', taskId: 't1' }],
    });
  });

  it('only stores an input for an agent that is stopping', () => {
    const task = waiting();
    const out = resume(task, { ...PARKED, stopping: true }, { kind: 'input', message: 'late' });
    expect(out.changes).toStrictEqual([
      { kind: 'inbox', taskId: 't1', item: { seq: 1, message: 'late', at: NOW } },
      { kind: 'task', task: { ...task, inbox: 1 } },
    ]);
    expect(out.events[0]!.data).toMatchObject({ delivered: false });
    expect(out.effects).toEqual([]);
  });

  it('only stores an input that is not next in line (an earlier one is pending)', () => {
    const out = resume(waiting({ inbox: 1 }), PARKED, { kind: 'input', message: 'second' });
    expect(out.changes[1]).toMatchObject({ task: { state: 'waiting', inbox: 2 } });
  });

  it.each(['running', 'queued', 'sleeping', 'needs_attention'] as const)('stores an input for a %s task in its inbox without changing its state or updatedAt', (state) => {
    const task = waiting({ state, waitingFor: undefined });
    const out = resume(task, state === 'running' ? { ...PARKED, parked: false } : undefined, { kind: 'input', message: 'fyi' });
    expect(out.changes).toStrictEqual([
      { kind: 'inbox', taskId: 't1', item: { seq: 1, message: 'fyi', at: NOW } },
      { kind: 'task', task: { ...task, inbox: 1 } },
    ]);
  });

  it('does not resume a task waiting on a join when an input arrives', () => {
    const out = resume(waiting({ waitingFor: { kind: 'join', ids: ['c1'] } }), undefined, { kind: 'input', message: 'x' });
    expect(out.changes[1]).toMatchObject({ task: { state: 'waiting' } });
    expect(out.events.map((e) => e.type)).toEqual(['task.input']);
  });

  it.each(['done', 'failed', 'dropped', 'cancelled'] as const)('throws ILLEGAL_TRANSITION for an input to a %s task', (state) => {
    const ctx = context();
    expect(() => resume(waiting({ state }), undefined, { kind: 'input', message: 'x' }, ctx)).toThrow(expect.objectContaining({ code: 'ILLEGAL_TRANSITION', message: 'task t1 is ' + state + '; it takes no more input' }));
    expect(ctx.next).toBe(700);
  });
});

describe('decideResume: what a waiting task waits for is there', () => {
  it('runs a parked agent again when its joined tasks settled (no event)', () => {
    const task = waiting({ waitingFor: { kind: 'join', ids: ['c1'] } });
    const out = resume(task, PARKED, { kind: 'ready' });
    const next = { ...task, state: 'running', updatedAt: NOW } as TaskRecord;
    delete next.waitingFor;
    expect(out).toStrictEqual({ changes: [{ kind: 'task', task: next }], events: [], effects: [{ kind: 'notify', taskId: 't1' }] });
  });

  it('starts a new run when no attempt is live (detached join, or a waiting task found at open)', () => {
    const task = waiting({ waitingFor: { kind: 'join', ids: ['c1'] } });
    const out = resume(task, undefined, { kind: 'ready' });
    expect(out).toStrictEqual({
      changes: [{ kind: 'task', task: newRun(task, 700) }],
      events: [{ seq: 700, at: NOW, type: 'task.queued', taskId: 't1', data: { run: 2, reason: 'resume' } }],
      effects: [{ kind: 'notify', taskId: 't1' }],
    });
  });

  it('leaves a task alone whose live attempt is not parked (it is ending)', () => {
    const ctx = context();
    expect(resume(waiting(), { ...PARKED, parked: false }, { kind: 'ready' }, ctx)).toEqual({ changes: [], events: [], effects: [] });
    expect(ctx.next).toBe(700);
  });

  it('runs again an agent that gave up waiting (unwait); nothing without a parked attempt', () => {
    const out = resume(waiting(), PARKED, { kind: 'unwait' });
    expect(out.changes[0]).toMatchObject({ task: { state: 'running', updatedAt: NOW } });
    expect(resume(waiting(), undefined, { kind: 'unwait' })).toEqual({ changes: [], events: [], effects: [] });
  });

  it.each(['running', 'queued', 'needs_attention', 'done'] as const)('throws ILLEGAL_TRANSITION for ready/unwait on a %s task', (state) => {
    const ctx = context();
    expect(() => resume(waiting({ state }), undefined, { kind: 'ready' }, ctx)).toThrow(expect.objectContaining({ code: 'ILLEGAL_TRANSITION' }));
    expect(() => resume(waiting({ state }), PARKED, { kind: 'unwait' }, ctx)).toThrow(expect.objectContaining({ code: 'ILLEGAL_TRANSITION' }));
    expect(ctx.next).toBe(700);
  });
});
