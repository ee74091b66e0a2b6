import { describe, expect, it } from 'vitest';
import type { RetryPolicy } from '../../../src/store/records.js';
import type { ValidSpec } from '../../../src/tasks/spec.js';
import { decideSubmit } from '../../../src/steps/submit.js';
import type { StepContext } from '../../../src/steps/types.js';

const RETRY: RetryPolicy = { maxAttempts: 3, backoff: 'exponential', delayMs: 1_000, maxDelayMs: 60_000, jitter: 0 };

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const inner of Object.values(value)) deepFreeze(inner);
  }
  return value;
}

function context(now = 1_000, firstSeq = 40): StepContext & { readonly next: number } {
  let seq = firstSeq;
  let ids = 0;
  return { now, seq: () => seq++, random: () => 0, id: () => `T${++ids}`, get next() { return seq; } };
}

function spec(patch: Partial<ValidSpec> = {}): ValidSpec {
  return {
    agent: undefined,
    unmatched: false,
    agentName: 'echo',
    input: { n: 1 },
    priority: 2,
    lane: 'default',
    labels: { team: 'a' },
    timeoutMs: 5_000,
    retry: RETRY,
    instanceKey: 'echo/default/abc',
    ...patch,
  } as ValidSpec;
}

const view = deepFreeze({ workspacesDir: '/data/workspaces' });

describe('decideSubmit', () => {
  it('queues a new task: record, task.queued whose seq is its FIFO order', () => {
    const ctx = context();
    const input = deepFreeze({ spec: spec() });
    const out = decideSubmit(view, input, ctx);
    const task = {
      id: 'T1',
      agent: 'echo',
      state: 'queued',
      input: { n: 1 },
      priority: 2,
      lane: 'default',
      instanceKey: 'echo/default/abc',
      labels: { team: 'a' },
      timeoutMs: 5_000,
      retry: RETRY,
      runs: 1,
      runReason: 'submit',
      runCreatedAt: 1_000,
      attempts: 0,
      attemptSeq: 0,
      token: 0,
      queuedOrder: 40,
      queuedAt: 1_000,
      createdAt: 1_000,
      updatedAt: 1_000,
      // Its first event's seq: where events({ taskId }) starts reading.
      firstSeq: 40,
    };
    expect(out).toEqual({
      changes: [
        { kind: 'task', task },
      ],
      events: [{ seq: 40, at: 1_000, type: 'task.queued', taskId: 'T1', data: { run: 1, agent: 'echo', priority: 2 } }],
      effects: [],
    });
    expect(ctx.next).toBe(41);
    // The retry policy is the spec's, shared: records are never changed in place (a step writes a new one).
    expect(out.changes[0]!.kind === 'task' && out.changes[0].task.retry).toBe(RETRY);
  });

  it('stores the idempotency key with the task', () => {
    const out = decideSubmit(view, deepFreeze({ spec: spec({ idempotencyKey: 'pr-42' }) }), context());
    expect(out.changes).toContainEqual({ kind: 'idempotency', key: 'pr-42', taskId: 'T1' });
    expect(out.changes[0]).toMatchObject({ task: { idempotencyKey: 'pr-42' } });
  });

  it('holds a delayed task on a durable start timer, with runAt in task.queued', () => {
    const out = decideSubmit(view, deepFreeze({ spec: spec({ runAt: 9_000 }) }), context());
    const timer = { id: 'start:T1:1', due: 9_000, kind: 'start', taskId: 'T1', run: 1 };
    expect(out.changes).toContainEqual({ kind: 'timer', timer, armed: true });
    expect(out.effects).toEqual([{ kind: 'arm', timer }]);
    expect(out.events[0]!.data).toEqual({ run: 1, agent: 'echo', priority: 2, runAt: 9_000 });
    expect(out.changes[0]).toMatchObject({ task: { state: 'queued', runAt: 9_000 } });
  });

  it('stores an unmatched task in needs_attention, wakes waiters, and keeps its routing inputs', () => {
    const ctx = context();
    const unrouted = { retry: { maxAttempts: 5 }, timeoutMs: 10 };
    const input = deepFreeze({ spec: spec({ unmatched: true, agentName: '', instanceKey: '', requires: ['gpu'], unrouted }) });
    const out = decideSubmit(view, input, ctx);
    expect(out.changes[0]).toEqual({
      kind: 'task',
      task: expect.objectContaining({ state: 'needs_attention', reason: 'unmatched', agent: '', requires: ['gpu'], unrouted, queuedOrder: 0 }),
    });
    expect(out.changes[0]!.kind === 'task' && out.changes[0].task.queuedAt).toBeUndefined();
    expect(out.events).toEqual([{ seq: 40, at: 1_000, type: 'task.needs_attention', taskId: 'T1', data: { run: 1, reason: 'unmatched', agent: '', requires: ['gpu'] } }]);
    expect(out.effects).toEqual([{ kind: 'notify', taskId: 'T1' }]);
  });

  it('makes a per-task workspace under the workspaces dir, with its keep policy', () => {
    const out = decideSubmit(view, deepFreeze({ spec: spec({ workspace: '(per-task)', workspaceKeep: 'on_failure' }) }), context());
    expect(out.changes[0]).toMatchObject({ task: { workspace: '/data/workspaces/T1', workspaceKeep: 'on_failure' } });
  });

  it('keeps a given workspace path and sets parentId', () => {
    const out = decideSubmit(view, deepFreeze({ spec: spec({ workspace: '/repo', parentId: 'P1' }) }), context());
    const task = out.changes[0]!.kind === 'task' ? out.changes[0].task : undefined;
    expect(task).toMatchObject({ workspace: '/repo', parentId: 'P1' });
    expect(task?.workspaceKeep).toBeUndefined();
    // The children index entry commits with the child.
    expect(out.changes).toContainEqual({ kind: 'child', parentId: 'P1', childId: task!.id });
    expect(decideSubmit(view, deepFreeze({ spec: spec() }), context()).changes.filter((c) => c.kind === 'child')).toEqual([]);
  });

  it('stores the trace context of its submit span with the task, and none without one', () => {
    const trace = { traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01', tracestate: 'vendor=1' };
    const out = decideSubmit(view, deepFreeze({ spec: spec(), trace }), context());
    expect(out.changes[0]).toMatchObject({ task: { trace } });
    const plain = decideSubmit(view, deepFreeze({ spec: spec() }), context());
    expect(plain.changes[0]!.kind === 'task' && 'trace' in plain.changes[0].task && plain.changes[0].task.trace).toBeUndefined();
  });

  it('takes one id and one seq per task, in call order', () => {
    const ctx = context();
    const a = decideSubmit(view, deepFreeze({ spec: spec() }), ctx);
    const b = decideSubmit(view, deepFreeze({ spec: spec() }), ctx);
    expect([a.events[0]!.seq, b.events[0]!.seq]).toEqual([40, 41]);
    expect([a.events[0]!.taskId, b.events[0]!.taskId]).toEqual(['T1', 'T2']);
  });
});
