/**
 * The LMDB scheduler's timers for crons whose next tick is past Node's 2^31-1 ms timer limit (issue
 * 9 item 8): an overflowing `setTimeout` fires after 1 ms, so a far tick must not spin. It waits a
 * few hundred milliseconds of wall time on purpose: the window in which an overflowed timer would
 * have fired hundreds of times. LMDB-only: PostgreSQL fires ticks from its table every `fireMs`.
 * Task, wait, delay, sleep and input timeouts past the limit are contract-timers.ts's, on both stores.
 */
import { describe, expect, it } from 'vitest';
import { builtinAgent } from 'troupe';
import { runtimes } from '../helpers.js';
import { overflowWarnings } from './contract-timers.js';
import { mainThreadCpuNs } from '../../bench/measure.js';

const runtime = runtimes();
const agents = [builtinAgent('echo')];

const overflows = overflowWarnings();

const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * CPU time of the main thread, ms, where the timers run (bench/measure.ts reads it from Linux's
 * schedstat): the process's would count the runtime's threads too, which are still loading right
 * after it opens (a fresh-clone CI run saw 182 ms of the process's CPU in the 500 ms). Elsewhere,
 * the process's time.
 */
function mainThreadCpuMs(): number {
  const ns = mainThreadCpuNs();
  if (ns !== undefined) return ns / 1e6;
  const { user, system } = process.cpuUsage();
  return (user + system) / 1_000;
}

describe('long timers', () => {
  it('arms monthly and yearly crons without overflow warnings or a busy loop', async () => {
    const rt = await runtime({ agents });
    // Whether the next tick is more than 24.8 days away depends on today's date for the monthly
    // cron; the yearly one is, except in the last weeks of December.
    await rt.schedules.create({ id: 'monthly', cron: '0 0 1 * *', task: { agent: 'echo' } });
    await rt.schedules.create({ id: 'yearly', cron: '0 0 1 1 *', task: { agent: 'echo' } });
    await rt.schedules.create({ id: 'leap-day', cron: '0 0 29 2 *', task: { agent: 'echo' } });
    const cpu = mainThreadCpuMs();
    await pause(500);
    expect(overflows()).toBe(0);
    expect(mainThreadCpuMs() - cpu).toBeLessThan(150);
    expect(rt.schedules.list().map((s) => s.fired)).toEqual([0, 0, 0]);
  });
});
