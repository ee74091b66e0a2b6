/**
 * The retention sweep's statements on PostgreSQL (src/store/postgres/retention.ts), on a real
 * database: settled tasks past their state's age go with their attempt rows and log lines, younger
 * and unsettled ones stay; the event log loses its old prefix and records how far; one sweep at a
 * time across the cluster (a second skips at once); a task retried while the sweep waits for its
 * row stays. Ages are set on the database's clock (UPDATE … now() - interval).
 */
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import type { RegisteredAgent } from '../../src/agents/registry.js';
import { storeLimits } from '../../src/cluster/agent-rows.js';
import type { NewTask } from '../../src/store/postgres/checks.js';
import { readEvents } from '../../src/store/postgres/events.js';
import { claimTasks, submitTasks } from '../../src/store/postgres/queue.js';
import { fireDue } from '../../src/store/postgres/schedule-fire.js';
import { createSchedule } from '../../src/store/postgres/schedules.js';
import { checkEventCursor, checkEventSeq, eventsRemovedThrough, PRUNE_TASKS, REMOVE_EXPIRED, REMOVE_RETAINED, RETENTION_LOCK, setAgentRetention, sweepRetention, type SweepRules } from '../../src/store/postgres/retention.js';
import { settleAttempts } from '../../src/store/postgres/settle.js';
import { cancelTask } from '../../src/store/postgres/tasks.js';
import { count, until } from '../cluster.js';
import { rejection, scratchClusters } from '../helpers.js';
import { resolveAgentRetention } from '../../src/tasks/retention-rules.js';

const clusters = scratchClusters();
const HOUR = 3_600_000;
const rule = (ageMs: number, count = Infinity) => ({ ageMs, count });
const RULES: SweepRules = { rules: { done: rule(HOUR), failed: rule(2 * HOUR), dropped: rule(2 * HOUR), cancelled: rule(Infinity) }, eventsMs: Infinity };

