/**
 * Delays past Node's 2^31-1 ms timer limit on the real clock, with real threads (issue 9 item 8):
 * an overflowing `setTimeout` fires after 1 ms, so a long timeout must not fire early and a far
 * timer must not spin. These tests wait a few hundred milliseconds of wall time on purpose: that
 * is the window in which an overflowed timer would have fired hundreds of times.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { builtinAgent, type Runtime, type RuntimeEvent, type Task } from 'troupe';
import { nextEvent } from 'troupe/testing';
import { fixtureAgent, runtimes, started } from '../helpers.js';

const runtime = runtimes();
const LONG = 2 ** 31;
const agents = [builtinAgent('sleep', { retry: { maxAttempts: 1 } }), builtinAgent('echo'), { name: 'int', module: fixtureAgent('interactive') }];

let overflows = 0;
const onWarning = (warning: Error) => {
  if (warning.name === 'TimeoutOverflowWarning') overflows++;
};
beforeEach(() => {
  overflows = 0;
  process.on('warning', onWarning);
});
afterEach(() => {
  process.off('warning', onWarning);
});

const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Settles with how `promise` ended, so a late rejection is never unhandled. */
function outcome(promise: Promise<Task>): { current: () => 'pending' | Task | Error } {
  let current: 'pending' | Task | Error = 'pending';
  promise.then(
    (task) => (current = task),
    (error: Error) => (current = error),
  );
  return { current: () => current };
}

describe('long timers', () => {
  it('runs a task with timeoutMs 2^31 to done instead of timing it out at once', async () => {
    const rt = await runtime({ agents });
    const task = await rt.submit({ agent: 'sleep', input: { ms: 100 }, timeoutMs: LONG });
    expect(await rt.wait(task.id)).toMatchObject({ state: 'done', attempts: 1, output: { sleptMs: 100 } });
    expect(overflows).toBe(0);
  });

  it('keeps rt.wait with timeoutMs 2^31 pending on a held-back task, then resolves it', async () => {
    const rt = await runtime({ agents });
    await rt.freeze('hold');
    const task = await rt.submit({ agent: 'echo', input: 'later' });
    const wait = outcome(rt.wait(task.id, { timeoutMs: LONG }));
    await pause(200);
    expect(wait.current()).toBe('pending');
    expect(overflows).toBe(0);
    await rt.unfreeze();
    await expect(rt.wait(task.id)).resolves.toMatchObject({ state: 'done' });
    await pause(0);
    expect(wait.current()).toMatchObject({ state: 'done', output: 'later' });
  });

  it('holds a task submitted with delayMs past 2^31 in the queue, without spinning', async () => {
    const rt = await runtime({ agents, threads: 1 });
    // The thread's start-up (loading its modules) is not what this measures: let it finish first.
    await rt.wait((await rt.submit({ agent: 'echo', input: 'warm' })).id);
    const started: RuntimeEvent[] = [];
    rt.on('task.started', (e) => started.push(e));
    // The wheel arms `runAt - now`, a few ms under delayMs by then: a minute more keeps it past the limit.
    const task = await rt.submit({ agent: 'echo', input: 'next month', delayMs: LONG + 60_000 });
    expect(task.runAt).toBeGreaterThanOrEqual(task.createdAt + LONG + 60_000);
    const cpu = process.cpuUsage();
    await pause(300);
    const used = process.cpuUsage(cpu);
    expect(await rt.get(task.id)).toMatchObject({ state: 'queued', attempts: 0 });
    expect(started).toEqual([]);
    expect(overflows).toBe(0);
    expect((used.user + used.system) / 1_000).toBeLessThan(100);
  });

  it('arms monthly and yearly crons without overflow warnings or a busy loop', async () => {
    const rt = await runtime({ agents });
    // Whether the next tick is more than 24.8 days away depends on today's date for the monthly
    // cron; the yearly one is, except in the last weeks of December.
    await rt.schedules.create({ id: 'monthly', cron: '0 0 1 * *', task: { agent: 'echo' } });
    await rt.schedules.create({ id: 'yearly', cron: '0 0 1 1 *', task: { agent: 'echo' } });
    await rt.schedules.create({ id: 'leap-day', cron: '0 0 29 2 *', task: { agent: 'echo' } });
    const cpu = process.cpuUsage();
    await pause(500);
    const used = process.cpuUsage(cpu);
    expect(overflows).toBe(0);
    expect((used.user + used.system) / 1_000).toBeLessThan(150);
    expect(rt.schedules.list().map((s) => s.fired)).toEqual([0, 0, 0]);
  });

  it('lets an agent sleep 2^31 ms in its worker thread until cancelled', async () => {
    const rt = await runtime({ agents });
    const task = await rt.submit({ agent: 'sleep', input: { ms: LONG, steps: 1 } });
    await started(rt, task.id);
    await pause(300);
    expect(await rt.get(task.id)).toMatchObject({ state: 'running' });
    await rt.cancel(task.id);
    expect(await rt.wait(task.id)).toMatchObject({ state: 'cancelled' });
  });

  it('keeps waitForInput with timeoutMs 2^31 waiting until an input arrives', async () => {
    const rt = await runtime({ agents });
    const task = await rt.submit({ agent: 'int', input: { mode: 'timeout', timeoutMs: LONG } });
    await nextEvent(rt, 'task.waiting', { taskId: task.id });
    await pause(300);
    expect(await rt.get(task.id)).toMatchObject({ state: 'waiting' });
    await rt.sendInput(task.id, { message: 'here' });
    expect(await rt.wait(task.id)).toMatchObject({ state: 'done', output: { answer: 'here' } });
  });
});
