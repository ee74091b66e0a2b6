/**
 * The retention sweep's statements on PostgreSQL (src/store/postgres/retention.ts), on a real
 * database: settled tasks past their state's age go with their attempt rows and log lines, younger
 * and unsettled ones stay; the event log loses its old prefix and records how far; one sweep at a
 * time across the cluster (a second skips at once); a task retried while the sweep waits for its
 * row stays. Ages are set on the database's clock (UPDATE … now() - interval).
 */
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { readEvents } from '../../src/store/postgres/events.js';
import { claimTasks, submitTasks } from '../../src/store/postgres/queue.js';
import { checkEventCursor, checkEventSeq, eventsRemovedThrough, REMOVE_TASKS, RETENTION_LOCK, sweepRetention, type SweepRules } from '../../src/store/postgres/retention.js';
import { settleAttempts } from '../../src/store/postgres/settle.js';
import { cancelTask } from '../../src/store/postgres/tasks.js';
import { count, until } from '../cluster.js';
import { rejection, scratchClusters } from '../helpers.js';

const clusters = scratchClusters();
const HOUR = 3_600_000;
const RULES: SweepRules = { ages: { done: HOUR, failed: 2 * HOUR, dropped: 2 * HOUR, cancelled: Infinity }, eventsMs: Infinity };

