import { describe, expect, it } from 'vitest';
import type { AgentResult, WireError } from '../../../actors/wire.js';
import type { AttemptRecord, RetryPolicy, TaskRecord } from '../../../src/store/records.js';
import { decideSettlement, type AttemptOutcome } from '../../../src/tasks/outcome.js';
import { decideSettle, lostAttemptOf } from '../../../src/steps/settle.js';
import { endedAttemptOf } from '../../../src/steps/common.js';
import { decideRetry } from '../../../src/steps/retry.js';
import { decideWake } from '../../../src/steps/wake.js';
import type { StepContext, StepResult } from '../../../src/steps/types.js';

const RETRY: RetryPolicy = { maxAttempts: 3, backoff: 'exponential', delayMs: 1_000, maxDelayMs: 60_000, jitter: 0 };
const NOW = 5_000;

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const inner of Object.values(value)) deepFreeze(inner);
  }
  return value;
}

function context(firstSeq = 200): StepContext & { readonly next: number } {
  let seq = firstSeq;
  return { now: NOW, seq: () => seq++, random: () => 0, id: () => 'unused', get next() { return seq; } };
}

function running(patch: Partial<TaskRecord> = {}): TaskRecord {
  return {
    id: 't1', agent: 'echo', state: 'running', input: null, priority: 0, lane: 'default', instanceKey: 'echo/default/abc', labels: {}, timeoutMs: 0,
    retry: RETRY, runs: 1, runReason: 'submit', runCreatedAt: 500, attempts: 1, attemptSeq: 1, token: 90, queuedOrder: 10, queuedAt: 500,
    createdAt: 500, updatedAt: 1_000, startedAt: 1_000, runAt: undefined,
    ...patch,
  };
}

function attemptOf(task: TaskRecord, patch: Partial<AttemptRecord> = {}): AttemptRecord {
  const attemptId = `${task.id}:${task.runs}:${task.attemptSeq}`;
  return { taskId: task.id, run: task.runs, attempt: task.attemptSeq, attemptId, token: task.token, owner: `rt:${attemptId}`, startedAt: 1_000, leaseExpiresAt: 31_000, ...patch };
}

const ok = (result: AgentResult): AttemptOutcome => ({ kind: 'result', wire: { ok: true, result } });
const thrown = (error: Partial<WireError> = {}): AttemptOutcome => ({ kind: 'result', wire: { ok: false, error: { code: 'AGENT_ERROR', message: 'boom', retryable: true, fault: 'agent', ...error } } });

/** Settles `outcome` the way the dispatcher does: decideSettlement with the task's attempts, then the step. */
function settle(task: TaskRecord, outcome: AttemptOutcome, options: { stop?: Parameters<typeof decideSettlement>[3]; attempt?: AttemptRecord; ctx?: StepContext; flow?: { state: { fastFails: number; pausedUntil?: number }; pausedUntil?: number } } = {}): StepResult {
  const settlement = decideSettlement(task, task.attempts, outcome, options.stop, () => 0);
  const view = deepFreeze({ task, attempt: options.attempt ?? attemptOf(task) });
  const input = deepFreeze(options.flow === undefined ? { settlement } : { settlement, flow: options.flow });
  return decideSettle(view, input, options.ctx ?? context());
}

const taskIn = (out: StepResult) => {
  const change = out.changes.find((c) => c.kind === 'task');
  return change?.kind === 'task' ? change.task : undefined;
};

