import { describe, it, expect } from 'vitest';
import { createActor, type Snapshot } from 'xstate';
import {
  AGENT_FAULT_EXITS,
  durableFingerprint,
  instanceAdmits,
  instanceMachine,
  instanceStatus,
  type AttemptEvent,
  type AttemptBucket,
  type AttemptExit,
  type InstanceEmitted,
  type InstanceInput,
} from '../../machines/instance.machine.js';

// The host is the single writer of an attempt's lifecycle and says which bucket it leaves; this
// map plays the host. Pass `from` explicitly to send what a confused host might.
const buckets = new Map<string, AttemptBucket>();

const INPUT: InstanceInput = { key: 'repo:42', agent: 'coder', lane: 'default', failedAttemptThreshold: 3 };

function start(input: Partial<InstanceInput> = {}) {
  buckets.clear();
  const actor = createActor(instanceMachine, { input: { ...INPUT, ...input } });
  const emitted: InstanceEmitted[] = [];
  actor.on('degraded', (ev) => emitted.push(ev));
  actor.start();
  return { actor, emitted };
}

type Actor = ReturnType<typeof start>['actor'];

let clock = 1_000;
function attempt(
  actor: Actor,
  attemptId: string,
  change: AttemptEvent['change'],
  status?: AttemptExit,
  ...confused: [from?: AttemptBucket]
): void {
  clock += 1;
  const from = confused.length > 0 ? confused[0] : buckets.get(attemptId);
  actor.send({ type: 'attempt', attemptId, runId: `run-${attemptId}`, change, at: clock, ...(from ? { from } : {}), ...(status ? { status } : {}) });
  if (confused.length > 0) return; // a confused host's event must not move the real bucket
  if (change === 'ended' || change === 'released') buckets.delete(attemptId);
  else buckets.set(attemptId, change);
}

/** Runs one attempt from pending to ended with the given exit. */
function runAttempt(actor: Actor, attemptId: string, status: AttemptExit): void {
  attempt(actor, attemptId, 'pending');
  attempt(actor, attemptId, 'running');
  attempt(actor, attemptId, 'ended', status);
}

function counts(actor: Actor) {
  const { pending, running, stopping } = actor.getSnapshot().context;
  return { pending, running, stopping };
}

describe('instance attempt counts', () => {
  it('starts active and idle with context from input', () => {
    const { actor } = start({ workspace: '/tmp/ws', target: 2 });
    const snap = actor.getSnapshot();
    expect(snap.value).toBe('active');
    expect(instanceStatus(snap)).toBe('idle');
    expect(snap.context).toMatchObject({ key: 'repo:42', agent: 'coder', lane: 'default', workspace: '/tmp/ws', target: 2 });
    expect(start().actor.getSnapshot().context.target).toBeNull();
  });

  it('tracks pending → running → ended', () => {
    const { actor } = start();
    attempt(actor, 'a1', 'pending');
    expect(counts(actor)).toEqual({ pending: 1, running: 0, stopping: 0 });
    expect(instanceStatus(actor.getSnapshot())).toBe('active');
    attempt(actor, 'a1', 'running');
    expect(counts(actor)).toEqual({ pending: 0, running: 1, stopping: 0 });
    attempt(actor, 'a1', 'ended', 'success');
    expect(counts(actor)).toEqual({ pending: 0, running: 0, stopping: 0 });
    expect(instanceStatus(actor.getSnapshot())).toBe('idle');
    expect(actor.getSnapshot().context.lastActivityAt).toBe(clock);
  });

  it('accepts running for an attempt it never saw pending', () => {
    const { actor } = start();
    attempt(actor, 'a1', 'running');
    expect(counts(actor)).toEqual({ pending: 0, running: 1, stopping: 0 });
  });

  it('moves running to stopping, then ends it', () => {
    const { actor } = start();
    attempt(actor, 'a1', 'running');
    attempt(actor, 'a2', 'running');
    attempt(actor, 'a1', 'stopping');
    expect(counts(actor)).toEqual({ pending: 0, running: 1, stopping: 1 });
    attempt(actor, 'a1', 'ended', 'cancelled');
    expect(counts(actor)).toEqual({ pending: 0, running: 1, stopping: 0 });
  });

  it('released drops the attempt without counting an outcome', () => {
    const { actor } = start();
    runAttempt(actor, 'a1', 'fail');
    attempt(actor, 'a2', 'pending');
    attempt(actor, 'a2', 'released');
    expect(counts(actor)).toEqual({ pending: 0, running: 0, stopping: 0 });
    expect(actor.getSnapshot().context.consecutiveFailures).toBe(1);
  });

  it('never moves an attempt backwards and never lets a count go below zero', () => {
    const { actor } = start();
    runAttempt(actor, 'a1', 'fail');
    const before = actor.getSnapshot().context;
    attempt(actor, 'ghost', 'ended', 'error', 'running');
    attempt(actor, 'ghost', 'stopping', undefined, 'pending');
    attempt(actor, 'ghost', 'released', undefined, 'stopping');
    expect(actor.getSnapshot().context).toEqual(before);
    expect(before.consecutiveFailures).toBe(1);

    attempt(actor, 'a2', 'running');
    attempt(actor, 'a2', 'pending', undefined, 'running');
    expect(counts(actor)).toEqual({ pending: 0, running: 1, stopping: 0 });
    attempt(actor, 'a2', 'stopping');
    attempt(actor, 'a2', 'running', undefined, 'stopping');
    expect(counts(actor)).toEqual({ pending: 0, running: 0, stopping: 1 });
  });
});

