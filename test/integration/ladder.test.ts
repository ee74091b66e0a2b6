/**
 * The supervisor cycle on an injected clock: the starvation ladder (durable, counted in cycles)
 * and the drop of tasks stuck on a degraded instance.
 */
import { describe, expect, it } from 'vitest';
import { builtinAgent, createRuntime, ManualClock, type Runtime, type RuntimeEvent, type RuntimeOptions } from 'troupe';
import { nextEvent } from 'troupe/testing';
import { scratchDirs } from '../helpers.js';

const dir = scratchDirs();
const T0 = Date.UTC(2026, 0, 1, 10, 0, 0);

function open(options: RuntimeOptions): Promise<Runtime> {
  return createRuntime({ logger: false, threads: 1, slotsPerThread: 2, supervisorIntervalMs: 100, ...options });
}

/** Advances the clock one cycle interval at a time until `done()` (each cycle commits before the next is armed). */
async function cyclesUntil(clock: ManualClock, done: () => boolean, stepMs = 100): Promise<void> {
  for (let i = 0; i < 500 && !done(); i++) {
    clock.advance(stepMs);
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
  expect(done()).toBe(true);
}

/** A queued task that cannot dispatch: its instance's dispatch target is 0. */
async function parkedTask(rt: Runtime, lane = 'parked') {
  const probe = await rt.wait((await rt.submit({ agent: 'echo', lane, input: 'probe' })).id);
  await rt.setDispatchTarget(probe.instanceKey, 0);
  return rt.submit({ agent: 'echo', lane, input: 'parked' });
}

describe('starvation ladder', () => {
  it('task.starved once, then needs_attention; the count survives a restart; retry requeues', async () => {
    const path = dir();
    const clock = new ManualClock(T0);
    const options = { dataDir: path, clock, agents: [builtinAgent('echo')], starvation: { minQueuedMs: 1_000, starvedAfterCycles: 1, attentionAfterCycles: 3 } };
    let rt = await open(options);
    const task = await parkedTask(rt);
    const starvedEvents: RuntimeEvent[] = [];
    rt.on('task.starved', (e) => starvedEvents.push(e));
    clock.advance(999);
    await cyclesUntil(clock, () => starvedEvents.length > 0, 1);
    expect(rt.stats().supervisor.cycles).toBe(1);
    expect(starvedEvents[0]).toMatchObject({ taskId: task.id, data: { cycles: 1 } });
    expect((await rt.get(task.id)).state).toBe('queued');
    await rt.close();

    rt = await open(options);
    rt.on('task.starved', (e) => starvedEvents.push(e));
    expect(rt.stats().supervisor.cycles).toBe(1);
    const attention = nextEvent(rt, 'task.needs_attention');
    await cyclesUntil(clock, () => rt.stats().tasks.needs_attention === 1);
    // Rung 3 counted from the first cycle before the restart, not from the reopen.
    expect(rt.stats().supervisor.cycles).toBe(3);
    expect((await attention).data).toMatchObject({ reason: 'starved', cycles: 3 });
    expect(await rt.wait(task.id)).toMatchObject({ state: 'needs_attention', reason: 'starved' });
    expect(starvedEvents).toHaveLength(1);

    const requeued = await rt.retry(task.id);
    expect(requeued).toMatchObject({ state: 'queued' });
    expect(requeued.reason).toBeUndefined();
    await rt.setDispatchTarget(requeued.instanceKey, null);
    expect(await rt.wait(task.id)).toMatchObject({ state: 'done', output: 'parked' });
    await rt.close();
  });

  it('a frozen runtime does not climb the ladder; an operator can cancel a task that needs attention', async () => {
    const clock = new ManualClock(T0);
    const rt = await open({ dataDir: dir(), clock, agents: [builtinAgent('echo')], starvation: { minQueuedMs: 500, starvedAfterCycles: 1, attentionAfterCycles: 1 } });
    const task = await parkedTask(rt);
    await rt.freeze();
    for (let i = 0; i < 20; i++) {
      clock.advance(100);
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
    expect(rt.stats().supervisor.cycles).toBe(0);
    await rt.unfreeze();
    await cyclesUntil(clock, () => rt.stats().tasks.needs_attention === 1);
    expect(await rt.cancel(task.id, 'stale')).toMatchObject({ state: 'cancelled', reason: 'stale' });
    await rt.close();
  });

  it('tasks of an agent that flow control holds back do not climb', async () => {
    const clock = new ManualClock(T0);
    const rt = await open({ dataDir: dir(), clock, agents: [builtinAgent('echo', { rate: { limit: 1, windowMs: 3_600_000 } })], starvation: { minQueuedMs: 500, starvedAfterCycles: 1, attentionAfterCycles: 1 } });
    const [first, second] = await rt.submitMany([{ agent: 'echo', input: 1 }, { agent: 'echo', input: 2 }]);
    await rt.wait(first!.id);
    expect(rt.stats().agents.echo).toMatchObject({ paused: true, queued: 1 });
    for (let i = 0; i < 20; i++) {
      clock.advance(100);
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
    expect(rt.stats().supervisor.cycles).toBe(0);
    expect((await rt.get(second!.id)).state).toBe('queued');
    await rt.close();
  });

    it('rejects a ladder whose thresholds do not climb', async () => {
    await expect(open({ dataDir: dir(), starvation: { starvedAfterCycles: 5, attentionAfterCycles: 2 } })).rejects.toMatchObject({ code: 'INVALID_OPTIONS', message: expect.stringContaining('must climb') });
    await expect(open({ dataDir: dir(), starvation: { minQueuedMs: 0 } })).rejects.toMatchObject({ code: 'INVALID_OPTIONS' });
    await expect(open({ dataDir: dir(), starvation: { bogus: 1 } as never })).rejects.toMatchObject({ code: 'INVALID_OPTIONS' });
  });
});

describe('degraded instances', () => {
  const failing = { mode: 'fatal' as const };

  it('queued tasks stay queued on a degraded instance until resetInstance, across a restart', async () => {
    const path = dir();
    const options = { dataDir: path, failedAttemptThreshold: 1, agents: [builtinAgent('fail', { concurrency: 1, retry: { maxAttempts: 1 }, backoff: false as const })] };
    let rt = await open(options);
    const degraded = nextEvent(rt, 'instance.degraded');
    const bad = await rt.submit({ agent: 'fail', input: failing });
    const { data } = await degraded;
    const key = data.instanceKey;
    expect(await rt.wait(bad.id)).toMatchObject({ state: 'failed' });
    const held = await rt.submit({ agent: 'fail', input: { succeedOnAttempt: 1 } });
    expect(held.instanceKey).toBe(key);
    await expect(rt.wait(held.id, { timeoutMs: 300 })).rejects.toMatchObject({ code: 'WAIT_TIMEOUT' });
    await rt.close();
    rt = await open(options);
    expect(rt.instances().find((i) => i.key === key)).toMatchObject({ status: 'degraded' });
    expect((await rt.get(held.id)).state).toBe('queued');
    await rt.resetInstance(key);
    expect(await rt.wait(held.id)).toMatchObject({ state: 'done' });
    await rt.close();
  });

  it('drops them with instance_degraded after degradedDropMs on the clock', async () => {
    const clock = new ManualClock(T0);
    const rt = await open({ dataDir: dir(), clock, failedAttemptThreshold: 1, degradedDropMs: 5_000, agents: [builtinAgent('fail', { concurrency: 1, retry: { maxAttempts: 1 }, backoff: false })] });
    const degraded = nextEvent(rt, 'instance.degraded');
    await rt.wait((await rt.submit({ agent: 'fail', input: failing })).id);
    await degraded;
    clock.advance(3_000);
    const held = await rt.submit({ agent: 'fail', input: { succeedOnAttempt: 1 } });
    const dropped = nextEvent(rt, 'task.dropped');
    // Counted from when the task queued (3 s after the instance degraded), not from the degrade.
    await cyclesUntil(clock, () => rt.stats().tasks.dropped === 1);
    expect(clock.now() - T0).toBeGreaterThanOrEqual(8_000);
    expect((await dropped).data).toMatchObject({ reason: 'instance_degraded' });
    expect(await rt.wait(held.id)).toMatchObject({ state: 'dropped', reason: 'instance_degraded', error: { code: 'INSTANCE_DEGRADED', fault: 'infrastructure' } });
    await rt.close();
  });
});