describe('decideSettle: terminal outcomes', () => {
  it('settles success as done: task.done, notify; one record (the task holds its run and its final attempt)', () => {
    const task = running({ error: { code: 'X', message: 'earlier', retryable: true, fault: 'agent' } });
    const out = settle(task, ok({ kind: 'success', summary: 'ok', output: { n: 2 } }));
    const attempt = attemptOf(task);
    const done = { ...task, state: 'done', updatedAt: NOW, result: { kind: 'success', summary: 'ok' }, output: { n: 2 }, settledAt: NOW, attemptStartedAt: attempt.startedAt, attemptLeaseUntil: attempt.leaseExpiresAt, attemptExit: 'success' } as TaskRecord;
    delete done.error;
    expect(endedAttemptOf(done, attempt.owner)).toEqual({ ...attempt, endedAt: NOW, exit: 'success', error: undefined });
    expect(out).toEqual({
      changes: [{ kind: 'task', task: done }],
      events: [{ seq: 200, at: NOW, type: 'task.done', taskId: 't1', attemptId: 't1:1:1', data: { run: 1, attempt: 1, exit: 'success', attemptMs: 4_000, kind: 'success', summary: 'ok' } }],
      effects: [{ kind: 'notify', taskId: 't1' }],
    });
  });

  it('settles a fork as done with its branch and rev', () => {
    const out = settle(running(), ok({ kind: 'fork', branch: 'b', rev: 'r1' }));
    expect(taskIn(out)).toMatchObject({ state: 'done', result: { kind: 'fork', branch: 'b', rev: 'r1' } });
    expect(out.events[0]).toMatchObject({ type: 'task.done', data: { exit: 'fork', kind: 'fork' } });
  });

  it('settles a reported fail as failed, with the result and AGENT_FAILED in the task, and in the run a retry records', () => {
    const out = settle(running(), ok({ kind: 'fail', summary: 'bad input' }));
    const error = { code: 'AGENT_FAILED', message: 'bad input', retryable: false, fault: 'agent' };
    expect(taskIn(out)).toMatchObject({ state: 'failed', result: { kind: 'fail', summary: 'bad input' }, error, settledAt: NOW });
    expect(out.events).toEqual([{ seq: 200, at: NOW, type: 'task.failed', taskId: 't1', attemptId: 't1:1:1', data: { run: 1, attempt: 1, exit: 'fail', attemptMs: 4_000, error } }]);
    expect(out.changes.some((c) => c.kind === 'run' || c.kind === 'attempt')).toBe(false);
    // The failed run and its final attempt are written when a retry begins the next, from the task as it settled.
    const retried = decideRetry(deepFreeze({ task: taskIn(out)!, runtimeId: 'rt' }), deepFreeze({}), context());
    expect(retried.changes[0]).toEqual({ kind: 'run', run: expect.objectContaining({ outcome: 'failed', result: { kind: 'fail', summary: 'bad input' }, error }) });
    expect(retried.changes[1]).toEqual({ kind: 'attempt', attempt: { ...attemptOf(running()), owner: 'rt', endedAt: NOW, exit: 'fail', error } });
    // The new run starts without it.
    const next = taskIn(retried)!;
    expect([next.attemptStartedAt, next.attemptLeaseUntil, next.attemptExit]).toEqual([undefined, undefined, undefined]);
    expect(endedAttemptOf(next, 'rt')).toBeUndefined();
  });

  it("writes the final attempt as its own record when its error is not the task's", () => {
    const earlier = { code: 'X', message: 'earlier', retryable: true, fault: 'agent' } as const;
    const task = running({ error: earlier });
    const out = decideSettle(deepFreeze({ task, attempt: attemptOf(task) }), deepFreeze({ settlement: { exit: 'cancelled', event: 'CANCEL', counts: true, reason: 'r' } }), context());
    expect(taskIn(out)).toMatchObject({ state: 'cancelled', error: earlier });
    expect(taskIn(out)!.attemptExit).toBeUndefined();
    expect(out.changes).toContainEqual({ kind: 'attempt', attempt: { ...attemptOf(task), endedAt: NOW, exit: 'cancelled' } });
  });

  it('settles a non-retryable error as failed', () => {
    const out = settle(running(), thrown({ retryable: false }));
    expect(taskIn(out)).toMatchObject({ state: 'failed', error: { code: 'AGENT_ERROR' } });
    expect(out.events[0]).toMatchObject({ type: 'task.failed', data: { exit: 'error' } });
  });

  it('drops at the budget edge: the last allowed attempt fails retryably → retry_exhausted', () => {
    const task = running({ attempts: 3, attemptSeq: 3 });
    const out = settle(task, thrown());
    const t = taskIn(out)!;
    expect(t).toMatchObject({ state: 'dropped', reason: 'retry_exhausted', error: { code: 'RETRY_EXHAUSTED', retryable: false, fault: 'agent' } });
    expect(out.events).toEqual([{ seq: 200, at: NOW, type: 'task.dropped', taskId: 't1', attemptId: 't1:1:3', data: { run: 1, attempt: 3, exit: 'error', attemptMs: 4_000, reason: 'retry_exhausted', error: t.error } }]);
  });

  it('settles a cancel stop as cancelled with the cancel reason, whatever the agent returned', () => {
    const out = settle(running(), ok({ kind: 'success' }), { stop: { reason: 'cancelled', detail: 'user asked' } });
    expect(taskIn(out)).toMatchObject({ state: 'cancelled', reason: 'user asked', error: { code: 'CANCELLED' } });
    expect(out.events).toEqual([{ seq: 200, at: NOW, type: 'task.cancelled', taskId: 't1', attemptId: 't1:1:1', data: { run: 1, attempt: 1, exit: 'cancelled', attemptMs: 4_000, reason: 'user asked' } }]);
  });

  it.each([
    ['never', 'done', true],
    ['on_failure', 'done', true],
    ['on_failure', 'failed', false],
    ['always', 'done', false],
  ] as const)('workspace keep %s, task %s: clean-workspace=%s, before notify', (keep, state, cleans) => {
    const task = running({ workspace: '/data/workspaces/t1', workspaceKeep: keep });
    const out = settle(task, state === 'done' ? ok({ kind: 'success' }) : ok({ kind: 'fail' }));
    const clean = { kind: 'clean-workspace', taskId: 't1', workspace: '/data/workspaces/t1', run: 1 };
    expect(out.effects).toEqual(cleans ? [clean, { kind: 'notify', taskId: 't1' }] : [{ kind: 'notify', taskId: 't1' }]);
  });

  it('never cleans a workspace the user gave', () => {
    const out = settle(running({ workspace: '/repo' }), ok({ kind: 'success' }));
    expect(out.effects).toEqual([{ kind: 'notify', taskId: 't1' }]);
  });
});

