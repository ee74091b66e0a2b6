/**
 * `rt.prune({ before, states })` on PostgreSQL, as on LMDB (README "Pruning"): exactly the settled
 * tasks its options select go, with their attempt rows and log lines (their events stay, their
 * idempotency keys can be used again); queued and running tasks, and settled ones it does not
 * select, stay. Bad options are refused with LMDB's code and message, and nothing is removed. The
 * statement runs in batches (pruneSettled with a small batch) from the settled index. Settle times
 * are moved on the database's clock; nothing waits for time.
 */
import type pg from 'pg';
import { describe, expect, it } from 'vitest';
import { builtinAgent, createRuntime, type Runtime, type Task } from 'troupe';
import { PRUNE_TASKS, pruneSettled, RETENTION_LOCK } from '../../src/store/postgres/retention.js';
import { fixtureAgent, rejection, scratchDirs, scratchPools, started } from '../helpers.js';
import { pgRuntimes } from '../pg-runtime.js';

const pools = scratchPools();
const runtime = pgRuntimes();
const dirs = scratchDirs();
const HOUR = 3_600_000;
/** Sessions waiting for an advisory lock (pg_locks: pg_stat_activity would answer from one snapshot per transaction). */
const lockWaiters = async (client: Pick<pg.Pool, 'query'>) =>
  (await client.query<{ n: number }>("SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")).rows[0]!.n;

