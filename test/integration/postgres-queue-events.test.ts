/**
 * The PostgreSQL queue's transitions in the cluster's event log (issue #15): every submit, claim,
 * settle and reclaim appends its event, with the runtime catalogue's type, in the transaction that
 * makes the change; a follower sees each once, in order, with no gap, while several nodes write.
 */
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { EVENT_TYPES } from '../../src/api/events.js';
import { readEvents, type StoredEvent } from '../../src/store/postgres/events.js';
import { deadNodes } from '../../src/store/postgres/nodes.js';
import { setAgentLimits } from '../../src/store/postgres/limits.js';
import { claimTasks, submitTasks } from '../../src/store/postgres/queue.js';
import { settleAttempts } from '../../src/store/postgres/settle.js';
import { reclaim, sweep } from '../../src/store/postgres/sweeper.js';
import { rejection, scratchClusters } from '../helpers.js';

const clusters = scratchClusters();
const LEASE = 60_000;

/** The events of one task as (type, attempt, exit, reason) rows. */
const lifeOf = (events: readonly StoredEvent[], taskId: string) =>
  events
    .filter((e) => e.taskId === taskId)
    .map((e) => {
      const data = e.data as { attempt?: number; exit?: string; reason?: string };
      return [e.type, data.attempt ?? null, data.exit ?? null, data.reason ?? null];
    });

/** Everything the log holds, read after every writer ended. */
const wholeLog = async (pool: pg.Pool) => readEvents(pool, '', 1_000_000);