/** Sets a task's settle time `minutes` back on the database's clock. */
const age = (pool: pg.Pool, id: string, minutes: number) => pool.query(`UPDATE troupe_tasks SET settled_at = now() - $2 * interval '1 minute' WHERE id = $1`, [id, minutes]);
const ids = async (pool: pg.Pool, table: string) => (await pool.query<{ task_id: string }>(`SELECT DISTINCT ${table === 'troupe_tasks' ? 'id AS task_id' : 'task_id'} FROM ${table} ORDER BY 1`)).rows.map((r) => r.task_id);
const lockWaiters = (pool: pg.Pool) => count(pool, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'");

/** Runs each of `ids` (agent a) to the end `exit` gives it, one attempt each. */
async function settle(pool: pg.Pool, node: string, ids: string[], exit: 'success' | 'fail'): Promise<void> {
  await submitTasks(pool, ids.map((id) => ({ id, agent: 'a', maxAttempts: 1 })));
  const claimed = await claimTasks(pool, node, 'a', ids.length, 60_000);
  expect(claimed.map((c) => c.id).sort()).toEqual([...ids].sort());
  await settleAttempts(pool, claimed.map((c) => ({ taskId: c.id, token: c.token, exit, ...(exit === 'fail' ? { error: { code: 'AGENT_FAILED', message: 'no', retryable: false, fault: 'agent' as const } } : {}) })));
}

/** A log line of a task, as the node writes them (schema version 10). */
const logLine = (pool: pg.Pool, id: string) =>
  pool.query(`INSERT INTO troupe_logs (task_id, run, attempt, seq, attempt_id, level, message, at) VALUES ($1, 1, 1, 1, $1 || ':1:1', 'info', 'hello', 0)`, [id]);

describe('the retention sweep on PostgreSQL', () => {
  it('removes settled tasks past their state’s age with their attempts and log lines; younger, kept-for-good and unsettled ones stay', async () => {
    const { pool, join } = await clusters();
    const node = (await join()).id;
    await settle(pool, node, ['done-old', 'done-young'], 'success');
    await settle(pool, node, ['failed-old', 'failed-young'], 'fail');
    await submitTasks(pool, [{ id: 'cancelled-old', agent: 'a' }, { id: 'running', agent: 'a' }]);
    expect(await cancelTask(pool, 'cancelled-old', 'no')).toBe('cancelled');
    expect((await claimTasks(pool, node, 'a', 1, 60_000)).map((c) => c.id)).toEqual(['running']);
    await submitTasks(pool, [{ id: 'queued', agent: 'a' }]);
    for (const id of ['done-old', 'done-young', 'failed-old', 'failed-young']) await logLine(pool, id);
    await age(pool, 'done-old', 61);
    await age(pool, 'done-young', 59);
    // Older than done's age, younger than failed's: its own state's rule applies.
    await age(pool, 'failed-young', 119);
    await age(pool, 'failed-old', 121);
    await age(pool, 'cancelled-old', 100 * 24 * 60);
    // Not settled, whatever their settle time says: never removed.
    await age(pool, 'queued', 10_000);
    await age(pool, 'running', 10_000);
    expect(await sweepRetention(pool, RULES)).toEqual({ tasks: 2, events: 0 });
    expect(await ids(pool, 'troupe_tasks')).toEqual(['cancelled-old', 'done-young', 'failed-young', 'queued', 'running']);
    expect(await ids(pool, 'troupe_attempts')).toEqual(['done-young', 'failed-young']);
    expect(await ids(pool, 'troupe_logs')).toEqual(['done-young', 'failed-young']);
    // Nothing more is due.
    expect(await sweepRetention(pool, RULES)).toEqual({ tasks: 0, events: 0 });
  });

  it('removes a backlog in statements of at most `batch` tasks, going on while one was full', async () => {
    const { pool, join } = await clusters();
    const node = (await join()).id;
    const old = Array.from({ length: 7 }, (_, i) => `t${i}`);
    await settle(pool, node, old, 'success');
    await pool.query(`UPDATE troupe_tasks SET settled_at = now() - interval '2 hours'`);
    expect(await sweepRetention(pool, RULES, { batch: 3 })).toEqual({ tasks: 7, events: 0 });
    expect(await count(pool, 'SELECT count(*) FROM troupe_tasks')).toBe(0);
    // A stop asked for between statements ends the sweep there.
    await settle(pool, node, ['u0', 'u1', 'u2', 'u3'], 'success');
    await pool.query(`UPDATE troupe_tasks SET settled_at = now() - interval '2 hours'`);
    let statements = 0;
    expect(await sweepRetention(pool, RULES, { batch: 2, stopped: () => statements++ > 0 })).toEqual({ tasks: 2, events: 0 });
  });

  it('reads the due tasks of each state from the settled index, not the whole table', async () => {
    const { pool } = await clusters();
    const client = await pool.connect();
    try {
      // On a few rows the planner would rather scan: scans are priced out, and the index it takes must be the settled one.
      await client.query('SET enable_seqscan = off');
      const { rows } = await client.query<{ 'QUERY PLAN': unknown }>(`EXPLAIN (FORMAT JSON) ${REMOVE_TASKS}`, [['done', 'failed'], [HOUR, 2 * HOUR], 1_000]);
      const plan = JSON.stringify(rows[0]!['QUERY PLAN']);
      expect(plan).toContain('"Index Name":"troupe_tasks_settled"');
      expect(plan).not.toMatch(/"Seq Scan"[^}]*"Relation Name":"troupe_tasks"/);
    } finally {
      client.release();
    }
  });

  it('removes the event log’s prefix older than eventsMs, records how far, and refuses cursors from before it', async () => {
    const { pool } = await clusters();
    for (let i = 0; i < 6; i++) await submitTasks(pool, [{ id: `e${i}`, agent: 'a' }, { id: `f${i}`, agent: 'a' }]);
    const before = await readEvents(pool, '');
    expect(before).toHaveLength(12);
    // The first three submits' batches are old; so is the fifth, behind a young one: it stays.
    const batches = (await pool.query<{ xid: string; last_seq: string }>('SELECT xid::text, last_seq::text FROM troupe_event_batches ORDER BY xid, last_seq')).rows;
    expect(batches).toHaveLength(6);
    for (const i of [0, 1, 2, 4]) await pool.query(`UPDATE troupe_event_batches SET at = now() - interval '2 hours' WHERE xid = $1::xid8 AND last_seq = $2`, [batches[i]!.xid, batches[i]!.last_seq]);
    expect(await eventsRemovedThrough(pool)).toEqual({ cursor: '', maxSeq: 0 });
    expect(await sweepRetention(pool, { ...RULES, eventsMs: HOUR })).toEqual({ tasks: 0, events: 6 });
    const cursors = async () => (await readEvents(pool, '')).map((e) => e.cursor);
    expect(await cursors()).toEqual(before.slice(6).map((e) => e.cursor));
    const lastRemoved = before[5]!;
    expect(await eventsRemovedThrough(pool)).toEqual({ cursor: lastRemoved.cursor, maxSeq: Math.max(...before.slice(0, 6).map((e) => e.seq)) });
    // A cursor at the last removed event still reads on without a gap; one before it, or the log's start, does not.
    await checkEventCursor(pool, lastRemoved.cursor);
    await checkEventCursor(pool, before[9]!.cursor);
    for (const cursor of ['', before[0]!.cursor, before[4]!.cursor]) expect(await rejection(checkEventCursor(pool, cursor))).toMatchObject({ code: 'CURSOR_EXPIRED', message: expect.stringContaining(`the oldest cursor still available is ${lastRemoved.cursor}`) });
    expect(await rejection(checkEventSeq(pool, before[0]!.seq))).toMatchObject({ code: 'CURSOR_EXPIRED' });
    await checkEventSeq(pool, before[6]!.seq);
    // Nothing more is due until the young batch ages; then the rest of the prefix goes too, and the point moves on.
    expect(await sweepRetention(pool, { ...RULES, eventsMs: HOUR })).toEqual({ tasks: 0, events: 0 });
    await pool.query(`UPDATE troupe_event_batches SET at = now() - interval '2 hours' WHERE xid = $1::xid8 AND last_seq = $2`, [batches[3]!.xid, batches[3]!.last_seq]);
    expect(await sweepRetention(pool, { ...RULES, eventsMs: HOUR })).toEqual({ tasks: 0, events: 4 });
    expect((await eventsRemovedThrough(pool)).cursor).toBe(before[9]!.cursor);
    expect(await cursors()).toEqual(before.slice(10).map((e) => e.cursor));
  });

  it('runs one sweep at a time: a second one skips at once while another holds the lock, and removes nothing', async () => {
    const { pool, url, join, otherPool } = await clusters();
    const node = (await join()).id;
    await settle(pool, node, ['a1', 'a2'], 'success');
    await pool.query(`UPDATE troupe_tasks SET settled_at = now() - interval '2 hours'`);
    // The first sweep stops inside its transaction, holding the sweep's lock: it waits for a row this client holds.
    const holder = new pg.Client({ connectionString: url });
    await holder.connect();
    try {
      await holder.query('BEGIN');
      await holder.query(`SELECT 1 FROM troupe_tasks WHERE id = 'a1' FOR UPDATE`);
      const first = sweepRetention(pool, RULES);
      await until(async () => (await lockWaiters(pool)) === 1, 'the first sweep to wait for the row');
      expect(await count(pool, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND ((classid::bigint << 32) | objid::bigint) = $1`, [RETENTION_LOCK])).toBe(1);
      // Another runtime's sweep, on connections of its own: it does not wait.
      expect(await sweepRetention(otherPool(), RULES)).toBe('skipped');
      expect(await count(pool, 'SELECT count(*) FROM troupe_tasks')).toBe(2);
      await holder.query('COMMIT');
      expect(await first).toEqual({ tasks: 2, events: 0 });
    } finally {
      await holder.end();
    }
    // The lock went with the first sweep's transaction.
    await settle(pool, node, ['a3'], 'success');
    await pool.query(`UPDATE troupe_tasks SET settled_at = now() - interval '2 hours'`);
    expect(await sweepRetention(otherPool(), RULES)).toEqual({ tasks: 1, events: 0 });
  });

  it('keeps a task retried while the sweep waited for its row', async () => {
    const { pool, url, join } = await clusters();
    const node = (await join()).id;
    await settle(pool, node, ['r1', 'r2'], 'fail');
    await pool.query(`UPDATE troupe_tasks SET settled_at = now() - interval '3 hours'`);
    const holder = new pg.Client({ connectionString: url });
    await holder.connect();
    try {
      // A retry in flight (as retryTask writes it): the sweep picks r1, then waits for its row.
      await holder.query('BEGIN');
      await holder.query(`UPDATE troupe_tasks SET state = 'queued', run = run + 1, settled_at = NULL WHERE id = 'r1'`);
      const sweep = sweepRetention(pool, RULES);
      await until(async () => (await lockWaiters(pool)) === 1, 'the sweep to wait for the retried row');
      await holder.query('COMMIT');
      expect(await sweep).toEqual({ tasks: 1, events: 0 });
    } finally {
      await holder.end();
    }
    expect((await pool.query(`SELECT id, state FROM troupe_tasks`)).rows).toEqual([{ id: 'r1', state: 'queued' }]);
    expect(await ids(pool, 'troupe_attempts')).toEqual(['r1']);
  });
});
