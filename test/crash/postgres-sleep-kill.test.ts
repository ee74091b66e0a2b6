/**
 * Sleeping tasks on PostgreSQL under kill -9 (issue #15): runtimes in child processes run tasks
 * that sleep once (0-199 ms) and then finish, and are killed at random moments again and again, a
 * new one each time, so kills land on attempts that are about to sleep, on the settles that put
 * tasks to sleep, and on the wakes; a last runtime drains the queue. Then: every task is done in
 * its second run with the follow-up its sleep left, each task slept once (one `task.sleeping`, in
 * its first run), woke once (one `task.queued` with `reason: 'wake'`, for its second run) and
 * settled once (one `task.done`, in its second run), and no runtime is left in the cluster.
 */
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { isDeepStrictEqual } from 'node:util';
import { describe, expect, it } from 'vitest';
import { prng } from '../fixtures/prng.js';
import { scratchPools } from '../helpers.js';
import { startCrashChild } from '../pg-runtime.js';

const CHILD = fileURLToPath(new URL('../../dist/test/fixtures/postgres/sleep-crash-child.js', import.meta.url));
const pools = scratchPools();

const KILLS = 6;
const TASKS_PER_ROUND = 120;

/** A runtime child (test/pg-runtime.ts startCrashChild). */
function startChild(url: string, round: string, tasks: number, drain: boolean) {
  return startCrashChild(CHILD, [url, round, String(tasks), ...(drain ? ['--drain'] : [])]);
}

describe('runtimes on PostgreSQL killed with -9 while their tasks sleep and wake', () => {
  it('lose no sleeper, wake each once into its second run, and settle each once', async () => {
    const { url, pool } = await pools({ max: 4, migrated: false });
    const seed = Number(process.env.CRASH_SEED ?? 20261206);
    const random = prng(seed);
    for (let kill = 1; kill <= KILLS; kill++) {
      const { child, line, stderr } = startChild(url, String(kill), TASKS_PER_ROUND, false);
      // Killed while its attempts run: a kill timed from `submitted` alone could land, on a loaded
      // machine, before the child had started any, and then no attempt is crashed at all.
      await Promise.race([Promise.all([line('submitted'), line('started')]), once(child, 'exit')]);
      // Odd kills land within 20 ms of the first start, among the first runs in flight (a run is
      // short: it sleeps at once); even ones anywhere in 400 ms, mostly on sleeps, wakes and second runs.
      await new Promise((resolve) => setTimeout(resolve, Math.floor(random() * (kill % 2 === 1 ? 20 : 400))));
      const exited = child.exitCode !== null || child.signalCode !== null ? Promise.resolve() : once(child, 'exit');
      child.kill('SIGKILL');
      await exited;
      if (child.exitCode !== null && child.exitCode !== 0) throw new Error(`runtime child ${kill} failed before the kill: ${stderr()}`);
    }
    const final = startChild(url, 'final', 0, true);
    const [code] = (await once(final.child, 'exit')) as [number | null];
    expect({ code, stderr: final.stderr() }).toEqual({ code: 0, stderr: '' });

    const tasks = (await pool.query<{ id: string; state: string; run: number; output: unknown }>('SELECT id, state, run, output FROM troupe_tasks ORDER BY id')).rows;
    expect(tasks).toHaveLength(KILLS * TASKS_PER_ROUND);
    expect(tasks.filter((t) => t.state !== 'done' || t.run !== 2 || !isDeepStrictEqual(t.output, { wokeWith: { step: 2 }, run: `${t.id}:2` }))).toEqual([]);

    const events = (await pool.query<{ task_id: string; type: string; run: string; reason: string | null }>(
      "SELECT task_id, type, data->>'run' AS run, data->>'reason' AS reason FROM troupe_events WHERE type IN ('task.sleeping', 'task.queued', 'task.done', 'task.failed', 'task.dropped', 'task.cancelled')",
    )).rows;
    const of = new Map<string, string[]>();
    for (const e of events) {
      // Only wakes among the queued events: the submit's, and requeues after a kill, are not counted.
      if (e.type === 'task.queued' && e.reason !== 'wake') continue;
      of.set(e.task_id, [...(of.get(e.task_id) ?? []), `${e.type}:${e.run}${e.reason === 'wake' ? ':wake' : ''}`]);
    }
    for (const t of tasks) expect({ id: t.id, events: (of.get(t.id) ?? []).sort() }).toEqual({ id: t.id, events: ['task.done:2', 'task.queued:2:wake', 'task.sleeping:1'] });
    expect((await pool.query('SELECT id FROM troupe_nodes')).rows).toEqual([]);
    // The kills did land on attempts (taken back as crashed) in both runs, before and after a sleep.
    const crashed = (await pool.query<{ run: number; n: number }>("SELECT run, count(*)::int AS n FROM troupe_attempts WHERE exit = 'crashed' GROUP BY run ORDER BY run")).rows;
    console.log(`seed ${seed}: ${tasks.length} sleepers; attempts crashed by run: ${JSON.stringify(crashed)}`);
    expect(crashed.reduce((sum, r) => sum + r.n, 0)).toBeGreaterThan(0);
  }, 180_000);
});
