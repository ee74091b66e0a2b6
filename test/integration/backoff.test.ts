import { describe, expect, it } from 'vitest';
import { builtinAgent, createRuntime, ManualClock, type Runtime, type RuntimeEvent } from 'troupe';
import { createTestRuntime, nextEvent } from 'troupe/testing';
import { scratchDirs } from '../helpers.js';

const dataDir = scratchDirs();

describe('retry backoff on an injected clock', () => {
  it('waits the exponential schedule between attempts, capped at maxDelayMs', async () => {
    const t = await createTestRuntime({
      random: () => 0, // no jitter: exact delays
      starvation: false, // no supervisor cycle: the retry timer is the only clock timer
      retention: false, // nor a retention sweep
      agents: [builtinAgent('fail', { backoff: false, retry: { maxAttempts: 4, backoff: 'exponential', delayMs: 1_000, maxDelayMs: 3_000 } })],
    });
    const { rt, clock } = t;
    const delays: number[] = [];
    rt.on('task.retrying', (e) => delays.push(e.data.delayMs));
    const task = await rt.submit({ agent: 'fail', input: {} });
    for (const expected of [1_000, 2_000, 3_000]) {
      const retrying = await nextEvent(rt, 'task.retrying');
      expect(retrying.data.delayMs).toBe(expected);
      const stored = await rt.get(task.id);
      expect(stored).toMatchObject({ state: 'queued', runAt: clock.now() + expected });
      // The durable timer is the only armed clock timer: it fires at the due instant, not before.
      await t.advance(expected - 1);
      expect(clock.pending).toBe(1);
      const started = nextEvent(rt, 'task.started');
      await t.advance(1);
      expect(clock.pending).toBe(0);
      await started;
    }
    expect(await rt.wait(task.id)).toMatchObject({ state: 'dropped', attempts: 4 });
    expect(delays).toEqual([1_000, 2_000, 3_000]);
    await t.close();
  });

  it('keeps a backoff timer across a restart: the retry runs when it falls due, not before', async () => {
    const dir = { path: dataDir() };
    const clock = new ManualClock();
    // No retention sweep: the retry timer is the only clock timer.
    const options = { dataDir: dir.path, logger: false as const, threads: 1, clock, random: () => 0, retention: false as const };
    const agents = [builtinAgent('fail', { retry: { maxAttempts: 2, backoff: 'fixed', delayMs: 60_000 } })];
    const first = await createRuntime({ ...options, agents });
    const task = await first.submit({ agent: 'fail', input: { succeedOnAttempt: 2 } });
    await nextEvent(first, 'task.retrying');
    await first.close();

    clock.advance(30_000);
    const second = await createRuntime({ ...options, agents });
    expect(await second.get(task.id)).toMatchObject({ state: 'queued', attempts: 1, runAt: clock.now() + 30_000 });
    expect(second.stats()).toMatchObject({ queued: 0, delayed: 1 });
    clock.advance(29_999);
    expect(clock.pending).toBe(1);
    expect(second.stats().delayed).toBe(1);
    clock.advance(1);
    // The backoff timer fired: the task is runnable (the wake step puts it in the governor at once,
    // which may arm the supervisor's cycle timer, so the clock's pending count says nothing here).
    expect(second.stats().delayed).toBe(0);
    expect(await second.wait(task.id)).toMatchObject({ state: 'done', attempts: 2, output: { recoveredOnAttempt: 2 } });
    await second.close();
  });

  it('a cancelled task in backoff never retries, and its timer is gone after a restart', async () => {
    const dir = { path: dataDir() };
    const clock = new ManualClock();
    const options = { dataDir: dir.path, logger: false as const, threads: 1, clock, agents: [builtinAgent('fail', { retry: { maxAttempts: 3, delayMs: 10_000, jitter: 0 } })] };
    const rt = await createRuntime(options);
    const task = await rt.submit({ agent: 'fail' });
    await nextEvent(rt, 'task.retrying');
    expect(await rt.cancel(task.id, 'changed my mind')).toMatchObject({ state: 'cancelled', attempts: 1 });
    clock.advance(60_000);
    expect((await rt.get(task.id)).attempts).toBe(1);
    await rt.close();
    const again = await createRuntime(options);
    clock.advance(60_000);
    expect(await again.get(task.id)).toMatchObject({ state: 'cancelled', attempts: 1 });
    expect(again.stats().delayed).toBe(0);
    await again.close();
  });
});

describe('delayed start', () => {
  it('holds a task with delayMs or runAt on a durable timer, across a restart', async () => {
    const dir = { path: dataDir() };
    const clock = new ManualClock();
    const options = { dataDir: dir.path, logger: false as const, threads: 1, clock, retention: false as const, agents: [builtinAgent('echo')] };
    const first = await createRuntime(options);
    const later = await first.submit({ agent: 'echo', input: 'later', delayMs: 5_000 });
    const at = await first.submit({ agent: 'echo', input: 'at', runAt: clock.now() + 8_000 });
    const now = await first.submit({ agent: 'echo', input: 'now', runAt: clock.now() - 1 });
    expect(later).toMatchObject({ state: 'queued', runAt: clock.now() + 5_000 });
    expect(await first.wait(now.id)).toMatchObject({ state: 'done' });
    expect(first.stats().delayed).toBe(2);
    clock.advance(4_999);
    expect(clock.pending).toBe(1);
    await first.close();

    const second = await createRuntime(options);
    expect(second.stats().delayed).toBe(2);
    clock.advance(1);
    expect(await second.wait(later.id)).toMatchObject({ state: 'done', output: 'later' });
    expect((await second.get(at.id)).state).toBe('queued');
    clock.advance(3_000);
    expect(await second.wait(at.id)).toMatchObject({ state: 'done', output: 'at' });
    await second.close();
  });

  it('rejects a bad delay before storing anything', async () => {
    const dir = { path: dataDir() };
    const rt = await createRuntime({ dataDir: dir.path, logger: false, threads: 1, agents: [builtinAgent('echo')] });
    await expect(rt.submit({ agent: 'echo', delayMs: -5 })).rejects.toMatchObject({ code: 'INVALID_INPUT', message: expect.stringContaining('task.delayMs') });
    await expect(rt.submit({ agent: 'echo', runAt: 1.5 })).rejects.toMatchObject({ code: 'INVALID_INPUT', message: expect.stringContaining('task.runAt') });
    await expect(rt.submit({ agent: 'echo', runAt: 1, delayMs: 1 })).rejects.toMatchObject({ code: 'INVALID_INPUT', message: expect.stringContaining('not both') });
    expect((await rt.list()).tasks).toHaveLength(0);
    await rt.close();
  });
});
