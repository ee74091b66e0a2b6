/**
 * `rt.poke()` after the wall clock was stepped forward: the durable timers and the schedules'
 * ticks that the clock now says are due fire at once, not when their old wait (up to a minute)
 * runs out.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { builtinAgent, createRuntime, systemClock, type Clock, type Runtime } from 'troupe';
import { scratchDirs } from '../helpers.js';

const dir = scratchDirs();
const HOUR = 3_600_000;

/** The system clock, whose wall time can be stepped while its timeouts keep their own time, as Node's do. */
function steppableClock(): Clock & { step(ms: number): void } {
  let offset = 0;
  return {
    now: () => Date.now() + offset,
    setTimeout: (fn, ms) => systemClock.setTimeout(fn, ms),
    clearTimeout: (timer) => systemClock.clearTimeout(timer),
    step(ms) {
      offset += ms;
    },
  };
}

let rt: Runtime | undefined;
afterEach(async () => {
  await rt?.close();
  rt = undefined;
});

/** Settles with 'late' unless `promise` settles first, within `ms` (well under the wheels' minute). */
function inTime<T>(promise: Promise<T>, ms: number): Promise<T | 'late'> {
  return Promise.race([promise, new Promise<'late'>((resolve) => setTimeout(() => resolve('late'), ms))]);
}

describe('poke after a wall clock step', () => {
  it('fires a delayed task whose time the step passed', async () => {
    const clock = steppableClock();
    rt = await createRuntime({ dataDir: dir(), logger: false, threads: 1, clock, agents: [builtinAgent('echo')] });
    const task = await rt.submit({ agent: 'echo', input: 'later', delayMs: HOUR });
    const done = rt.wait(task.id);
    expect(await inTime(done, 200)).toBe('late');
    clock.step(2 * HOUR);
    rt.poke();
    const settled = await inTime(done, 5_000);
    expect(settled).not.toBe('late');
    expect(settled).toMatchObject({ state: 'done', output: 'later' });
  });

  it("fires a schedule's tick that the step passed", async () => {
    const clock = steppableClock();
    rt = await createRuntime({ dataDir: dir(), logger: false, threads: 1, clock, agents: [builtinAgent('echo')] });
    const fired: number[] = [];
    rt.on('schedule.fired', (event) => fired.push(event.data.tick));
    const schedule = await rt.schedules.create({ id: 'hourly', cron: '0 * * * *', task: { agent: 'echo', input: 'tick' } });
    clock.step(HOUR);
    rt.poke();
    expect(await inTime(within(() => fired.length > 0), 5_000)).not.toBe('late');
    expect(fired).toEqual([schedule.nextRunAt]);
  });
});

/** Resolves once `done()` holds. */
async function within(done: () => boolean): Promise<void> {
  while (!done()) await new Promise((resolve) => setTimeout(resolve, 5));
}