describe('the PostgreSQL queue\'s events', () => {
  it('gives a follower every event of a task\'s life in order, once each: submit, start, retry, crash, lease, interruption, done', async () => {
    const { pool, join, follow } = await clusters({ max: 12 });
    const node = await join();
    const doomed = await join();
    const log = follow();
    await submitTasks(pool, [{ id: 't1', agent: 'a', maxAttempts: 4, input: { n: 1 } }, { id: 't2', agent: 'b', maxAttempts: 1 }, { id: 't3', agent: 'c', delayMs: 0 }]);
    const claim = async (by = node.id, agent = 'a') => (await claimTasks(pool, by, agent, 1, LEASE))[0]!;

    const first = await claim();
    await settleAttempts(pool, [{ taskId: 't1', token: first.token, exit: 'error' }]);
    // The second attempt's node dies; the sweeper takes it back.
    const second = await claim(doomed.id);
    await pool.query("SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2 AND objid = $1", [doomed.lock]);
    while (!(await deadNodes(pool)).includes(doomed.id));
    expect((await sweep(pool)).reclaimed.map((r) => r.attemptId)).toEqual([second.attemptId]);
    // The third one's lease runs out.
    const third = await claim();
    await pool.query("UPDATE troupe_tasks SET lease_until = now() - interval '1 second' WHERE id = 't1'");
    expect((await reclaim(pool, [])).reclaimed.map((r) => r.attemptId)).toEqual([third.attemptId]);
    // The fourth is interrupted (does not count), the fifth succeeds.
    const fourth = await claim();
    await settleAttempts(pool, [{ taskId: 't1', token: fourth.token, exit: 'interrupted' }]);
    const fifth = await claim();
    expect(fifth).toMatchObject({ attempt: 5, attempts: 4 });
    await settleAttempts(pool, [{ taskId: 't1', token: fifth.token, exit: 'success', output: { ok: true } }]);
    const t2 = await claim(node.id, 'b');
    await settleAttempts(pool, [{ taskId: 't2', token: t2.token, exit: 'error' }]);
    const t3 = await claim(node.id, 'c');
    await settleAttempts(pool, [{ taskId: 't3', token: t3.token, exit: 'fail' }]);

    await log.until((events) => events.some((e) => e.type === 'task.failed'));
    await log.stop();
    expect(lifeOf(log.events, 't1')).toEqual([
      ['task.queued', null, null, null],
      ['task.started', 1, null, null],
      ['task.retrying', 1, 'error', null],
      ['task.started', 2, null, null],
      ['task.retrying', 2, 'crashed', null],
      ['task.started', 3, null, null],
      ['task.retrying', 3, 'lease_expired', null],
      ['task.started', 4, null, null],
      ['task.queued', 4, 'interrupted', 'interrupted'],
      ['task.started', 5, null, null],
      ['task.done', 5, 'success', null],
    ]);
    expect(lifeOf(log.events, 't2')).toEqual([
      ['task.queued', null, null, null],
      ['task.started', 1, null, null],
      ['task.dropped', 1, 'error', 'retry_exhausted'],
    ]);
    expect(lifeOf(log.events, 't3')).toEqual([
      ['task.queued', null, null, null],
      ['task.started', 1, null, null],
      ['task.failed', 1, 'fail', null],
    ]);
    // Payloads as the catalogue types them, attempt ids as the claims named them.
    const t1 = log.events.filter((e) => e.taskId === 't1');
    expect(t1[0]).toMatchObject({ data: { run: 1, agent: 'a', priority: 0 } });
    expect(t1.filter((e) => e.type === 'task.started').map((e) => e.attemptId)).toEqual([first, second, third, fourth, fifth].map((c) => c.attemptId));
    // Each end names the attempt it ended, whichever way it was written.
    expect(t1.filter((e, i) => i > 0 && e.type !== 'task.started').map((e) => e.attemptId)).toEqual([first, second, third, fourth, fifth].map((c) => c.attemptId));
    expect(t1[1]!.data).toEqual({ run: 1, attempt: 1, queuedMs: expect.any(Number) });
    expect(t1[2]!.data).toEqual({ run: 1, attempt: 1, exit: 'error', attemptMs: expect.any(Number), delayMs: 0, error: expect.objectContaining({ code: 'AGENT_ERROR' }) });
    expect(t1[4]!.data).toMatchObject({ error: { code: 'PROCESS_CRASHED', fault: 'infrastructure' } });
    expect(t1[10]!.data).toEqual({ run: 1, attempt: 5, exit: 'success', attemptMs: expect.any(Number), kind: 'success' });
    expect(log.events.find((e) => e.type === 'task.dropped')!.data).toMatchObject({ error: { code: 'RETRY_EXHAUSTED' } });
    for (const e of log.events) expect(EVENT_TYPES).toContain(e.type);
    // The follower saw exactly what the log holds: each event once, in cursor order.
    expect(log.events).toEqual(await wholeLog(pool));
    expect(new Set(log.events.map((e) => e.seq)).size).toBe(log.events.length);
  });

  it('keeps one event per transition, once each and gap-free, while three nodes claim and settle at once', async () => {
    const { pool, join, otherPool, follow } = await clusters({ max: 6 });
    const log = follow();
    const count = 150;
    await submitTasks(pool, Array.from({ length: count }, (_, i) => ({ id: `t${String(i).padStart(3, '0')}`, agent: 'a', maxAttempts: 3 })));
    const worker = async (on: pg.Pool, k: number) => {
      const node = await join();
      for (let round = 0; ; round++) {
        const claimed = await claimTasks(on, node.id, 'a', 1 + ((round + k) % 4), LEASE);
        if (claimed.length === 0) return;
        // Every third attempt fails and is retried, until the budget is spent.
        await settleAttempts(on, claimed.map((c, i) => ({ taskId: c.id, token: c.token, exit: (i + round + k) % 3 === 0 ? ('error' as const) : ('success' as const) })));
      }
    };
    await Promise.all([worker(pool, 0), worker(otherPool(), 1), worker(otherPool(), 2)]);
    const attempts = (await pool.query<{ task_id: string; attempt: number; exit: string }>('SELECT task_id, attempt, exit FROM troupe_attempts ORDER BY task_id, attempt')).rows;
    const expected = attempts.length * 2 + count;
    await log.until((events) => events.length >= expected);
    await log.stop();
    expect(log.events).toHaveLength(expected);
    expect(log.events).toEqual(await wholeLog(pool));
    // Each task's events follow its attempts, as the rows record them.
    const states = new Map((await pool.query<{ id: string; state: string }>('SELECT id, state FROM troupe_tasks')).rows.map((r) => [r.id, r.state]));
    for (const [id, state] of states) {
      const mine = attempts.filter((a) => a.task_id === id);
      const life: unknown[] = [['task.queued', null, null, null]];
      for (const a of mine) {
        life.push(['task.started', a.attempt, null, null]);
        const last = a === mine.at(-1);
        if (a.exit === 'success') life.push(['task.done', a.attempt, 'success', null]);
        else if (last && state === 'dropped') life.push(['task.dropped', a.attempt, 'error', 'retry_exhausted']);
        else life.push(['task.retrying', a.attempt, 'error', null]);
      }
      expect({ id, life: lifeOf(log.events, id) }).toEqual({ id, life });
    }
    expect(new Set(states.values())).toEqual(new Set(['done', 'dropped']));
  }, 60_000);

  it('commits an event with its change or neither', async () => {
    const { pool, join } = await clusters();
    const node = await join();
    await submitTasks(pool, [{ id: 't1', agent: 'a' }]);
    const before = await wholeLog(pool);
    const task = async () => (await pool.query("SELECT state, token::int FROM troupe_tasks WHERE id = 't1'")).rows[0];
    await pool.query(`CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'refused'; END $$`);
    // The claim's write of its task is refused at COMMIT, after everything else: no task.started either.
    await pool.query('CREATE CONSTRAINT TRIGGER refuse AFTER UPDATE ON troupe_tasks DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse()');
    expect(await rejection(claimTasks(pool, node.id, 'a', 1, LEASE))).toMatchObject({ code: 'STORE_FAILED' });
    expect(await wholeLog(pool)).toEqual(before);
    expect(await task()).toEqual({ state: 'queued', token: 0 });
    await pool.query('DROP TRIGGER refuse ON troupe_tasks');
    // The event's own write fails: the claim goes with it.
    await pool.query('CREATE TRIGGER refuse BEFORE INSERT ON troupe_event_batches FOR EACH ROW EXECUTE FUNCTION refuse()');
    expect(await rejection(claimTasks(pool, node.id, 'a', 1, LEASE))).toMatchObject({ code: 'STORE_FAILED' });
    expect(await task()).toEqual({ state: 'queued', token: 0 });
    expect((await pool.query('SELECT count(*)::int AS n FROM troupe_attempts')).rows[0].n).toBe(0);
    await pool.query('DROP TRIGGER refuse ON troupe_event_batches');
    const [claimed] = await claimTasks(pool, node.id, 'a', 1, LEASE);
    const started = await wholeLog(pool);
    // A settle whose attempt row is refused at COMMIT ends nothing and tells nothing (a retry's
    // end: a settled task's last attempt stays on its row, with no row of its own).
    await pool.query('CREATE CONSTRAINT TRIGGER refuse AFTER INSERT ON troupe_attempt_rows DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse()');
    expect(await rejection(settleAttempts(pool, [{ taskId: 't1', token: claimed!.token, exit: 'error' }]))).toMatchObject({ code: 'STORE_FAILED' });
    expect(await task()).toEqual({ state: 'running', token: claimed!.token });
    expect(await wholeLog(pool)).toEqual(started);
    await pool.query('DROP TRIGGER refuse ON troupe_attempt_rows');
    expect((await settleAttempts(pool, [{ taskId: 't1', token: claimed!.token, exit: 'error' }])).settled).toHaveLength(1);
    expect((await wholeLog(pool)).map((e) => e.type)).toEqual(['task.queued', 'task.started', 'task.retrying']);
  });

  it('settles a batch of plain successes (three arrays, ends-statement.ts) as it settles them beside other ends', async () => {
    const { pool, join } = await clusters({ max: 4 });
    const node = await join();
    const ids = ['p1', 'p2', 'p3', 'q1', 'q2', 'g1', 'g2'];
    await submitTasks(pool, ids.map((id) => ({ id, agent: 'a' })));
    const claimed = new Map((await claimTasks(pool, node.id, 'a', ids.length, LEASE)).map((c) => [c.id, c]));
    const end = (id: string, extra: object = {}) => ({ taskId: id, token: claimed.get(id)!.token, exit: 'success' as const, output: { id }, result: { kind: 'success' as const }, ...extra });
    // All plain, with the result the runtime gives a success: the compact statement; p3's token is stale.
    const plain = await settleAttempts(pool, [end('p1'), end('p2'), { ...end('p3'), token: claimed.get('p3')!.token + 5 }]);
    expect(plain.settled.map((s) => [s.taskId, s.state])).toEqual([['p1', 'done'], ['p2', 'done']]);
    expect(plain.stale.map((s) => s.taskId)).toEqual(['p3']);
    // Plain, as a queue core node sends them: no result, one with no output either.
    await settleAttempts(pool, [{ taskId: 'q1', token: claimed.get('q1')!.token, exit: 'success', output: 7 }, { taskId: 'q2', token: claimed.get('q2')!.token, exit: 'success' }]);
    // Beside a failure: the thirteen arrays.
    await settleAttempts(pool, [end('g1'), { taskId: 'g2', token: claimed.get('g2')!.token, exit: 'fail' }]);

    const { rows } = await pool.query<Record<string, unknown>>(
      "SELECT id, state, token, attempts, output, result, error, attempt_exit, attempt_error, attempt_id, owner_node, follow_up, settled_at IS NOT NULL AS settled, lease_until FROM troupe_tasks WHERE id = ANY($1) ORDER BY id",
      [ids],
    );
    const row = new Map(rows.map((r) => [r.id as string, r]));
    const same = ({ id: _id, output: _output, token: _token, attempt_id: _attempt, ...rest }: Record<string, unknown>) => rest;
    // The compact statement writes what the other one does.
    expect(same(row.get('p1')!)).toEqual(same(row.get('g1')!));
    expect(row.get('p1')).toMatchObject({ state: 'done', output: { id: 'p1' }, result: { kind: 'success' }, error: null, attempt_exit: 'success', settled: true, lease_until: null });
    expect(row.get('p3')).toMatchObject({ state: 'running', output: null });
    expect(row.get('q1')).toMatchObject({ state: 'done', output: 7, result: null, error: null, attempt_exit: 'success' });
    expect(row.get('q2')).toMatchObject({ state: 'done', output: null, result: null });
    expect(Number(row.get('p1')!.token)).toBe(claimed.get('p1')!.token + 1);

    const done = (await wholeLog(pool)).filter((e) => e.type === 'task.done');
    expect(done.map((e) => e.taskId).sort()).toEqual(['g1', 'p1', 'p2', 'q1', 'q2']);
    const data = new Map(done.map((e) => [e.taskId, e.data as Record<string, unknown>]));
    const { attemptMs: _p, ...p1 } = data.get('p1')!;
    const { attemptMs: _g, ...g1 } = data.get('g1')!;
    expect(p1).toEqual({ run: 1, attempt: 1, exit: 'success', kind: 'success' });
    expect(p1).toEqual(g1);
    expect(done.every((e) => typeof (e.data as { attemptMs: unknown }).attemptMs === 'number' && e.attemptId === `${e.taskId}:1:1`)).toBe(true);
  });

  it.each([
    ['a concurrency limit', {}, {}],
    ['per-model sub-limits', { models: { m: 2 } }, { labels: { model: 'm' } }],
  ])("logs a limited agent's start after its queued event, when the task's submit began before the claim and committed while it waited (%s)", async (_, models, labels) => {
    const cluster = await clusters({ max: 6 });
    const { pool } = cluster;
    await setAgentLimits(pool, 'a', { concurrency: 5, rate: null, dailyLimit: null, ...models });
    const node = await cluster.join();
    // The submit's transaction begins first (its now(), the task's run_at, is older than the claim's).
    const submitter = await pool.connect();
    await submitter.query('BEGIN');
    await submitter.query('SELECT now()');
    // Another claim of the agent holds its row: this claim takes its transaction id (the gate's
    // lock on the node's row) and then waits for the row.
    const holder = await pool.connect();
    try {
      await holder.query('BEGIN');
      await holder.query("SELECT 1 FROM troupe_agents WHERE name = 'a' FOR UPDATE");
      const claim = claimTasks(cluster.otherPool(), node.id, 'a', 5, LEASE);
      while ((await pool.query<{ n: number }>("SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'")).rows[0]!.n === 0);
      // The submit takes its id now, newer than the claim's, and commits while the claim waits.
      await submitTasks({ connect: async () => submitter } as unknown as pg.Pool, [{ id: 'late', agent: 'a', ...labels }]);
      await holder.query('ROLLBACK');
      const claimed = [...(await claim), ...(await claimTasks(pool, node.id, 'a', 5, LEASE))];
      expect(claimed.map((c) => c.id)).toEqual(['late']);
    } finally {
      holder.release();
    }
    expect(lifeOf(await wholeLog(pool), 'late').map(([type]) => type)).toEqual(['task.queued', 'task.started']);
  });
});