describe('failure streak and degradation', () => {
  it('counts agent faults and resets the streak on success or fork', () => {
    const { actor } = start({ failedAttemptThreshold: 10 });
    runAttempt(actor, 'a1', 'fail');
    runAttempt(actor, 'a2', 'timeout');
    expect(actor.getSnapshot().context.consecutiveFailures).toBe(2);
    runAttempt(actor, 'a3', 'success');
    expect(actor.getSnapshot().context.consecutiveFailures).toBe(0);
    runAttempt(actor, 'a4', 'error');
    runAttempt(actor, 'a5', 'fork');
    expect(actor.getSnapshot().context.consecutiveFailures).toBe(0);
    expect(actor.getSnapshot().context.recentFailures).toEqual(['a1', 'a2', 'a4']);
  });

  it('infrastructure exits leave the streak alone', () => {
    expect([...AGENT_FAULT_EXITS].sort()).toEqual(['error', 'fail', 'timeout']);
    const { actor, emitted } = start({ failedAttemptThreshold: 2 });
    runAttempt(actor, 'a1', 'fail');
    for (const exit of ['crashed', 'lease_expired', 'cancelled', 'interrupted'] as const) {
      runAttempt(actor, `infra-${exit}`, exit);
    }
    expect(actor.getSnapshot().context.consecutiveFailures).toBe(1);
    expect(actor.getSnapshot().value).toBe('active');
    expect(emitted).toEqual([]);
  });

  it('degrades at the threshold and emits degraded once', () => {
    const { actor, emitted } = start({ failedAttemptThreshold: 3 });
    runAttempt(actor, 'a1', 'fail');
    runAttempt(actor, 'a2', 'error');
    expect(actor.getSnapshot().value).toBe('active');
    expect(emitted).toEqual([]);
    runAttempt(actor, 'a3', 'timeout');

    const snap = actor.getSnapshot();
    expect(snap.value).toBe('degraded');
    expect(instanceStatus(snap)).toBe('degraded');
    expect(snap.context.degradedAt).toBe(clock);
    expect(emitted).toEqual([
      { type: 'degraded', key: 'repo:42', consecutiveFailures: 3, recentFailures: ['a1', 'a2', 'a3'], at: clock },
    ]);

    runAttempt(actor, 'a4', 'fail');
    expect(emitted).toHaveLength(1);
  });

  it('reports the streak at the crossing when one turn carries the failure that degrades and a success after it', () => {
    const { actor, emitted } = start({ failedAttemptThreshold: 2 });
    runAttempt(actor, 'a1', 'fail');
    actor.send({
      type: 'attempts',
      at: clock,
      changes: [
        { attemptId: 'a2', change: 'running' },
        { attemptId: 'a3', change: 'running' },
        { attemptId: 'a2', change: 'ended', from: 'running', status: 'fail' },
        { attemptId: 'a3', change: 'ended', from: 'running', status: 'success' },
      ],
    });
    expect(actor.getSnapshot().value).toBe('degraded');
    expect(emitted).toEqual([{ type: 'degraded', key: 'repo:42', consecutiveFailures: 2, recentFailures: ['a1', 'a2'], at: clock }]);
  });

  it('keeps only the last 10 failures, newest last', () => {
    const { actor } = start({ failedAttemptThreshold: 0 });
    for (let i = 1; i <= 12; i += 1) runAttempt(actor, `f${i}`, 'fail');
    const { recentFailures, consecutiveFailures } = actor.getSnapshot().context;
    expect(consecutiveFailures).toBe(12);
    expect(recentFailures).toEqual(Array.from({ length: 10 }, (_, i) => `f${i + 3}`));
  });

  it('threshold 0 never degrades', () => {
    const { actor, emitted } = start({ failedAttemptThreshold: 0 });
    for (let i = 0; i < 50; i += 1) runAttempt(actor, `f${i}`, 'fail');
    expect(actor.getSnapshot().value).toBe('active');
    expect(emitted).toEqual([]);
  });

  it('still tracks running work while degraded', () => {
    const { actor } = start({ failedAttemptThreshold: 1 });
    attempt(actor, 'slow', 'running');
    runAttempt(actor, 'a1', 'fail');
    expect(actor.getSnapshot().value).toBe('degraded');
    expect(counts(actor).running).toBe(1);
    attempt(actor, 'slow', 'ended', 'success');
    expect(counts(actor)).toEqual({ pending: 0, running: 0, stopping: 0 });
    expect(actor.getSnapshot().value).toBe('degraded');
  });

  it('reset returns to active with the streak cleared', () => {
    const { actor, emitted } = start({ failedAttemptThreshold: 1 });
    runAttempt(actor, 'a1', 'fail');
    expect(actor.getSnapshot().value).toBe('degraded');
    actor.send({ type: 'reset', at: 5_000 });
    const snap = actor.getSnapshot();
    expect(snap.value).toBe('active');
    expect(snap.context.consecutiveFailures).toBe(0);
    expect(snap.context.degradedAt).toBeUndefined();
    runAttempt(actor, 'a2', 'fail');
    expect(actor.getSnapshot().value).toBe('degraded');
    expect(emitted).toHaveLength(2);
  });
});

