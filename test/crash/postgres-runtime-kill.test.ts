/**
 * The crash suite on PostgreSQL (issue #15, "Tests"): a runtime on a PostgreSQL database, in a
 * child process, is killed with -9 at random moments (while it opens, while it submits, while it
 * works), again and again, a new one each time; a last one drains the queue. Each new runtime's
 * sweeper takes the dead ones' attempts back. Then, from the database and the agent's own record:
 * every task is terminal, no attempt number ran twice, every attempt the agent made is a stored
 * one, no run went over its attempt budget, each run has exactly one settling event, the killed
 * runtimes' unfinished attempts ended as crashed, and no runtime is left in the cluster.
 */
import { once } from 'node:events';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { prng } from '../fixtures/prng.js';
import { scratchDirs, scratchPools } from '../helpers.js';
import { startCrashChild } from '../pg-runtime.js';
import { storedAttempts } from '../cluster.js';

const CHILD = fileURLToPath(new URL('../../dist/test/fixtures/postgres/runtime-crash-child.js', import.meta.url));
const pools = scratchPools();
const dirs = scratchDirs();

const KILLS = 8;
const TASKS_PER_ROUND = 150;
/** The record agent's policy in the child. */
const MAX_ATTEMPTS = 3;
const SETTLING = ['task.done', 'task.failed', 'task.dropped', 'task.cancelled'];

/** A runtime child (test/pg-runtime.ts startCrashChild). */
function startChild(url: string, file: string, round: string, tasks: number, drain: boolean) {
  return startCrashChild(CHILD, [url, file, round, String(tasks), ...(drain ? ['--drain'] : [])]);
}

describe('runtimes on PostgreSQL killed with -9 at random moments', () => {
  it('lose no task, run no attempt twice, keep every budget and settle each run once', async () => {
    const { url, pool } = await pools({ max: 4, migrated: false });
    const file = join(dirs(), 'agent-attempts.log');
    const seed = Number(process.env.CRASH_SEED ?? 20261206);
    const random = prng(seed);
    const phases: string[] = [];
    for (let kill = 1; kill <= KILLS; kill++) {
      const { child, line, stderr } = startChild(url, file, String(kill), TASKS_PER_ROUND, false);
      const roll = random();
      const phase = roll < 0.15 ? 'spawn' : roll < 0.3 ? 'open' : 'work';
      if (phase !== 'spawn') await Promise.race([line(phase === 'open' ? 'open' : 'submitted'), once(child, 'exit')]);
      await new Promise((resolve) => setTimeout(resolve, Math.floor(random() * (phase === 'work' ? 400 : 60))));
      const exited = child.exitCode !== null || child.signalCode !== null ? Promise.resolve() : once(child, 'exit');
      child.kill('SIGKILL');
      await exited;
      if (child.exitCode !== null && child.exitCode !== 0) throw new Error(`runtime child ${kill} failed before the kill: ${stderr()}`);
      phases.push(phase);
    }
    const final = startChild(url, file, 'final', 0, true);
    const [code] = (await once(final.child, 'exit')) as [number | null];
    expect({ code, stderr: final.stderr() }).toEqual({ code: 0, stderr: '' });

    // Every task terminal, within its budget, in its one run.
    const tasks = (await pool.query<{ id: string; state: string; runs: number; attempts: number; attempt_seq: number; max_attempts: number }>('SELECT id, state, run AS runs, attempts, attempt_seq, max_attempts FROM troupe_tasks ORDER BY id')).rows;
    expect(tasks.length).toBeGreaterThanOrEqual(TASKS_PER_ROUND);
    expect(tasks.filter((t) => !['done', 'failed', 'dropped'].includes(t.state))).toEqual([]);
    expect(tasks.filter((t) => t.runs !== 1 || t.attempts > MAX_ATTEMPTS || t.max_attempts !== MAX_ATTEMPTS)).toEqual([]);

    // Attempts: all ended; those that count per run within the budget; the killed ones crashed.
    const attempts = await storedAttempts(pool);
    expect(attempts.filter((a) => a.exit === null)).toEqual([]);
    const counted = new Map<string, number>();
    for (const a of attempts) if (a.exit !== 'interrupted') counted.set(a.task_id, (counted.get(a.task_id) ?? 0) + 1);
    for (const t of tasks) expect({ id: t.id, counted: counted.get(t.id) ?? 0 }).toEqual({ id: t.id, counted: t.attempts });
    const crashed = attempts.filter((a) => a.exit === 'crashed');
    expect(crashed.length).toBeGreaterThan(0);
    expect(crashed.filter((a) => a.code !== 'PROCESS_CRASHED')).toEqual([]);

    // The agent's own record: each whole line a stored attempt, none twice. A kill can cut one
    // line per agent thread short (two threads), no more.
    const lines = existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter(Boolean) : [];
    const whole = lines.filter((l) => /^(\S+) \1:1 \d+$/.test(l));
    expect(lines.length - whole.length).toBeLessThanOrEqual(2 * KILLS);
    expect(new Set(whole).size).toBe(whole.length);
    const stored = new Set(attempts.map((a) => `${a.task_id} ${a.task_id}:${a.run} ${a.attempt}`));
    expect(whole.filter((l) => !stored.has(l))).toEqual([]);
    for (const a of attempts.filter((r) => r.exit === 'success')) expect(stored.has(`${a.task_id} ${a.task_id}:${a.run} ${a.attempt}`) && whole.includes(`${a.task_id} ${a.task_id}:${a.run} ${a.attempt}`)).toBe(true);

    // Each run exactly one settling event, and it says what the task says.
    const settles = (await pool.query<{ task_id: string; run: string; type: string }>("SELECT task_id, data->>'run' AS run, type FROM troupe_events WHERE type = ANY($1::text[])", [SETTLING])).rows;
    const byRun = new Map<string, string[]>();
    for (const s of settles) byRun.set(`${s.task_id}:${s.run}`, [...(byRun.get(`${s.task_id}:${s.run}`) ?? []), s.type]);
    for (const t of tasks) expect({ id: t.id, settles: byRun.get(`${t.id}:1`) }).toEqual({ id: t.id, settles: [`task.${t.state}`] });
    expect(settles).toHaveLength(tasks.length);

    // Every runtime left or was taken for dead and removed.
    expect((await pool.query('SELECT id FROM troupe_nodes')).rows).toEqual([]);
    const inState = (state: string) => tasks.filter((t) => t.state === state).length;
    console.log(`seed ${seed}, kills at ${phases.join(' ')}: ${tasks.length} tasks (${inState('done')} done, ${inState('failed')} failed, ${inState('dropped')} dropped), ${attempts.length} attempts, ${crashed.length} crashed and taken back`);
  }, 180_000);
});