describe('decideSettle: the task goes on', () => {
  it('retries below the budget: task.retrying is its FIFO seq, backoff runAt, a retry timer armed', () => {
    const task = running({ ladder: { firstCycle: 1, rung: 1 } });
    const out = settle(task, thrown());
    const error = { code: 'AGENT_ERROR', message: 'boom', retryable: true, fault: 'agent' };
    const timer = { id: 'retry:t1:1', due: NOW + 1_000, kind: 'retry', taskId: 't1', run: 1 };
    const queued = { ...task, state: 'queued', updatedAt: NOW, error, queuedOrder: 200, queuedAt: NOW, runAt: NOW + 1_000 } as TaskRecord;
    delete queued.ladder;
    expect(out).toEqual({
      changes: [
        { kind: 'attempt', attempt: { ...attemptOf(task), endedAt: NOW, exit: 'error', error } },
        { kind: 'task', task: queued },
        { kind: 'timer', timer, armed: true },
      ],
      events: [{ seq: 200, at: NOW, type: 'task.retrying', taskId: 't1', attemptId: 't1:1:1', data: { run: 1, attempt: 1, exit: 'error', attemptMs: 4_000, delayMs: 1_000, error } }],
      effects: [{ kind: 'arm', timer }],
    });
  });

  it('retries at once without a timer when the backoff is 0 ms', () => {
    const out = settle(running({ retry: { ...RETRY, delayMs: 0 } }), thrown());
    expect(taskIn(out)).toMatchObject({ state: 'queued', queuedOrder: 200 });
    expect(taskIn(out)!.runAt).toBeUndefined();
    expect(out.changes.some((c) => c.kind === 'timer')).toBe(false);
    expect(out.effects).toEqual([]);
  });

  it('retries a crash found at open (PROCESS_CRASHED) on the attempt a rebuild could not find', () => {
    const task = running({ updatedAt: 800 });
    const lost = lostAttemptOf(task, 'rt');
    expect(lost).toEqual({ taskId: 't1', run: 1, attempt: 1, attemptId: 't1:1:1', token: 90, owner: 'rt', startedAt: 800, leaseExpiresAt: 800 });
    const out = settle(task, { kind: 'crash', code: 'PROCESS_CRASHED', message: 'the process died during the attempt' }, { attempt: lost });
    expect(out.events[0]).toMatchObject({ type: 'task.retrying', data: { exit: 'crashed', attemptMs: 4_200, error: { code: 'PROCESS_CRASHED', fault: 'infrastructure' } } });
  });

  it.each([
    ['shutdown', 'interrupted'],
    ['killed', 'killed'],
  ] as const)('requeues an attempt stopped by %s without spending the budget (task.queued, reason %s)', (reason, why) => {
    const task = running({ attempts: 2, attemptSeq: 2 });
    const out = settle(task, ok({ kind: 'success' }), { stop: { reason } });
    expect(taskIn(out)).toMatchObject({ state: 'queued', attempts: 1, queuedOrder: 200, queuedAt: NOW });
    expect(out.events).toEqual([{ seq: 200, at: NOW, type: 'task.queued', taskId: 't1', data: { run: 1, attempt: 2, exit: 'interrupted', attemptMs: 4_000, reason: why } }]);
    expect(out.effects).toEqual([]);
  });

  it('puts a sleeping task on a wake timer and ends its run, recorded when the wake begins the next', () => {
    const task = running();
    const out = settle(task, ok({ kind: 'sleep', wakeAfterMs: 60_000, followUp: { step: 2 }, summary: 'nap' }));
    const timer = { id: 'wake:t1:1', due: NOW + 60_000, kind: 'wake', taskId: 't1', run: 1 } as const;
    expect(taskIn(out)).toMatchObject({ state: 'sleeping', runAt: NOW + 60_000, followUp: { step: 2 }, result: { kind: 'sleep', summary: 'nap' } });
    expect(taskIn(out)!.settledAt).toBeUndefined();
    expect(out.events).toEqual([{ seq: 200, at: NOW, type: 'task.sleeping', taskId: 't1', attemptId: 't1:1:1', data: { run: 1, attempt: 1, exit: 'success', attemptMs: 4_000, wakeAt: NOW + 60_000 } }]);
    expect(out.changes.some((c) => c.kind === 'run')).toBe(false);
    expect(out.changes).toContainEqual({ kind: 'timer', timer, armed: true });
    expect(out.effects).toEqual([{ kind: 'arm', timer }]);
    // The slept run is written by the wake, from the task as it went to sleep (settledAt: its updatedAt).
    const woken = decideWake(deepFreeze({ task: taskIn(out)! }), deepFreeze({ timer }), context());
    expect(woken.changes).toContainEqual({ kind: 'run', run: { taskId: 't1', run: 1, reason: 'submit', createdAt: 500, settledAt: NOW, outcome: 'sleeping', attempts: 1, result: { kind: 'sleep', summary: 'nap' }, error: undefined } });
  });
});