describe('target and admission', () => {
  it('gates admission on the target and on degradation', () => {
    const { actor } = start({ failedAttemptThreshold: 1 });
    expect(instanceAdmits(actor.getSnapshot())).toBe(true);
    actor.send({ type: 'target', target: 2, at: 1 });
    attempt(actor, 'a1', 'pending');
    expect(instanceAdmits(actor.getSnapshot())).toBe(true);
    attempt(actor, 'a2', 'running');
    expect(instanceAdmits(actor.getSnapshot())).toBe(false);
    attempt(actor, 'a2', 'stopping');
    expect(instanceAdmits(actor.getSnapshot())).toBe(false);
    attempt(actor, 'a2', 'released');
    expect(instanceAdmits(actor.getSnapshot())).toBe(true);
    actor.send({ type: 'target', target: 0, at: 2 });
    expect(instanceAdmits(actor.getSnapshot())).toBe(false);
    actor.send({ type: 'target', target: null, at: 3 });
    expect(instanceAdmits(actor.getSnapshot())).toBe(true);

    attempt(actor, 'a1', 'ended', 'fail');
    expect(actor.getSnapshot().value).toBe('degraded');
    expect(instanceAdmits(actor.getSnapshot())).toBe(false);
    actor.send({ type: 'target', target: 7, at: 4 });
    expect(actor.getSnapshot().context.target).toBe(7);
  });

  it('recover forgets every transient attempt but keeps the streak', () => {
    const { actor } = start({ target: 2 });
    runAttempt(actor, 'f1', 'fail');
    attempt(actor, 'a1', 'pending');
    attempt(actor, 'a2', 'running');
    attempt(actor, 'a2', 'stopping');
    expect(instanceAdmits(actor.getSnapshot())).toBe(false);
    actor.send({ type: 'recover', at: 9_000 });
    expect(counts(actor)).toEqual({ pending: 0, running: 0, stopping: 0 });
    expect(actor.getSnapshot().context.consecutiveFailures).toBe(1);
    expect(instanceAdmits(actor.getSnapshot())).toBe(true);
    attempt(actor, 'a2', 'ended', 'fail');
    expect(actor.getSnapshot().context.consecutiveFailures).toBe(1);
  });
});

