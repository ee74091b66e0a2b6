/**
 * `stats().tasks` and `stats().agents[name].tasks` on PostgreSQL: every task of the cluster by
 * state, as on LMDB, counted in the background while stats() is called (src/cluster/task-counts.ts),
 * on every runtime sharing the database. Before, both were empty on PostgreSQL.
 */
import { describe, expect, it, vi } from 'vitest';
import { builtinAgent, createRuntime } from 'troupe';
import { COUNT_ACTIVE, countActiveTasks, countAllTasks, type TaskCount } from '../../src/store/postgres/counts.js';
import { scratchDirs, scratchPools, started } from '../helpers.js';
import { pgRuntimes } from '../pg-runtime.js';

const pools = scratchPools();
const runtime = pgRuntimes();
const dirs = scratchDirs();

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

describe('agents\' limits in stats() on PostgreSQL', () => {
  it('shows the concurrency the cluster holds for each agent: none as on LMDB, else the stored one, whichever runtime stored it', async () => {
    const { url } = await pools({ max: 1 });
    const limits = (rt: { stats(): { agents: Record<string, { limit: number | null; models: object } | undefined> } }) => {
      const { limit, models } = rt.stats().agents.echo!;
      return { limit, models };
    };
    // Registered without concurrency, where none is stored: unlimited (null), as LMDB shows it.
    const lmdb = await createRuntime({ dataDir: dirs(), logger: false, threads: 1, agents: [builtinAgent('echo')] });
    const lmdbShows = limits(lmdb);
    await lmdb.close();
    expect(lmdbShows).toEqual({ limit: null, models: {} });
    const a = await runtime(url, { agents: [builtinAgent('echo')] });
    expect(limits(a)).toEqual(lmdbShows);

    // Another runtime stores limits: a, registered without any, shows what its claims now obey.
    const stored = { limit: 3, models: { big: { reserved: 0, limit: 1 } } };
    const b = await runtime(url, { agents: [builtinAgent('echo', { concurrency: { total: 3, big: 1 } })] });
    expect(limits(b)).toEqual(stored);
    await vi.waitFor(() => expect(limits(a)).toEqual(stored), COUNTED);
    // One opened later without concurrency leaves them, and shows them from its start.
    const c = await runtime(url, { agents: [builtinAgent('echo')] });
    expect(limits(c)).toEqual(stored);

    // A later registration with other limits replaces them on every runtime, b's own included.
    a.agents.register(builtinAgent('echo', { concurrency: 5 }));
    for (const rt of [a, b, c]) await vi.waitFor(() => expect(limits(rt)).toEqual({ limit: 5, models: {} }), COUNTED);
  });
});

describe('the counts of stats() in the database', () => {
  it('counts queued and running tasks from their partial indexes, and every state with one scan', async () => {
    const { pool } = await pools({ max: 1 });
    await pool.query(`INSERT INTO troupe_tasks (id, agent, state, max_attempts) SELECT 'd' || g, 'a' || (g % 2), 'done', 1 FROM generate_series(1, 5) g`);
    await pool.query(`INSERT INTO troupe_tasks (id, agent, state, max_attempts) SELECT 'q' || g, 'a' || (g % 2), 'queued', 1 FROM generate_series(1, 3) g`);
    // Queued, but not due for an hour: counted queued, and delayed.
    await pool.query(`INSERT INTO troupe_tasks (id, agent, state, max_attempts, run_at) VALUES ('q9', 'a1', 'queued', 1, now() + interval '1 hour')`);
    await pool.query(`INSERT INTO troupe_tasks (id, agent, state, max_attempts, owner_node, attempt_id, lease_until, attempt_started_at) VALUES ('r1', 'a1', 'running', 1, 'n', 'x', now(), now())`);
    const sorted = (rows: TaskCount[]) => [...rows].sort((x, y) => `${x.agent}${x.state}`.localeCompare(`${y.agent}${y.state}`));
    expect(sorted(await countActiveTasks(pool))).toEqual([
      { agent: 'a0', state: 'queued', n: 1, delayed: 0 },
      { agent: 'a1', state: 'queued', n: 3, delayed: 1 },
      { agent: 'a1', state: 'running', n: 1, delayed: 0 },
    ]);
    expect(sorted(await countAllTasks(pool))).toEqual([
      { agent: 'a0', state: 'done', n: 2, delayed: 0 },
      { agent: 'a0', state: 'queued', n: 1, delayed: 0 },
      { agent: 'a1', state: 'done', n: 3, delayed: 0 },
      { agent: 'a1', state: 'queued', n: 3, delayed: 1 },
      { agent: 'a1', state: 'running', n: 1, delayed: 0 },
    ]);
    // Whatever the table's size, the planner can answer the active count from their partial
    // indexes, never reading a settled task (on these few rows it would rather scan, so scans are
    // priced out; the queued rows are read for their run_at).
    const client = await pool.connect();
    try {
      await client.query('SET enable_seqscan = off');
      const { rows } = await client.query<{ 'QUERY PLAN': unknown }>(`EXPLAIN (FORMAT JSON) ${COUNT_ACTIVE}`);
      const plan = JSON.stringify(rows[0]!['QUERY PLAN']);
      expect(plan).not.toContain('Seq Scan');
      expect(plan.match(/"Index Name"/g)).toHaveLength(2);
    } finally {
      client.release();
    }
  });
});