describe('decideSettle: a waiting task', () => {
  const waiting = (patch: Partial<TaskRecord> = {}) => running({ state: 'waiting', waitingFor: { kind: 'input', prompt: 'name?' }, attempts: 2, attemptSeq: 2, ...patch });

  it('detaches on interrupt: keeps waiting with no live attempt, the attempt uncounted, task.waiting detached', () => {
    const task = waiting();
    const out = settle(task, ok({ kind: 'success' }), { stop: { reason: 'shutdown' } });
    expect(out).toEqual({
      changes: [
        { kind: 'attempt', attempt: { ...attemptOf(task), endedAt: NOW, exit: 'interrupted' } },
        { kind: 'task', task: { ...task, attempts: 1 } },
      ],
      events: [{ seq: 200, at: NOW, type: 'task.waiting', taskId: 't1', attemptId: 't1:1:2', data: { run: 1, attempt: 2, exit: 'interrupted', attemptMs: 4_000, reason: 'interrupted', for: 'input', detached: true } }],
      effects: [],
    });
  });

  it('detaches a waiting task found at open with reason process_crashed (attemptMs never negative)', () => {
    const task = waiting({ waitingFor: { kind: 'join', ids: ['c1'] } });
    const view = deepFreeze({ task, attempt: attemptOf(task, { startedAt: NOW + 10 }) });
    const settlement = { exit: 'interrupted', event: 'REQUEUE', counts: false, reason: 'process_crashed' } as const;
    const out = decideSettle(view, deepFreeze({ settlement }), context());
    expect(out.events[0]!.data).toEqual({ run: 1, attempt: 2, exit: 'interrupted', attemptMs: 0, reason: 'process_crashed', for: 'join', detached: true });
    expect(taskIn(out)).toMatchObject({ state: 'waiting', attempts: 1, waitingFor: { kind: 'join', ids: ['c1'] } });
  });

  it('resumes, then settles, an agent that returned while waiting', () => {
    const out = settle(waiting(), ok({ kind: 'success' }));
    expect(taskIn(out)).toMatchObject({ state: 'done' });
    expect(taskIn(out)!.waitingFor).toBeUndefined();
    expect(out.events[0]!.type).toBe('task.done');
  });

  it('requeues a waiting attempt that timed out, and wakes watchers of waiting', () => {
    const out = settle(waiting(), ok({ kind: 'success' }), { stop: { reason: 'timeout' } });
    expect(taskIn(out)).toMatchObject({ state: 'queued', runAt: NOW + 2_000 });
    expect(taskIn(out)!.waitingFor).toBeUndefined();
    expect(out.effects).toEqual([{ kind: 'notify', taskId: 't1' }, { kind: 'arm', timer: expect.objectContaining({ kind: 'retry' }) }]);
  });

  it('cancels a waiting task whose parked attempt was stopped by cancel', () => {
    const out = settle(waiting(), ok({ kind: 'success' }), { stop: { reason: 'cancelled', detail: 'no' } });
    expect(taskIn(out)).toMatchObject({ state: 'cancelled', reason: 'no' });
  });
});