describe('persistence', () => {
  it('round-trips a persisted snapshot through JSON', () => {
    const { actor } = start({ failedAttemptThreshold: 2, workspace: '/ws' });
    actor.send({ type: 'target', target: 4, at: 1 });
    runAttempt(actor, 'a1', 'fail');
    runAttempt(actor, 'a2', 'error');
    attempt(actor, 'a3', 'running');
    const json = JSON.stringify(actor.getPersistedSnapshot());
    actor.stop();

    const snapshot = JSON.parse(json) as Snapshot<unknown>;
    const restored = createActor(instanceMachine, { snapshot, input: INPUT }).start();
    const snap = restored.getSnapshot();
    expect(snap.value).toBe('degraded');
    expect(snap.context).toEqual(JSON.parse(json).context);
    expect(snap.context).toMatchObject({ target: 4, consecutiveFailures: 2, workspace: '/ws', running: 1 });

    restored.send({ type: 'reset', at: 10 });
    attempt(restored, 'a3', 'ended', 'success');
    expect(restored.getSnapshot().value).toBe('active');
    expect(counts(restored).running).toBe(0);
  });

  it('durableFingerprint moves with state, target and streak, not with attempt counts', () => {
    const { actor } = start({ failedAttemptThreshold: 2 });
    const fp = () => durableFingerprint(actor.getSnapshot());
    const initial = fp();

    attempt(actor, 'a1', 'pending');
    attempt(actor, 'a1', 'running');
    attempt(actor, 'a1', 'stopping');
    attempt(actor, 'a1', 'released');
    expect(fp()).toBe(initial);

    actor.send({ type: 'target', target: 3, at: 1 });
    const afterTarget = fp();
    expect(afterTarget).not.toBe(initial);

    runAttempt(actor, 'f1', 'fail');
    const afterFailure = fp();
    expect(afterFailure).not.toBe(afterTarget);

    runAttempt(actor, 'f2', 'fail');
    expect(actor.getSnapshot().value).toBe('degraded');
    const afterDegrade = fp();
    actor.send({ type: 'reset', at: 2 });
    expect(fp()).not.toBe(afterDegrade);
    expect(durableFingerprint({ ...actor.getSnapshot(), value: 'degraded' })).not.toBe(fp());
  });
});

describe('a turn of attempt changes as one event', () => {
  it('applies every change in order, as the same changes one by one would', () => {
    const one = start();
    const batched = start();
    const changes = [
      { attemptId: 'a', runId: 'r-a', change: 'pending' as const },
      { attemptId: 'b', runId: 'r-b', change: 'pending' as const },
      { attemptId: 'a', runId: 'r-a', change: 'running' as const, from: 'pending' as const },
      { attemptId: 'a', runId: 'r-a', change: 'ended' as const, from: 'running' as const, status: 'error' as const },
      { attemptId: 'b', runId: 'r-b', change: 'running' as const, from: 'pending' as const },
    ];
    for (const change of changes) one.actor.send({ type: 'attempt', ...change, at: 5 });
    batched.actor.send({ type: 'attempts', changes, at: 5 });
    const { context } = batched.actor.getSnapshot();
    expect(context).toEqual(one.actor.getSnapshot().context);
    expect(context).toMatchObject({ pending: 0, running: 1, stopping: 0, consecutiveFailures: 1, recentFailures: ['a'] });
  });

  it('degrades when the streak crosses the threshold inside the batch, and emits once', () => {
    const { actor, emitted } = start({ failedAttemptThreshold: 2 });
    const fail = (id: string) => [
      { attemptId: id, runId: `r-${id}`, change: 'pending' as const },
      { attemptId: id, runId: `r-${id}`, change: 'ended' as const, from: 'pending' as const, status: 'fail' as const },
    ];
    actor.send({ type: 'attempts', changes: [...fail('x'), ...fail('y'), ...fail('z')], at: 9 });
    expect(actor.getSnapshot().value).toBe('degraded');
    expect(actor.getSnapshot().context).toMatchObject({ consecutiveFailures: 3, degradedAt: 9 });
    expect(emitted).toHaveLength(1);
    // The streak as it reached the threshold, as one event at a time reports it.
    expect(emitted[0]).toMatchObject({ consecutiveFailures: 2, recentFailures: ['x', 'y'] });
  });
});
