/**
 * `stats().tasks` and `stats().agents[name].tasks` on PostgreSQL: every task of the cluster by
 * state, as on LMDB, counted in the background while stats() is called (src/cluster/task-counts.ts),
 * on every runtime sharing the database. Before, both were empty on PostgreSQL.
 */
import { describe, expect, it, vi } from 'vitest';
import { builtinAgent } from 'troupe';
import { scratchPools, started } from '../helpers.js';
import { pgRuntimes } from '../pg-runtime.js';

const pools = scratchPools();
const runtime = pgRuntimes();

const NONE = { queued: 0, running: 0, waiting: 0, sleeping: 0, needs_attention: 0, done: 0, failed: 0, dropped: 0, cancelled: 0 };
/** The counts are taken at most once a second: a poll of stats() sees them within a few. */
const COUNTED = { timeout: 10_000, interval: 50 };

describe('stats() on PostgreSQL', () => {
  it('counts every task of the cluster by state, in all and per agent, on each runtime sharing the database', async () => {
    const { url } = await pools({ max: 1 });
    const a = await runtime(url, { agents: [builtinAgent('echo')] });
    const b = await runtime(url, { agents: [builtinAgent('echo'), builtinAgent('sleep'), builtinAgent('fail')] });
    // Nothing is counted before the first call; then an empty database counts zero in every state.
    expect(a.stats().tasks).toEqual({});
    await vi.waitFor(() => expect(a.stats().tasks).toEqual(NONE), COUNTED);

    const echoes = await a.submitMany([1, 2, 3].map((input) => ({ agent: 'echo', input })));
    for (const task of echoes) expect((await a.wait(task.id)).state).toBe('done');
    const failing = await b.submit({ agent: 'fail', input: { mode: 'fatal' } });
    expect((await b.wait(failing.id)).state).toBe('failed');
    const sleeping = await b.submit({ agent: 'sleep', input: { ms: 600_000, steps: 1 } });
    await started(b, sleeping.id);
    await b.submit({ agent: 'echo', input: 'later', delayMs: 3_600_000 });

    for (const rt of [a, b]) {
      await vi.waitFor(() => expect(rt.stats().tasks).toEqual({ ...NONE, done: 3, failed: 1, running: 1, queued: 1 }), COUNTED);
      expect(rt.stats().agents).toMatchObject({ echo: { tasks: { done: 3, queued: 1 } }, fail: { tasks: { failed: 1 } }, sleep: { tasks: { running: 1 } } });
    }
    // Non-zero counts only per agent; an agent `a` does not run shows with its tasks, as on LMDB.
    expect(a.stats().agents.sleep).toEqual({ queued: 0, reserved: 0, limit: 0, paused: false, models: {}, tasks: { running: 1 }, flow: null });

    // Cancelled on b, where it runs: a counts it.
    expect(await b.cancel(sleeping.id, 'enough')).toMatchObject({ state: 'cancelled' });
    await vi.waitFor(() => expect(a.stats().tasks).toEqual({ ...NONE, done: 3, failed: 1, queued: 1, cancelled: 1 }), COUNTED);
    expect(a.stats().agents.sleep!.tasks).toEqual({ cancelled: 1 });

    // Empty once closed, as on LMDB.
    await a.close();
    expect(a.stats().tasks).toEqual({});
    expect(a.stats().agents.sleep).toBeUndefined();
  });
});