const rowsOf = async (pool: pg.Pool, table: 'troupe_attempts' | 'troupe_logs', id: string) =>
  (await pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${table} WHERE task_id = $1`, [id])).rows[0]!.n;
const taskIds = async (pool: Pick<pg.Pool, 'query'>) => (await pool.query<{ id: string }>('SELECT id FROM troupe_tasks ORDER BY id')).rows.map((r) => r.id);
/** What a task left: its attempt rows and log lines. */
const leftBy = async (pool: pg.Pool, tasks: readonly Task[]) => {
  let attempts = 0;
  let logLines = 0;
  for (const t of tasks) {
    attempts += await rowsOf(pool, 'troupe_attempts', t.id);
    logLines += await rowsOf(pool, 'troupe_logs', t.id);
  }
  return { attempts, logLines };
};
const settledAgo = (pool: pg.Pool, task: Task, hours: number) => pool.query(`UPDATE troupe_tasks SET settled_at = now() - $2 * interval '1 hour' WHERE id = $1`, [task.id, hours]);

describe('rt.prune() on PostgreSQL', () => {
  it('removes exactly the settled tasks its options select, with their attempt rows and log lines, and keeps the rest', async () => {
    const { url, pool } = await pools({ max: 2 });
    const rt = await runtime(url, {
      agents: [
        { name: 'logging', module: fixtureAgent('logging'), retry: { maxAttempts: 2, backoff: 'fixed', delayMs: 1 } },
        builtinAgent('fail', { retry: { maxAttempts: 2, backoff: 'fixed', delayMs: 1 } }),
        { name: 'blocker', module: fixtureAgent('blocker') },
        builtinAgent('echo'),
      ],
    });
    // Done, with log lines over two attempts (the first fails); done; failed; dropped after two attempts; cancelled while queued.
    const oldDone = await rt.submit({ agent: 'logging', input: { lines: 3, failAttempts: 1 }, idempotencyKey: 'old' });
    const done = await rt.submit({ agent: 'logging', input: { lines: 2 } });
    const failed = await rt.submit({ agent: 'fail', input: { mode: 'fatal' } });
    const dropped = await rt.submit({ agent: 'fail', input: { mode: 'throw' } });
    const cancelled = await rt.submit({ agent: 'echo', delayMs: 600_000 });
    await rt.cancel(cancelled.id);
    for (const t of [oldDone, done, failed, dropped]) await rt.wait(t.id);
    expect((await rt.get(dropped.id)).state).toBe('dropped');
    // Not settled: queued (later), and running.
    const queued = await rt.submit({ agent: 'echo', delayMs: 600_000 });
    const running = await rt.submit({ agent: 'blocker' });
    await started(rt, running.id);
    const eventsOf = async (t: Task) => (await pool.query<{ n: number }>('SELECT count(*)::int AS n FROM troupe_events WHERE task_id = $1', [t.id])).rows[0]!.n;
    const oldEvents = await eventsOf(oldDone);
    expect(oldEvents).toBeGreaterThan(0);

    // Before an hour ago: the one settled two hours ago, with its two attempts and six lines.
    await settledAgo(pool, oldDone, 2);
    expect(await leftBy(pool, [oldDone])).toEqual({ attempts: 2, logLines: 6 });
    expect(await rt.prune({ before: Date.now() - HOUR })).toEqual({ tasks: 1, runs: 0, attempts: 2, logLines: 6, inputs: 0 });
    expect(await rejection(rt.get(oldDone.id))).toMatchObject({ code: 'NOT_FOUND' });
    expect(await leftBy(pool, [oldDone])).toEqual({ attempts: 0, logLines: 0 });
    // Its events stay; its key can be used again.
    expect(await eventsOf(oldDone)).toBe(oldEvents);
    const reused = await rt.submit({ agent: 'echo', idempotencyKey: 'old' });
    expect(reused.id).not.toBe(oldDone.id);
    await rt.wait(reused.id);

    // Only the states given, settled before a Date.
    const left = await leftBy(pool, [failed, dropped]);
    expect(left.attempts).toBe(3);
    expect(left.logLines).toBeGreaterThan(0);
    expect(await rt.prune({ states: ['failed', 'dropped'], before: new Date(Date.now() + HOUR) })).toEqual({ tasks: 2, runs: 0, ...left, inputs: 0 });
    expect(await leftBy(pool, [failed, dropped])).toEqual({ attempts: 0, logLines: 0 });
    for (const t of [failed, dropped]) expect(await rejection(rt.get(t.id))).toMatchObject({ code: 'NOT_FOUND' });
    expect((await rt.get(done.id)).state).toBe('done');

    // The rest of the settled ones (by default: all four states, settled before now): done, cancelled and the new task with the old key go; queued and running stay.
    expect(await leftBy(pool, [done, cancelled, reused])).toEqual({ attempts: 2, logLines: 2 });
    expect(await rt.prune()).toEqual({ tasks: 3, runs: 0, attempts: 2, logLines: 2, inputs: 0 });
    for (const t of [done, cancelled, reused]) expect(await rejection(rt.get(t.id))).toMatchObject({ code: 'NOT_FOUND' });
    expect(await rt.get(queued.id)).toMatchObject({ state: 'queued' });
    expect(await rt.get(running.id)).toMatchObject({ state: 'running' });
    expect(await rt.prune()).toEqual({ tasks: 0, runs: 0, attempts: 0, logLines: 0, inputs: 0 });
  });

  it('refuses bad options with the LMDB runtime’s code and message, removing nothing', async () => {
    const { url, pool } = await pools({ max: 2 });
    const rt = await runtime(url, { agents: [builtinAgent('echo')] });
    const lmdb: Runtime = await createRuntime({ dataDir: dirs(), logger: false, threads: 1, slotsPerThread: 1 });
    try {
      const task = await rt.submit({ agent: 'echo' });
      await rt.wait(task.id);
      const before = await taskIds(pool);
      for (const options of [{ before: -1 }, { before: 'soon' }, { before: Number.NaN }, { before: new Date('nope') }, { states: ['running'] }, { states: [] }, { states: 'done' }, { after: 1 }, 'all', null]) {
        const expected = await rejection(lmdb.prune(options as never));
        expect(await rejection(rt.prune(options as never)), JSON.stringify(options)).toMatchObject({ code: 'INVALID_OPTIONS', message: expected.message });
      }
      expect(await taskIds(pool)).toEqual(before);
      expect((await rt.get(task.id)).state).toBe('done');
    } finally {
      await lmdb.close();
    }
  });

  it('removes in batches, each under the sweep’s lock, and reads the settled index', async () => {
    const { url, pool } = await pools({ max: 2 });
    const rt = await runtime(url, { agents: [builtinAgent('echo')] });
    const tasks = await rt.submitMany(Array.from({ length: 5 }, (_, i) => ({ agent: 'echo', input: i })));
    for (const t of tasks) await rt.wait(t.id);
    // Inputs go with their task (written here as sendInput would have: a settled task refuses one).
    await pool.query("INSERT INTO troupe_inbox (task_id, seq, message) VALUES ($1, 1, '\"a\"'), ($1, 2, '\"b\"'), ($2, 1, 'null')", [tasks[0]!.id, tasks[4]!.id]);
    // Batches of two: three statements, the last not full; each waits for the sweep's lock (held here, as a sweep would).
    const sweep = await pool.connect();
    let pruned: Promise<unknown>;
    try {
      await sweep.query('BEGIN');
      await sweep.query('SELECT pg_advisory_xact_lock($1)', [RETENTION_LOCK]);
      let over = false;
      pruned = pruneSettled(pool, ['done'], undefined, 2).finally(() => (over = true));
      while (!over && (await lockWaiters(sweep)) < 1);
      expect(over).toBe(false);
      // (On this connection: the pool's other one is the prune's, waiting.)
      expect(await taskIds(sweep)).toHaveLength(5);
      await sweep.query('COMMIT');
    } finally {
      sweep.release();
    }
    expect(await pruned).toEqual({ tasks: 5, attempts: 5, logLines: 0, inputs: 3 });
    expect((await pool.query('SELECT count(*)::int AS n FROM troupe_inbox')).rows[0].n).toBe(0);
    expect(await taskIds(pool)).toEqual([]);
    const client = await pool.connect();
    try {
      await client.query('SET enable_seqscan = off');
      const { rows } = await client.query<{ 'QUERY PLAN': unknown }>(`EXPLAIN (FORMAT JSON) ${PRUNE_TASKS}`, [['done', 'failed'], new Date(), 1_000]);
      const plan = JSON.stringify(rows[0]!['QUERY PLAN']);
      expect(plan).toContain('"Index Name":"troupe_tasks_settled"');
      expect(plan).not.toMatch(/"Seq Scan"[^}]*"Relation Name":"troupe_tasks"/);
    } finally {
      client.release();
    }
  });
});