/** Sets a task's settle time `minutes` back on the database's clock. */
const age = (pool: pg.Pool, id: string, minutes: number) => pool.query(`UPDATE troupe_tasks SET settled_at = now() - $2 * interval '1 minute' WHERE id = $1`, [id, minutes]);
const ids = async (pool: pg.Pool, table: string) => (await pool.query<{ task_id: string }>(`SELECT DISTINCT ${table === 'troupe_tasks' ? 'id AS task_id' : 'task_id'} FROM ${table} ORDER BY 1`)).rows.map((r) => r.task_id);
const lockWaiters = (pool: pg.Pool) => count(pool, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'");

/** Runs each of `ids` (of `agent`, with `extra` fields) to the end `exit` gives it, one attempt each. */
async function settle(pool: pg.Pool, node: string, ids: string[], exit: 'success' | 'fail', agent = 'a', extra: Partial<NewTask> = {}): Promise<void> {
  await submitTasks(pool, ids.map((id) => ({ id, agent, maxAttempts: 1, ...extra })));
  const claimed = await claimTasks(pool, node, agent, ids.length, 60_000);
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

  it('applies a task’s own rule by its expiry, its agent’s stored rule over the runtime’s, and the runtime’s to the rest', async () => {
    const { pool, join } = await clusters();
    const node = (await join()).id;
    // Agent b keeps its done tasks 10 minutes (its rule replaces the runtime's hour), its failed ones by the runtime's.
    await setAgentRetention(pool, 'b', resolveAgentRetention({ done: 10 * 60_000 }, 'agent b')!);
    await settle(pool, node, ['a-70', 'a-50'], 'success');
    await settle(pool, node, ['b-70', 'b-15', 'b-5'], 'success', 'b');
    await settle(pool, node, ['b-failed-100'], 'fail', 'b');
    // Their own rules: 20 minutes, for good, and one for a state they did not settle in (the runtime's applies).
    await settle(pool, node, ['own-25', 'own-15'], 'success', 'b', { retention: { done: 20 * 60_000 } });
    await settle(pool, node, ['own-forever-9000'], 'success', 'a', { retention: { done: Infinity } });
    await settle(pool, node, ['own-other-state-70'], 'success', 'a', { retention: { failed: 1 } });
    for (const [id, minutes] of [['a-70', 70], ['a-50', 50], ['b-70', 70], ['b-15', 15], ['b-5', 5], ['b-failed-100', 100], ['own-25', 25], ['own-15', 15], ['own-forever-9000', 9000], ['own-other-state-70', 70]] as const) {
      await age(pool, id, minutes);
    }
    expect((await pool.query(`SELECT retention FROM troupe_tasks WHERE id IN ('own-25', 'own-forever-9000') ORDER BY id`)).rows).toEqual([{ retention: { done: 1_200_000 } }, { retention: { done: null } }]);
    expect(await sweepRetention(pool, RULES)).toEqual({ tasks: 5, events: 0 });
    expect(await ids(pool, 'troupe_tasks')).toEqual(['a-50', 'b-5', 'b-failed-100', 'own-15', 'own-forever-9000']);
    expect(await sweepRetention(pool, RULES)).toEqual({ tasks: 0, events: 0 });
  });

  it('keeps the count most recently settled per agent and state (settle time, then id; tasks with rules of their own not counted), in batches', async () => {
    const { pool, join } = await clusters();
    const node = (await join()).id;
    const rules: SweepRules = { ...RULES, rules: { ...RULES.rules, done: rule(HOUR, 2), failed: rule(Infinity, 0) } };
    // One settle statement: c0..c4 share a settle time, and the id orders them.
    await settle(pool, node, ['c0', 'c1', 'c2', 'c3', 'c4'], 'success');
    expect(await count(pool, `SELECT count(DISTINCT settled_at) FROM troupe_tasks`)).toBe(1);
    await settle(pool, node, ['d0', 'd1', 'd2'], 'success', 'd');
    await settle(pool, node, ['own'], 'success', 'd', { retention: { done: HOUR } });
    await settle(pool, node, ['f0'], 'fail', 'd');
    // d's newest done task is its own-rule one, which is not counted: d0 goes, d1 and d2 stay.
    await age(pool, 'd0', 3);
    await age(pool, 'd1', 2);
    await age(pool, 'd2', 1);
    expect(await sweepRetention(pool, rules, { batch: 2 })).toEqual({ tasks: 5, events: 0 });
    expect(await ids(pool, 'troupe_tasks')).toEqual(['c3', 'c4', 'd1', 'd2', 'own']);
    // The age still applies to the ones a count keeps.
    await age(pool, 'd2', 61);
    expect(await sweepRetention(pool, rules)).toEqual({ tasks: 1, events: 0 });
    expect(await ids(pool, 'troupe_tasks')).toEqual(['c3', 'c4', 'd1', 'own']);
  });

  it('keeps a parent until its children have gone, and removes it in the sweep that removes the last of them', async () => {
    const { pool, join } = await clusters();
    const node = (await join()).id;
    await settle(pool, node, ['p'], 'success');
    await settle(pool, node, ['c'], 'success', 'a', { parentId: 'p', retention: { done: 3 * HOUR } });
    await settle(pool, node, ['g'], 'success', 'a', { parentId: 'c' });
    await settle(pool, node, ['p2'], 'success');
    await settle(pool, node, ['c2'], 'success', 'a', { parentId: 'p2' });
    for (const id of ['p', 'c', 'g', 'p2', 'c2']) await age(pool, id, 120);
    // The grandchild is due and goes; the child is not (its own 3 hours), so its parent waits.
    // p2 and its child are both due: the child goes, then p2, in the same sweep.
    expect(await sweepRetention(pool, RULES)).toEqual({ tasks: 3, events: 0 });
    expect(await ids(pool, 'troupe_tasks')).toEqual(['c', 'p']);
    await age(pool, 'c', 200);
    expect(await sweepRetention(pool, RULES)).toEqual({ tasks: 2, events: 0 });
    expect(await ids(pool, 'troupe_tasks')).toEqual([]);
  });

  it('stores an agent’s rules for the cluster: a registration without retention leaves them, an empty one clears them, a bad one writes nothing', async () => {
    const { pool } = await clusters();
    const stored = async () => (await pool.query<{ retention: unknown }>(`SELECT retention FROM troupe_agents WHERE name = 'b'`)).rows[0]?.retention;
    const agent = (retention: RegisteredAgent['retention']) => ({ name: 'b', concurrency: null, models: {}, rate: null, dailyLimit: null, backoff: null, capabilities: [], retention }) as unknown as RegisteredAgent;
    await storeLimits(pool, agent(resolveAgentRetention({ done: { ageMs: 60_000, count: 5 }, failed: Infinity }, 'agent b')!));
    expect(await stored()).toEqual({ done: { ageMs: 60_000, count: 5 }, failed: { ageMs: null, count: null } });
    await storeLimits(pool, agent(null));
    expect(await stored()).toEqual({ done: { ageMs: 60_000, count: 5 }, failed: { ageMs: null, count: null } });
    await storeLimits(pool, agent(resolveAgentRetention({}, 'agent b')!));
    expect(await stored()).toEqual({});
    for (const bad of [{ done: { ageMs: -1, count: Infinity } }, { queued: { ageMs: 1, count: 1 } }, { done: { ageMs: 1, count: 1.5 } }]) {
      expect(await rejection(setAgentRetention(pool, 'b', bad as never))).toMatchObject({ code: 'INVALID_INPUT', message: expect.stringContaining('agent b: retention') });
    }
    expect(await rejection(setAgentRetention(pool, '', {}))).toMatchObject({ code: 'INVALID_INPUT' });
    expect(await stored()).toEqual({});
    expect(await count(pool, 'SELECT count(*) FROM troupe_agents')).toBe(1);
  });

  it('keeps a schedule’s task retention with its template and gives it to each task it fires; a bad one is refused, nothing stored', async () => {
    const { pool, join } = await clusters();
    const node = (await join()).id;
    const created = await createSchedule(pool, { id: 'kept', cron: '* * * * * *', task: { agent: 'a', retention: { done: Infinity, failed: HOUR } }, catchUp: 'all', overlap: 'allow' });
    expect(created.task.retention).toEqual({ done: null, failed: HOUR });
    await pool.query(`UPDATE troupe_schedules SET next_run_at = next_run_at - interval '3 seconds'`);
    const { fired } = await fireDue(pool, node);
    expect(fired.length).toBeGreaterThan(0);
    expect((await pool.query(`SELECT DISTINCT retention FROM troupe_tasks`)).rows).toEqual([{ retention: { done: null, failed: HOUR } }]);
    expect(await rejection(createSchedule(pool, { id: 'bad', cron: '* * * * * *', task: { agent: 'a', retention: { done: -1 } } }))).toMatchObject({ code: 'INVALID_INPUT', message: expect.stringContaining('retention.done') });
    expect(await rejection(submitTasks(pool, [{ id: 'bad', agent: 'a', retention: { queued: 1 } as never }]))).toMatchObject({ code: 'INVALID_INPUT', message: expect.stringContaining('retention.queued') });
    expect(await count(pool, `SELECT count(*) FROM troupe_schedules WHERE id = 'bad'`)).toBe(0);
    expect(await count(pool, `SELECT count(*) FROM troupe_tasks WHERE id = 'bad'`)).toBe(0);
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
    // (The first statement is the one for tasks with rules of their own: none here.)
    expect(await sweepRetention(pool, RULES, { batch: 2, stopped: () => statements++ > 1 })).toEqual({ tasks: 2, events: 0 });
  });

  it('reads the due tasks from the indexes (per agent and state, by expiry, by state for prune), not the whole table', async () => {
    const { pool } = await clusters();
    const client = await pool.connect();
    try {
      // On a few rows the planner would rather scan: scans are priced out, and the indexes it takes must be retention's.
      await client.query('SET enable_seqscan = off');
      const plan = async (sql: string, values: unknown[]) => JSON.stringify((await client.query<{ 'QUERY PLAN': unknown }>(`EXPLAIN (FORMAT JSON) ${sql}`, values)).rows[0]!['QUERY PLAN']);
      const cases: Array<[string, unknown[], string]> = [
        [REMOVE_RETAINED, [['done', 'failed'], [HOUR, null], [null, 10], 1_000], 'troupe_tasks_retained'],
        [REMOVE_EXPIRED, [1_000], 'troupe_tasks_expiring'],
        [PRUNE_TASKS, [['done'], new Date(), 1_000], 'troupe_tasks_settled'],
      ];
      for (const [sql, values, index] of cases) {
        const text = await plan(sql, values);
        expect(text).toContain(`"Index Name":"${index}"`);
        // The sweep's look for a task's children (a parent waits for them) reads their index.
        if (sql !== PRUNE_TASKS) expect(text).toContain('"Index Name":"troupe_tasks_children"');
        expect(text).not.toMatch(/"Seq Scan"[^}]*"Relation Name":"troupe_tasks"/);
      }
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
