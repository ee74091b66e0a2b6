/**
 * Flow-control defaults that do not stall a user, and `heldBy`: why a queued task is held back,
 * on `rt.get()`, `rt.list()` and `troupe show`.
 */
import { describe, expect, it } from 'vitest';
import { builtinAgent, createRuntime, ManualClock, type Runtime, type RuntimeEvent, type RuntimeOptions } from 'troupe';
import { runCli, scratchDirs } from '../helpers.js';

const dir = scratchDirs();
const T0 = Date.UTC(2026, 0, 1, 10, 0, 0);
const troupe = runCli;

function open(options: RuntimeOptions): Promise<Runtime> {
  return createRuntime({ logger: false, threads: 1, slotsPerThread: 2, cancelGraceMs: 500, dataDir: dir(), ...options });
}

describe('the fast-failure pause is opt-in', () => {
  it('with default options, failures on purpose and then a flaky task with a retry policy settle at once', async () => {
    const rt = await open({ agents: [builtinAgent('fail')] });
    const paused: RuntimeEvent[] = [];
    rt.on('agent.paused', (e: RuntimeEvent) => paused.push(e));
    for (const mode of ['fatal', 'result', 'fatal'] as const) {
      expect((await rt.wait((await rt.submit({ agent: 'fail', input: { mode } })).id)).state).toBe('failed');
    }
    const flaky = await rt.submit({ agent: 'fail', input: { succeedOnAttempt: 3 }, retry: { maxAttempts: 3, backoff: 'fixed', delayMs: 10 } });
    expect(await rt.wait(flaky.id, { timeoutMs: 10_000 })).toMatchObject({ state: 'done', attempts: 3 });
    // Retryable failures do not pause either when no backoff is asked for.
    const more = await rt.submitMany(Array.from({ length: 4 }, () => ({ agent: 'fail', input: { mode: 'throw' as const }, retry: { maxAttempts: 1 } })));
    for (const t of more) expect((await rt.wait(t.id, { timeoutMs: 10_000 })).state).toBe('dropped');
    expect(paused).toEqual([]);
    expect(rt.stats().agents.fail).toMatchObject({ paused: false });
    await rt.close();
  });

  it('an opted-in pause (defaultBackoff: true) never counts failures reported on purpose', async () => {
    const clock = new ManualClock(T0);
    const rt = await open({ clock, defaultBackoff: true, agents: [builtinAgent('fail', { concurrency: 1, retry: { maxAttempts: 1 } })] });
    for (let i = 0; i < 4; i++) {
      for (const mode of ['fatal', 'result'] as const) await rt.wait((await rt.submit({ agent: 'fail', input: { mode } })).id);
    }
    expect(rt.stats().agents.fail).toMatchObject({ paused: false, flow: { fastFails: 0 } });
    for (let i = 0; i < 3; i++) await rt.wait((await rt.submit({ agent: 'fail', input: { mode: 'throw' } })).id);
    expect(rt.stats().agents.fail).toMatchObject({ paused: true, flow: { pausedUntil: T0 + 1_800_000 } });
    await rt.close();
  });
});

describe('heldBy: why a queued task is held back', () => {
  it('frozen, and `troupe show` prints it', async () => {
    const dataDir = dir();
    const rt = await open({ dataDir, agents: [builtinAgent('echo')] });
    await rt.freeze('maintenance');
    const task = await rt.submit({ agent: 'echo', input: 1 });
    expect((await rt.get(task.id)).heldBy).toEqual({ kind: 'frozen' });
    expect((await rt.list({ state: 'queued' })).tasks.map((t) => t.heldBy)).toEqual([{ kind: 'frozen' }]);
    await rt.close();
    const shown = await troupe(['show', task.id, '--data-dir', dataDir]);
    expect(shown.stderr).toBe('');
    expect(shown.stdout).toMatch(/^held by\s+frozen$/m);
  });

  it('a backoff pause, until it ends', async () => {
    const clock = new ManualClock(T0);
    const rt = await open({ clock, agents: [builtinAgent('fail', { concurrency: 1, retry: { maxAttempts: 1 }, backoff: { failures: 1, pauseMs: 60_000 } })] });
    await rt.wait((await rt.submit({ agent: 'fail', input: { mode: 'throw' } })).id);
    const next = await rt.submit({ agent: 'fail', input: { succeedOnAttempt: 1 } });
    expect((await rt.get(next.id)).heldBy).toEqual({ kind: 'backoff', until: T0 + 60_000 });
    clock.advance(60_000);
    expect(await rt.wait(next.id)).toMatchObject({ state: 'done' });
    expect((await rt.get(next.id)).heldBy).toBeUndefined();
    await rt.close();
  });

  it('the rate bucket and the daily budget, each with when it frees', async () => {
    const clock = new ManualClock(T0);
    const rt = await open({
      clock,
      agents: [
        builtinAgent('echo', { rate: { limit: 1, windowMs: 60_000 } }),
        { ...builtinAgent('echo'), name: 'daily', dailyLimit: { limit: 1, resetAt: '00:00', tz: 'UTC' } },
      ],
    });
    await rt.wait((await rt.submit({ agent: 'echo', input: 1 })).id);
    const rated = await rt.submit({ agent: 'echo', input: 2 });
    expect((await rt.get(rated.id)).heldBy).toEqual({ kind: 'rate', until: T0 + 60_000 });
    await rt.wait((await rt.submit({ agent: 'daily', input: 1 })).id);
    const budgeted = await rt.submit({ agent: 'daily', input: 2 });
    expect((await rt.get(budgeted.id)).heldBy).toEqual({ kind: 'daily', until: Date.UTC(2026, 0, 2) });
    await rt.close();
  });

  it('an instance target and a degraded instance; a delayed or settled task has no hold', async () => {
    const rt = await open({ failedAttemptThreshold: 1, agents: [builtinAgent('echo'), builtinAgent('fail', { retry: { maxAttempts: 1 } })] });
    const done = await rt.wait((await rt.submit({ agent: 'echo', input: 1 })).id);
    expect(done.heldBy).toBeUndefined();
    await rt.setDispatchTarget(done.instanceKey, 0);
    const targeted = await rt.submit({ agent: 'echo', input: 2 });
    expect((await rt.get(targeted.id)).heldBy).toEqual({ kind: 'target' });
    const delayed = await rt.submit({ agent: 'echo', input: 3, lane: 'later', delayMs: 600_000 });
    expect((await rt.get(delayed.id)).heldBy).toBeUndefined();

    const degraded = new Promise<void>((resolve) => rt.on('instance.degraded', () => resolve()));
    await rt.wait((await rt.submit({ agent: 'fail', input: { mode: 'throw' } })).id);
    await degraded;
    const stuck = await rt.submit({ agent: 'fail', input: { succeedOnAttempt: 1 } });
    expect((await rt.get(stuck.id)).heldBy).toEqual({ kind: 'degraded' });
    await rt.close();
  });
});
