/**
 * The cluster task queue on PostgreSQL (issue #15), on a real server: idempotent submits, claims
 * that never hand one task to two claimers, fenced settles and renewals, the attempt budget, and
 * attempts taken back from expired leases and dead nodes. Bad input writes nothing.
 */
import pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import { deadNodes, joinCluster, type ClusterNode } from '../../src/store/postgres/nodes.js';
import { readEvents } from '../../src/store/postgres/events.js';
import { MIGRATIONS, migrate } from '../../src/store/postgres/migrations.js';
import { claimTasks, renewLeases, submitTasks, type ClaimedTask, type NewTask } from '../../src/store/postgres/queue.js';
import { settleAttempts, type SettleResult } from '../../src/store/postgres/settle.js';
import { reclaim, runSweeper, sweep, type SweepResult } from '../../src/store/postgres/sweeper.js';
import { retryTask } from '../../src/store/postgres/tasks.js';
import { rejection, scratchPools } from '../helpers.js';

const pools = scratchPools();
const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

const LEASE = 60_000;
const task = (n: number, extra: Partial<NewTask> = {}): NewTask => ({ id: `t${String(n).padStart(4, '0')}`, agent: 'a', input: { n }, ...extra });
const tasks = (count: number, extra: Partial<NewTask> = {}) => Array.from({ length: count }, (_, i) => task(i + 1, extra));

async function join(url: string): Promise<ClusterNode> {
  const node = await joinCluster(url, () => undefined);
  cleanups.push(() => node.leave());
  return node;
}

/** A fresh database and one node of its cluster. */
async function cluster(max = 12): Promise<{ url: string; pool: pg.Pool; node: ClusterNode }> {
  const { url, pool } = await pools({ max });
  return { url, pool, node: await join(url) };
}

/** Everything stored about the queue, to check that a call wrote nothing. */
async function dump(pool: pg.Pool): Promise<unknown[]> {
  const tasks = await pool.query('SELECT * FROM troupe_tasks ORDER BY id');
  const attempts = await pool.query('SELECT * FROM troupe_attempts ORDER BY task_id, run, attempt');
  const nodes = await pool.query('SELECT * FROM troupe_nodes ORDER BY lock');
  const events = await pool.query('SELECT * FROM troupe_events ORDER BY seq');
  return [tasks.rows, attempts.rows, nodes.rows, events.rows];
}

const row = async (pool: pg.Pool, id: string) => (await pool.query('SELECT * FROM troupe_tasks WHERE id = $1', [id])).rows[0];
const attemptRows = async (pool: pg.Pool, id: string) =>
  (await pool.query('SELECT run, attempt, attempt_id, token::int AS token, node, exit, error, ended_at IS NOT NULL AS ended FROM troupe_attempts WHERE task_id = $1 ORDER BY run, attempt', [id])).rows;
const ids = (claimed: readonly ClaimedTask[]) => claimed.map((c) => c.id);
/** The database's clock passes `seconds` for a task: its lease or its retry delay runs out. */
const age = (pool: pg.Pool, id: string, column: 'lease_until' | 'run_at', seconds: number) =>
  pool.query(`UPDATE troupe_tasks SET ${column} = now() - $2 * interval '1 second' WHERE id = $1`, [id, seconds]);