describe('decideSettle: idempotent and fenced', () => {
  it('records a result from an attempt that is no longer current as task.stale_result, changing nothing', () => {
    const task = running({ token: 95 });
    const out = settle(task, ok({ kind: 'success' }), { attempt: attemptOf(task, { token: 90 }) });
    expect(out).toEqual({ changes: [], events: [{ seq: 200, at: NOW, type: 'task.stale_result', taskId: 't1', attemptId: 't1:1:1', data: { kind: 'result' } }], effects: [] });
  });

  it('records a result for a task no longer in memory as task.stale_result', () => {
    const task = running();
    const settlement = decideSettlement(task, 1, ok({ kind: 'success' }), undefined, () => 0);
    const out = decideSettle(deepFreeze({ task: undefined, attempt: attemptOf(task) }), deepFreeze({ settlement }), context());
    expect(out).toEqual({ changes: [], events: [{ seq: 200, at: NOW, type: 'task.stale_result', taskId: 't1', attemptId: 't1:1:1', data: { kind: 'result' } }], effects: [] });
  });

  it('decides nothing for an attempt that already ended', () => {
    const task = running();
    const ctx = context();
    const out = settle(task, ok({ kind: 'success' }), { attempt: attemptOf(task, { endedAt: 4_000, exit: 'success' }), ctx });
    expect(out).toEqual({ changes: [], events: [], effects: [] });
    expect(ctx.next).toBe(200);
  });

  it.each(['queued', 'sleeping', 'done', 'cancelled'] as const)('throws ILLEGAL_TRANSITION for a %s task, taking no seq', (state) => {
    const ctx = context();
    expect(() => settle(running({ state }), ok({ kind: 'success' }), { ctx })).toThrow(expect.objectContaining({ code: 'ILLEGAL_TRANSITION' }));
    expect(ctx.next).toBe(200);
  });
});

describe('decideSettle: flow control', () => {
  it('writes the flow state and, when this failure paused the agent, agent.paused after the settling event', () => {
    const flow = { state: { fastFails: 0, pausedUntil: NOW + 30_000 }, pausedUntil: NOW + 30_000 };
    const out = settle(running(), thrown(), { flow });
    expect(out.changes).toContainEqual({ kind: 'flow', agent: 'echo', state: flow.state });
    expect(out.events.map((e) => [e.seq, e.type])).toEqual([
      [200, 'task.retrying'],
      [201, 'agent.paused'],
    ]);
    expect(out.events[1]).toEqual({ seq: 201, at: NOW, type: 'agent.paused', taskId: 't1', attemptId: 't1:1:1', data: { agent: 'echo', until: NOW + 30_000, reason: 'fast_failures' } });
  });

  it('writes a changed streak without a pause event', () => {
    const out = settle(running(), thrown(), { flow: { state: { fastFails: 1 } } });
    expect(out.changes).toContainEqual({ kind: 'flow', agent: 'echo', state: { fastFails: 1 } });
    expect(out.events.map((e) => e.type)).toEqual(['task.retrying']);
  });
});