describe('the PostgreSQL task queue', () => {
  it('submits a batch in one transaction; an idempotency key answers with the task that holds it', async () => {
    const { pool, node } = await cluster();
    expect(await submitTasks(pool, [task(1, { idempotencyKey: 'k1' }), task(2), task(3, { idempotencyKey: 'k1' })])).toEqual([
      { id: 't0001', created: true },
      { id: 't0002', created: true },
      { id: 't0001', created: false },
    ]);
    expect(await submitTasks(pool, [task(4, { idempotencyKey: 'k1' }), task(5, { idempotencyKey: 'k2' })])).toEqual([
      { id: 't0001', created: false },
      { id: 't0005', created: true },
    ]);
    const stored = (await pool.query('SELECT id, state, run, attempts, token::int AS token, idempotency_key, input FROM troupe_tasks ORDER BY id')).rows;
    expect(stored).toEqual([
      { id: 't0001', state: 'queued', run: 1, attempts: 0, token: 0, idempotency_key: 'k1', input: { n: 1 } },
      { id: 't0002', state: 'queued', run: 1, attempts: 0, token: 0, idempotency_key: null, input: { n: 2 } },
      { id: 't0005', state: 'queued', run: 1, attempts: 0, token: 0, idempotency_key: 'k2', input: { n: 5 } },
    ]);
    // The key holds after the task settles: it is permanent.
    const [claimed] = await claimTasks(pool, node.id, 'a', 1, LEASE);
    await settleAttempts(pool, [{ taskId: claimed!.id, token: claimed!.token, exit: 'success' }]);
    expect(await submitTasks(pool, [task(6, { idempotencyKey: 'k1' })])).toEqual([{ id: 't0001', created: false }]);
    // Submits racing with one key: one creates, all answer with its id.
    const raced = await Promise.all(Array.from({ length: 6 }, (_, i) => submitTasks(pool, [task(100 + i, { idempotencyKey: 'race' })])));
    const winners = raced.flat().filter((s) => s.created);
    expect(winners).toHaveLength(1);
    expect(new Set(raced.flat().map((s) => s.id))).toEqual(new Set([winners[0]!.id]));
    expect((await pool.query("SELECT count(*)::int AS n FROM troupe_tasks WHERE idempotency_key = 'race'")).rows[0].n).toBe(1);
  });

  it('never hands one task to two claimers on two pools, and together they claim every task', async () => {
    const { url, pool, node } = await cluster(6);
    const other = new pg.Pool({ connectionString: url, max: 6 });
    other.on('error', () => undefined);
    cleanups.push(() => other.end());
    const otherNode = await join(url);
    const count = 400;
    await submitTasks(pool, tasks(count));
    const claims: Array<{ node: string; task: ClaimedTask }> = [];
    const claimer = async (on: pg.Pool, by: ClusterNode, k: number) => {
      for (let n = 1 + (k % 9); ; n = 1 + ((n * 7 + k) % 9)) {
        const claimed = await claimTasks(on, by.id, 'a', n, LEASE);
        if (claimed.length === 0) return;
        expect(claimed.length).toBeLessThanOrEqual(n);
        for (const t of claimed) claims.push({ node: by.id, task: t });
      }
    };
    await Promise.all([0, 1, 2, 3].flatMap((k) => [claimer(pool, node, k), claimer(other, otherNode, k + 4)]));
    const claimedIds = claims.map((c) => c.task.id);
    expect(new Set(claimedIds).size).toBe(claimedIds.length);
    expect(claimedIds).toHaveLength(count);
    // Both nodes got work: the claims interleaved rather than one pool draining the queue first.
    expect(new Set(claims.map((c) => c.node)).size).toBe(2);
    const stored = (await pool.query("SELECT id, owner_node, token::int AS token FROM troupe_tasks WHERE state = 'running'")).rows;
    expect(stored).toHaveLength(count);
    const owners = new Map(claims.map((c) => [c.task.id, c.node]));
    for (const r of stored) expect({ id: r.id, owner: r.owner_node, token: r.token }).toEqual({ id: r.id, owner: owners.get(r.id), token: 1 });
    // Each running attempt is the task's first, named as its claim named it; none has ended, so
    // none has an attempt row yet (schema version 7 writes it at the attempt's end).
    expect((await pool.query("SELECT count(*)::int AS n FROM troupe_tasks WHERE state = 'running' AND attempt_seq = 1 AND attempt_id = id || ':1:1' AND attempt_started_at IS NOT NULL")).rows[0].n).toBe(count);
    expect((await pool.query('SELECT count(*)::int AS n FROM troupe_attempts')).rows[0].n).toBe(0);
  }, 60_000);

  it('claims lower priority first, then first queued, only of its agent, and not before the task may run; a claim carries the trace context its submit stored', async () => {
    const { pool, node } = await cluster();
    const trace = { traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01', tracestate: 'vendor=a' };
    await submitTasks(pool, [
      task(1, { priority: 5 }),
      task(2),
      task(3, { trace }),
      task(4, { agent: 'b', priority: -1 }),
      task(5, { priority: -10, delayMs: 3_600_000 }),
    ]);
    const claimed = await claimTasks(pool, node.id, 'a', 10, LEASE);
    expect(ids(claimed)).toEqual(['t0002', 't0003', 't0001']);
    expect(claimed[0]).toMatchObject({ agent: 'a', input: { n: 2 }, run: 1, attempt: 1, attempts: 1, maxAttempts: 3, token: 1, attemptId: 't0002:1:1' });
    expect(claimed.map((t) => t.trace)).toEqual([undefined, trace, undefined]);
    expect(await claimTasks(pool, node.id, 'a', 10, LEASE)).toEqual([]);
    await age(pool, 't0005', 'run_at', 1);
    expect(ids(await claimTasks(pool, node.id, 'a', 10, LEASE))).toEqual(['t0005']);
    expect(ids(await claimTasks(pool, node.id, 'b', 10, LEASE))).toEqual(['t0004']);
  });

  it('reports a settle or renewal with a stale token and writes nothing for it, while the rest of its batch settles', async () => {
    const { pool, node } = await cluster();
    await submitTasks(pool, tasks(2));
    const [first, second] = await claimTasks(pool, node.id, 'a', 2, LEASE);
    expect(await settleAttempts(pool, [{ taskId: first!.id, token: first!.token, exit: 'error' }])).toEqual({ settled: [{ taskId: 't0001', token: 1, state: 'queued' }], stale: [] });
    const [again] = await claimTasks(pool, node.id, 'a', 1, LEASE);
    expect(again).toMatchObject({ id: 't0001', attempt: 2, attempts: 2 });
    expect(again!.token).toBeGreaterThan(first!.token);
    const before = (await dump(pool))[0] as Array<{ id: string }>;
    const result = await settleAttempts(pool, [
      { taskId: first!.id, token: first!.token, exit: 'success', output: 'late' },
      { taskId: second!.id, token: second!.token, exit: 'success', output: { ok: true }, result: { kind: 'success', summary: 'all good' } },
      { taskId: second!.id, token: second!.token, exit: 'fail' },
      { taskId: 'nobody', token: 1, exit: 'success' },
    ]);
    expect(result).toEqual({
      settled: [{ taskId: 't0002', token: second!.token, state: 'done' }],
      stale: [
        { taskId: 't0001', token: first!.token },
        { taskId: 't0002', token: second!.token },
        { taskId: 'nobody', token: 1 },
      ],
    });
    const after = (await dump(pool))[0] as Array<{ id: string }>;
    expect(after.find((r) => r.id === 't0001')).toEqual(before.find((r) => r.id === 't0001'));
    // Settled: its row holds its last attempt (node, id, exit), with no lease.
    expect(await row(pool, 't0002')).toMatchObject({ state: 'done', output: { ok: true }, result: { kind: 'success', summary: 'all good' }, error: null, owner_node: node.id, attempt_id: second!.attemptId, attempt_exit: 'success', lease_until: null });
    expect((await row(pool, 't0002')).settled_at).toBeInstanceOf(Date);
    expect(await attemptRows(pool, 't0001')).toEqual([
      expect.objectContaining({ attempt: 1, exit: 'error', ended: true, error: expect.objectContaining({ code: 'AGENT_ERROR' }) }),
    ]);
    expect(await row(pool, 't0001')).toMatchObject({ state: 'running', attempt_seq: 2, attempt_id: again!.attemptId, token: String(again!.token) });
    expect(await attemptRows(pool, 't0002')).toEqual([expect.objectContaining({ attempt: 1, exit: 'success', ended: true, error: null })]);
    // Settled once: settling it again is stale.
    expect(await settleAttempts(pool, [{ taskId: second!.id, token: second!.token, exit: 'error' }])).toEqual({ settled: [], stale: [{ taskId: 't0002', token: second!.token }] });
    // Renewals are fenced the same way.
    const leaseBefore = (await row(pool, 't0001')).lease_until as Date;
    const renewal = await renewLeases(pool, [{ taskId: 't0001', token: first!.token }, { taskId: 't0001', token: again!.token }, { taskId: 't0002', token: second!.token }], 2 * LEASE);
    expect(renewal.lost).toEqual([{ taskId: 't0001', token: first!.token }, { taskId: 't0002', token: second!.token }]);
    expect(renewal.renewed).toEqual([{ taskId: 't0001', token: again!.token, leaseUntil: expect.any(Number) }]);
    expect(renewal.renewed[0]!.leaseUntil).toBeGreaterThan(leaseBefore.getTime());
    expect(((await row(pool, 't0001')).lease_until as Date).getTime()).toBe(renewal.renewed[0]!.leaseUntil);
  });

  it('retries a task per its attempt budget and then drops it; a non-retryable error or fail fails it; an interrupted attempt does not count', async () => {
    const { pool, node } = await cluster();
    await submitTasks(pool, [task(1, { maxAttempts: 3, priority: -1 }), task(2), task(3), task(4)]);
    const exits = ['error', 'interrupted', 'timeout', 'crashed'] as const;
    const states: string[] = [];
    for (const exit of exits) {
      const [claimed] = await claimTasks(pool, node.id, 'a', 1, LEASE);
      expect(claimed!.id).toBe('t0001');
      expect(claimed!.attempts).toBeLessThanOrEqual(3);
      const { settled } = await settleAttempts(pool, [{ taskId: 't0001', token: claimed!.token, exit }]);
      states.push(settled[0]!.state);
    }
    expect(states).toEqual(['queued', 'queued', 'queued', 'dropped']);
    expect(await row(pool, 't0001')).toMatchObject({ state: 'dropped', attempts: 3, attempt_seq: 4, error: expect.objectContaining({ code: 'RETRY_EXHAUSTED', retryable: false, fault: 'infrastructure' }) });
    expect((await attemptRows(pool, 't0001')).map((a) => [a.attempt, a.exit])).toEqual([[1, 'error'], [2, 'interrupted'], [3, 'timeout'], [4, 'crashed']]);
    expect(ids(await claimTasks(pool, node.id, 'a', 1, LEASE))).toEqual(['t0002']);
    const [t3, t4] = await claimTasks(pool, node.id, 'a', 2, LEASE);
    const { settled } = await settleAttempts(pool, [
      { taskId: t3!.id, token: t3!.token, exit: 'error', error: { code: 'AGENT_ERROR', message: 'no', retryable: false, fault: 'agent' } },
      { taskId: t4!.id, token: t4!.token, exit: 'fail', output: { why: 'bad' }, result: { kind: 'fail', summary: 'bad', branch: 'b', rev: 'r' } },
    ]);
    expect(settled.map((s) => s.state)).toEqual(['failed', 'failed']);
    expect(await row(pool, 't0003')).toMatchObject({ attempts: 1, error: { code: 'AGENT_ERROR', message: 'no', retryable: false, fault: 'agent' } });
    expect(await row(pool, 't0004')).toMatchObject({ output: { why: 'bad' }, result: { kind: 'fail', summary: 'bad', branch: 'b', rev: 'r' }, error: expect.objectContaining({ code: 'AGENT_FAILED' }) });
    expect(await row(pool, 't0003')).toMatchObject({ result: null });
  });

  it('requeues a retry at the end of its queue, after its delay on the database clock', async () => {
    const { pool, node } = await cluster();
    await submitTasks(pool, tasks(2));
    const [first] = await claimTasks(pool, node.id, 'a', 1, LEASE);
    await settleAttempts(pool, [{ taskId: first!.id, token: first!.token, exit: 'error' }]);
    expect(ids(await claimTasks(pool, node.id, 'a', 1, LEASE))).toEqual(['t0002']);
    const [retried] = await claimTasks(pool, node.id, 'a', 1, LEASE);
    expect(retried).toMatchObject({ id: 't0001', attempt: 2 });
    await settleAttempts(pool, [{ taskId: 't0001', token: retried!.token, exit: 'error', retryDelayMs: 3_600_000 }]);
    expect(await claimTasks(pool, node.id, 'a', 1, LEASE)).toEqual([]);
    await age(pool, 't0001', 'run_at', 1);
    expect(ids(await claimTasks(pool, node.id, 'a', 1, LEASE))).toEqual(['t0001']);
  });

  it('takes back an attempt whose lease ran out; its owner can then write nothing for it', async () => {
    const { pool, node } = await cluster();
    await submitTasks(pool, tasks(2, { maxAttempts: 2 }));
    const [claimed, other] = await claimTasks(pool, node.id, 'a', 2, LEASE);
    expect(await reclaim(pool, [])).toEqual({ reclaimed: [], removedNodes: [] });
    await age(pool, claimed!.id, 'lease_until', 1);
    expect(await reclaim(pool, [])).toEqual({
      reclaimed: [{ taskId: 't0001', token: claimed!.token, attemptId: 't0001:1:1', node: node.id, exit: 'lease_expired', state: 'queued' }],
      removedNodes: [],
    });
    expect(await reclaim(pool, [])).toEqual({ reclaimed: [], removedNodes: [] });
    expect(await settleAttempts(pool, [{ taskId: claimed!.id, token: claimed!.token, exit: 'success' }])).toEqual({ settled: [], stale: [{ taskId: 't0001', token: claimed!.token }] });
    expect((await renewLeases(pool, [{ taskId: claimed!.id, token: claimed!.token }], LEASE)).lost).toHaveLength(1);
    expect(await row(pool, 't0001')).toMatchObject({ state: 'queued', attempts: 1, owner_node: null, error: expect.objectContaining({ code: 'LEASE_EXPIRED' }) });
    expect(await attemptRows(pool, 't0001')).toEqual([expect.objectContaining({ exit: 'lease_expired', ended: true, error: expect.objectContaining({ code: 'LEASE_EXPIRED', fault: 'infrastructure' }) })]);
    expect(await row(pool, 't0002')).toMatchObject({ state: 'running', token: String(other!.token) });
    // Its second lease runs out too: the budget of 2 is spent.
    const [second] = await claimTasks(pool, node.id, 'a', 1, LEASE);
    await age(pool, second!.id, 'lease_until', 1);
    expect((await reclaim(pool, [])).reclaimed).toEqual([expect.objectContaining({ taskId: 't0001', state: 'dropped' })]);
    expect(await row(pool, 't0001')).toMatchObject({ state: 'dropped', attempts: 2, error: expect.objectContaining({ code: 'RETRY_EXHAUSTED' }) });
  });

  it('ends each attempt once when its owner settles it while sweepers take it back', async () => {
    const { url, pool, node } = await cluster();
    const other = new pg.Pool({ connectionString: url, max: 4 });
    other.on('error', () => undefined);
    cleanups.push(() => other.end());
    const count = 120;
    await submitTasks(pool, tasks(count, { maxAttempts: 5 }));
    const claimed = await claimTasks(pool, node.id, 'a', count, LEASE);
    const settled: SettleResult[] = [];
    const swept: SweepResult[] = [];
    // Four lanes, each task in turn: its lease runs out, then its owner's settle and a sweep race.
    const lane = async (k: number) => {
      for (const t of claimed.filter((_, i) => i % 4 === k)) {
        await age(pool, t.id, 'lease_until', 1);
        const [s, r] = await Promise.all([settleAttempts(pool, [{ taskId: t.id, token: t.token, exit: 'success' }]), reclaim(other, [])]);
        settled.push(s);
        swept.push(r);
      }
    };
    await Promise.all([0, 1, 2, 3].map(lane));
    // A sweep skips rows a settle holds; whatever is left over, one more takes back.
    const rest = await reclaim(pool, []);
    const byOwner = new Set(settled.flatMap((s) => s.settled.map((x) => x.taskId)));
    const bySweep = [...swept, rest].flatMap((s) => s.reclaimed.map((x) => x.taskId));
    expect(new Set(bySweep).size).toBe(bySweep.length);
    expect(bySweep.filter((id) => byOwner.has(id))).toEqual([]);
    expect(byOwner.size + bySweep.length).toBe(count);
    // Both sides won some races: the test saw the two write at once.
    expect(byOwner.size).toBeGreaterThan(0);
    expect(bySweep.length).toBeGreaterThan(0);
    expect(settled.flatMap((s) => s.stale.map((x) => x.taskId)).sort()).toEqual([...bySweep].sort());
    const stored = (await pool.query('SELECT t.id, t.state, a.exit FROM troupe_tasks t JOIN troupe_attempts a ON a.task_id = t.id ORDER BY t.id')).rows;
    expect(stored).toHaveLength(count);
    for (const r of stored) expect(r).toEqual(byOwner.has(r.id) ? { id: r.id, state: 'done', exit: 'success' } : { id: r.id, state: 'queued', exit: 'lease_expired' });
  });

  it('writes an attempt\'s row once, at its end, with what its task\'s row held of it while it ran', async () => {
    const { pool, node } = await cluster();
    await submitTasks(pool, tasks(2));
    const [first, second] = await claimTasks(pool, node.id, 'a', 2, LEASE);
    expect(await attemptRows(pool, first!.id)).toEqual([]);
    // The attempts started two seconds ago on the database's clock.
    await pool.query("UPDATE troupe_tasks SET attempt_started_at = now() - interval '2 seconds'");
    await settleAttempts(pool, [{ taskId: first!.id, token: first!.token, exit: 'success' }]);
    await settleAttempts(pool, [{ taskId: second!.id, token: second!.token, exit: 'error' }]);
    for (const claimed of [first!, second!]) {
      const rows = (await pool.query('SELECT run, attempt, attempt_id, token::int AS token, node, exit, extract(epoch FROM ended_at - started_at) AS seconds FROM troupe_attempts WHERE task_id = $1', [claimed.id])).rows;
      expect(rows).toEqual([{ run: 1, attempt: 1, attempt_id: claimed.attemptId, token: claimed.token, node: node.id, exit: claimed === first ? 'success' : 'error', seconds: expect.any(String) }]);
      expect(Number(rows[0].seconds)).toBeGreaterThanOrEqual(2);
    }
    const ends = (await readEvents(pool, '')).filter((e) => e.type === 'task.done' || e.type === 'task.retrying');
    expect(ends.map((e) => (e.data as { attemptMs: number }).attemptMs >= 2_000)).toEqual([true, true]);
    expect((await row(pool, second!.id)).attempt_started_at).toBeNull();
  });

  it('keeps a settled task\'s last attempt on its row, not in a row of its own, until a retry moves it there', async () => {
    const { pool, node } = await cluster();
    await submitTasks(pool, tasks(1));
    const [first] = await claimTasks(pool, node.id, 'a', 1, LEASE);
    const error = { code: 'BAD', message: 'no', retryable: false, fault: 'agent' as const };
    await settleAttempts(pool, [{ taskId: first!.id, token: first!.token, exit: 'fail', error }]);
    const table = async () => (await pool.query('SELECT task_id, run, attempt, exit FROM troupe_attempt_rows ORDER BY run, attempt')).rows;
    expect(await table()).toEqual([]);
    expect(await row(pool, first!.id)).toMatchObject({ state: 'failed', owner_node: node.id, attempt_id: first!.attemptId, attempt_exit: 'fail', attempt_error: error });
    const held = await attemptRows(pool, first!.id);
    expect(held).toEqual([{ run: 1, attempt: 1, attempt_id: first!.attemptId, token: first!.token, node: node.id, exit: 'fail', error, ended: true }]);
    // A retry starts run 2: the attempt moves to the table as it was, and the row holds none.
    await retryTask(pool, first!.id);
    expect(await table()).toEqual([{ task_id: first!.id, run: 1, attempt: 1, exit: 'fail' }]);
    expect(await attemptRows(pool, first!.id)).toEqual(held);
    expect(await row(pool, first!.id)).toMatchObject({ state: 'queued', owner_node: null, attempt_id: null, attempt_started_at: null, attempt_exit: null, attempt_error: null });
    const [again] = await claimTasks(pool, node.id, 'a', 1, LEASE);
    await settleAttempts(pool, [{ taskId: again!.id, token: again!.token, exit: 'success' }]);
    expect((await attemptRows(pool, first!.id)).map((a) => [a.run, a.attempt, a.exit, a.token])).toEqual([[1, 1, 'fail', first!.token], [2, 1, 'success', again!.token]]);
    expect(await table()).toHaveLength(1);
  });

  it('moves the attempts running at schema version 6 onto their tasks, to be ended as any other', async () => {
    const { pool } = await pools({ migrated: false });
    await migrate(pool, MIGRATIONS.slice(0, 6));
    await pool.query(`INSERT INTO troupe_tasks (id, agent, state, max_attempts, run, attempt_seq, attempts, token, owner_node, attempt_id, lease_until)
      VALUES ('t1', 'a', 'running', 3, 1, 2, 2, 4, 'n1', 't1:1:2', now() + interval '1 minute')`);
    await pool.query(`INSERT INTO troupe_attempts (task_id, run, attempt, attempt_id, token, node, started_at, ended_at, exit)
      VALUES ('t1', 1, 1, 't1:1:1', 2, 'n0', now() - interval '9 seconds', now() - interval '8 seconds', 'error'),
             ('t1', 1, 2, 't1:1:2', 4, 'n1', now() - interval '5 seconds', NULL, NULL)`);
    expect(await migrate(pool)).toMatchObject({ from: 6, applied: MIGRATIONS.slice(6).map((m) => m.version) });
    expect((await attemptRows(pool, 't1')).map((a) => [a.attempt, a.exit])).toEqual([[1, 'error']]);
    expect((await settleAttempts(pool, [{ taskId: 't1', token: 4, exit: 'success' }])).settled).toHaveLength(1);
    const rows = (await pool.query("SELECT attempt, node, exit, extract(epoch FROM ended_at - started_at)::float8 AS seconds FROM troupe_attempts WHERE task_id = 't1' ORDER BY attempt")).rows;
    expect(rows.map((r) => [r.attempt, r.node, r.exit])).toEqual([[1, 'n0', 'error'], [2, 'n1', 'success']]);
    expect(rows[1].seconds).toBeGreaterThanOrEqual(5);
  });

  it('skips a task a settle holds rather than waiting for it, and a settle that waited on a sweep is stale', async () => {
    const { url, pool, node } = await cluster();
    await submitTasks(pool, tasks(2));
    const [held, waited] = await claimTasks(pool, node.id, 'a', 2, LEASE);
    await pool.query("UPDATE troupe_tasks SET lease_until = now() - interval '1 second'");
    const other = new pg.Client({ connectionString: url });
    await other.connect();
    cleanups.push(() => other.end());
    // A settle of `held` in flight holds its row: the sweep goes on without it.
    await other.query('BEGIN');
    await other.query('SELECT 1 FROM troupe_tasks WHERE id = $1 FOR UPDATE', [held!.id]);
    expect((await reclaim(pool, [])).reclaimed.map((r) => r.taskId)).toEqual([waited!.id]);
    await other.query('ROLLBACK');
    // A sweep in flight holds `held` (as reclaim does, bumping its token); the owner's settle waits for it.
    await other.query('BEGIN');
    await other.query("UPDATE troupe_tasks SET state = 'queued', token = token + 1, owner_node = NULL, attempt_id = NULL, lease_until = NULL WHERE id = $1", [held!.id]);
    const settling = settleAttempts(pool, [{ taskId: held!.id, token: held!.token, exit: 'success' }]);
    const blocked = () => pool.query("SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'");
    while ((await blocked()).rows[0].n === 0);
    await other.query('COMMIT');
    expect(await settling).toEqual({ settled: [], stale: [{ taskId: held!.id, token: held!.token }] });
    expect(await row(pool, held!.id)).toMatchObject({ state: 'queued', output: null });
    expect(await attemptRows(pool, held!.id)).toEqual([]);
    expect((await pool.query("SELECT count(*)::int AS n FROM troupe_events WHERE type = 'task.done'")).rows[0].n).toBe(0);
    // A settle that waited on a transaction that changed nothing of the attempt settles it.
    const [again] = await claimTasks(pool, node.id, 'a', 1, LEASE);
    await other.query('BEGIN');
    await other.query('UPDATE troupe_tasks SET updated_at = now() WHERE id = $1', [again!.id]);
    const later = settleAttempts(pool, [{ taskId: again!.id, token: again!.token, exit: 'success', output: 2 }]);
    while ((await blocked()).rows[0].n === 0);
    await other.query('COMMIT');
    expect(await later).toEqual({ settled: [{ taskId: again!.id, token: again!.token, state: 'done' }], stale: [] });
    expect(await row(pool, again!.id)).toMatchObject({ state: 'done', output: 2 });
  });

  it('takes back the attempts of a node whose lock went, removes the node, and refuses its later claims', async () => {
    const { url, pool, node: live } = await cluster();
    const doomed = await join(url);
    await submitTasks(pool, tasks(5));
    const lost = await claimTasks(pool, doomed.id, 'a', 3, LEASE);
    const kept = await claimTasks(pool, live.id, 'a', 2, LEASE);
    // The doomed node's own connection ends, as when its process dies; its pool still works.
    await pool.query("SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2 AND objid = $1", [doomed.lock]);
    while (!(await deadNodes(pool)).includes(doomed.id));
    expect(await deadNodes(pool)).toEqual([doomed.id]);
    const swept = await sweep(pool);
    expect(swept.removedNodes).toEqual([doomed.id]);
    expect(swept.reclaimed).toEqual(lost.map((t) => ({ taskId: t.id, token: t.token, attemptId: t.attemptId, node: doomed.id, exit: 'crashed', state: 'queued' })));
    expect(await sweep(pool)).toEqual({ reclaimed: [], removedNodes: [] });
    for (const t of lost) expect(await attemptRows(pool, t.id)).toEqual([expect.objectContaining({ exit: 'crashed', error: expect.objectContaining({ code: 'PROCESS_CRASHED' }) })]);
    for (const t of kept) expect(await row(pool, t.id)).toMatchObject({ state: 'running', owner_node: live.id, token: String(t.token) });
    const before = await dump(pool);
    expect(await rejection(claimTasks(pool, doomed.id, 'a', 5, LEASE))).toMatchObject({ code: 'ILLEGAL_STATE' });
    expect((await settleAttempts(pool, lost.map((t) => ({ taskId: t.id, token: t.token, exit: 'success' as const })))).stale).toHaveLength(3);
    expect(await dump(pool)).toEqual(before);
    expect(ids(await claimTasks(pool, live.id, 'a', 5, LEASE)).sort()).toEqual(ids(lost).sort());
  });

  it('looks for expired leases every leaseCheckMs, and takes a dead node\'s attempts back at the next sweep whatever the time', async () => {
    const { url, pool, node: live } = await cluster();
    const doomed = await join(url);
    await submitTasks(pool, tasks(2));
    const [expired] = await claimTasks(pool, live.id, 'a', 1, LEASE);
    const [lost] = await claimTasks(pool, doomed.id, 'a', 1, LEASE);
    await age(pool, expired!.id, 'lease_until', 1);
    // The sweeper's clock: read once per sweep, so its reads count the sweeps.
    let now = 0;
    let reads = 0;
    const turns: Array<{ at: number; resolve: () => void }> = [];
    const clock = () => {
      reads++;
      for (const t of turns.splice(0)) (reads >= t.at ? t.resolve() : turns.push(t));
      return now;
    };
    const sweepsPass = (n: number) => new Promise<void>((resolve) => turns.push({ at: reads + n, resolve }));
    const sweeps: SweepResult[] = [];
    let swept: () => void = () => undefined;
    const stop = new AbortController();
    const loop = runSweeper(pool, { signal: stop.signal, intervalMs: 5, leaseCheckMs: 1_000, now: clock, onSweep: (r) => (sweeps.push(r), swept()), onError: () => undefined });
    const next = () => new Promise<void>((resolve) => (swept = resolve));
    // The first sweep looks (no look before it): the expired lease comes back.
    await (sweeps.length > 0 ? Promise.resolve() : next());
    expect(sweeps.flatMap((r) => r.reclaimed.map((c) => [c.taskId, c.exit]))).toEqual([[expired!.id, 'lease_expired']]);
    // Expired again, before leaseCheckMs has passed: not looked for, while sweeps go on.
    const [again] = await claimTasks(pool, live.id, 'a', 1, LEASE);
    await age(pool, again!.id, 'lease_until', 1);
    // A node dies: the next sweep takes its attempt back, and looks at the leases too.
    await pool.query("SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2 AND objid = $1", [doomed.lock]);
    await next();
    expect(sweeps.slice(1).flatMap((r) => r.reclaimed.map((c) => [c.taskId, c.exit])).sort()).toEqual([[again!.id, 'lease_expired'], [lost!.id, 'crashed']].sort());
    // A third lease runs out: found once the clock passes leaseCheckMs, not before.
    const [third] = await claimTasks(pool, live.id, 'a', 1, LEASE);
    await age(pool, third!.id, 'lease_until', 1);
    const during = sweeps.length;
    await sweepsPass(5);
    expect(sweeps.length).toBe(during);
    expect(await row(pool, third!.id)).toMatchObject({ state: 'running' });
    now = 2_000;
    await next();
    expect(sweeps.at(-1)!.reclaimed.map((c) => [c.taskId, c.exit])).toEqual([[third!.id, 'lease_expired']]);
    stop.abort();
    await loop;
  });

  it('rejects bad input with INVALID_INPUT and writes nothing', async () => {
    const { pool, node } = await cluster();
    await submitTasks(pool, tasks(3));
    const [claimed] = await claimTasks(pool, node.id, 'a', 1, LEASE);
    const before = await dump(pool);
    const refused: Array<() => Promise<unknown>> = [
      () => claimTasks(pool, node.id, 'a', 0, LEASE),
      () => claimTasks(pool, node.id, 'a', -1, LEASE),
      () => claimTasks(pool, node.id, 'a', 1.5, LEASE),
      () => claimTasks(pool, node.id, 'a', 1, -1),
      () => claimTasks(pool, node.id, 'a', 1, 0),
      () => claimTasks(pool, node.id, 'a', 1, Number.NaN),
      () => claimTasks(pool, node.id, '', 1, LEASE),
      () => claimTasks(pool, 'not-a-node', 'a', 1, LEASE),
      () => submitTasks(pool, [task(10), { ...task(11), agent: '' }]),
      () => submitTasks(pool, [task(10), task(10)]),
      () => submitTasks(pool, [task(10), task(1)]),
      () => submitTasks(pool, [task(10, { maxAttempts: 0 })]),
      () => submitTasks(pool, [task(10, { priority: 1.5 })]),
      () => submitTasks(pool, [task(10, { delayMs: -1 })]),
      () => submitTasks(pool, [task(10, { input: { f: () => 1 } })]),
      () => submitTasks(pool, [task(10, { input: { big: 1n } })]),
      () => submitTasks(pool, [task(10, { input: { at: new Date(0) } })]),
      () => submitTasks(pool, [task(10, { input: 'a\u0000b' })]),
      () => submitTasks(pool, [task(10, { input: { text: 'x\uD800y' } })]),
      () => submitTasks(pool, [task(10, { input: ['\uDFFF'] })]),
      () => submitTasks(pool, [task(10, { idempotencyKey: '' })]),
      () => submitTasks(pool, [task(10, { workspace: 'relative/dir' })]),
      () => submitTasks(pool, [task(10, { workspace: '/tmp/a\u0000b' })]),
      () => submitTasks(pool, [task(10, { workspace: '' })]),
      () => submitTasks(pool, [task(10, { trace: 'traceparent' as never })]),
      () => submitTasks(pool, [task(10, { trace: { traceparent: 5 } as never })]),
      () => submitTasks(pool, [task(10, { trace: { traceparent: 'a', tracestate: null } as never })]),
      () => submitTasks(pool, [task(10, { trace: { traceparent: 'a', baggage: 'b' } as never })]),
      () => submitTasks(pool, [task(10, { trace: { traceparent: 'a\u0000b' } })]),
      () => settleAttempts(pool, [{ taskId: claimed!.id, token: claimed!.token, exit: 'success' }, { taskId: claimed!.id, token: 0, exit: 'success' }]),
      () => settleAttempts(pool, [{ taskId: claimed!.id, token: claimed!.token, exit: 'finished' as never }]),
      () => settleAttempts(pool, [{ taskId: claimed!.id, token: claimed!.token, exit: 'error', error: { code: 'X' } as never }]),
      () => settleAttempts(pool, [{ taskId: claimed!.id, token: claimed!.token, exit: 'success', output: { f: () => 1 } }]),
      () => settleAttempts(pool, [{ taskId: claimed!.id, token: claimed!.token, exit: 'success', output: { text: 'x\uD800y' } }]),
      () => settleAttempts(pool, [{ taskId: claimed!.id, token: claimed!.token, exit: 'error', retryDelayMs: -1 }]),
      () => settleAttempts(pool, [{ taskId: claimed!.id, token: claimed!.token, exit: 'success', result: { kind: 'fork' } }]),
      () => settleAttempts(pool, [{ taskId: claimed!.id, token: claimed!.token, exit: 'error', result: { kind: 'error' } as never }]),
      () => settleAttempts(pool, [{ taskId: claimed!.id, token: claimed!.token, exit: 'success', result: { kind: 'success', summary: 5 } as never }]),
      () => settleAttempts(pool, [{ taskId: claimed!.id, token: claimed!.token, exit: 'success', result: { kind: 'success', output: 1 } as never }]),
      () => settleAttempts(pool, [{ taskId: claimed!.id, token: claimed!.token, exit: 'success', result: { kind: 'success', summary: 'a\u0000b' } }]),
      () => settleAttempts(pool, [{ taskId: claimed!.id, token: claimed!.token, exit: 'success', result: null as never }]),
      () => renewLeases(pool, [{ taskId: claimed!.id, token: claimed!.token }], -5),
      () => renewLeases(pool, [{ taskId: claimed!.id, token: -1 }], LEASE),
    ];
    for (const [i, call] of refused.entries()) expect({ i, ...(await rejection(call())) }).toMatchObject({ i, code: 'INVALID_INPUT' });
    expect(await dump(pool)).toEqual(before);
  });
});
