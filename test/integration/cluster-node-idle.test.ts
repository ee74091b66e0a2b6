/**
 * An idle cluster node on a real PostgreSQL (issue #15): its loops look before they open a
 * transaction. With no task, no due schedule, no dead node and no lease run out, its claim polls,
 * fires and sweeps send only one-statement looks (no BEGIN, so no commit that flushes the WAL);
 * a dead node's lock is tried and let go in one statement, whatever the number of nodes; and a
 * look that finds work still leads to the claim or the reclaim.
 */
import pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import { joinCluster, NODE_LOCK_CLASS } from '../../src/store/postgres/nodes.js';
import { parkForInput } from '../../src/store/postgres/inbox.js';
import { claimTasks, submitTasks } from '../../src/store/postgres/queue.js';
import { sweep } from '../../src/store/postgres/sweeper.js';
import { scratchPools } from '../helpers.js';
import { clusterNodes, count, NOOP_AGENT, until } from '../cluster.js';

const pools = scratchPools();
const nodes = clusterNodes();

/** Every statement any pg client of this process sends from now on (text, or a prepared statement's name). */
function recordStatements(): { sent: string[]; restore(): void } {
  const sent: string[] = [];
  const query = pg.Client.prototype.query;
  pg.Client.prototype.query = function (this: pg.Client, ...args: unknown[]) {
    const first = args[0] as string | { text?: string; name?: string };
    sent.push(typeof first === 'string' ? first : (first.name ?? first.text ?? ''));
    return (query as (...a: unknown[]) => unknown).apply(this, args);
  } as typeof query;
  return { sent, restore: () => (pg.Client.prototype.query = query) };
}

let restore: (() => void) | undefined;
afterEach(() => {
  restore?.();
  restore = undefined;
});

const times = (sent: readonly string[], name: string) => sent.filter((s) => s === name).length;

describe('an idle cluster node', () => {
  it('only looks while there is nothing to do, and claims once a look finds a due task', async () => {
    const { url, pool } = await pools({ max: 2 });
    const node = await nodes({ connectionString: url, agents: [{ name: 'noop', module: NOOP_AGENT }], threads: 1, slotsPerThread: 1, pollMs: 10, sweepMs: 10, fireMs: 10, leaseMs: 1_000 });
    const recorded = recordStatements();
    restore = recorded.restore;
    // Its first claim and fire (made as it starts, on a wake) are over once its polls look.
    await until(async () => recorded.sent.includes('troupe-any-runnable') && recorded.sent.includes('troupe-fire-look'), 'the first looks');
    const mark = recorded.sent.length;
    const since = () => recorded.sent.slice(mark);
    await until(async () => times(since(), 'troupe-any-runnable') >= 10 && times(since(), 'troupe-fire-look') >= 10 && times(since(), 'troupe-leases-ran-out') >= 2 && times(since(), 'troupe-dead-nodes') >= 10, 'the idle loops looked');
    expect(since().filter((s) => /^\s*BEGIN/i.test(s))).toEqual([]);
    expect(times(since(), 'troupe-claim')).toBe(0);
    // A task delayed past its submit's NOTIFY: only a poll's look can find it due.
    await submitTasks(pool, [{ id: 'late', agent: 'noop', delayMs: 100 }]);
    await until(async () => (await count(pool, "SELECT count(*) FROM troupe_tasks WHERE id = 'late' AND state = 'done'")) === 1, 'the delayed task ran');
    expect(times(since(), 'troupe-claim')).toBeGreaterThanOrEqual(1);
    await node.close();
  });

  it("reclaims a live node's attempts whose leases ran out, running or parked on an input, once a sweep's look finds them", async () => {
    const { url, pool } = await pools({ max: 2 });
    const live = await joinCluster(url, () => undefined);
    await submitTasks(pool, [{ id: 'runs', agent: 'a' }, { id: 'parks', agent: 'a' }]);
    const claimed = await claimTasks(pool, live.id, 'a', 2, 60_000);
    const parks = claimed.find((t) => t.id === 'parks')!;
    expect(await parkForInput(pool, { taskId: parks.id, token: parks.token }, parks.attemptId, undefined)).toMatchObject({ kind: 'parked' });
    // Leases not run out: the look finds nothing, and no transaction opens.
    const recorded = recordStatements();
    restore = recorded.restore;
    expect(await sweep(pool, true)).toEqual({ reclaimed: [], removedNodes: [] });
    expect(recorded.sent.filter((s) => /^\s*BEGIN/i.test(s))).toEqual([]);
    // Only the parked one's lease runs out: the look finds it, and the sweep detaches it.
    await pool.query("UPDATE troupe_tasks SET lease_until = now() - interval '1 second' WHERE id = 'parks'");
    await sweep(pool, true);
    expect((await pool.query("SELECT id, state, owner_node FROM troupe_tasks ORDER BY id")).rows).toEqual([
      { id: 'parks', state: 'waiting', owner_node: null },
      { id: 'runs', state: 'running', owner_node: live.id },
    ]);
    // And a running one's.
    await pool.query("UPDATE troupe_tasks SET lease_until = now() - interval '1 second' WHERE id = 'runs'");
    expect((await sweep(pool, true)).reclaimed).toMatchObject([{ taskId: 'runs', exit: 'lease_expired', state: 'queued' }]);
    await live.leave();
  });

  it('tries every node lock in one statement, lets go of those it took, and reclaims a dead node', async () => {
    const { url, pool } = await pools({ max: 2 });
    const live = await Promise.all([joinCluster(url, () => undefined), joinCluster(url, () => undefined)]);
    // A row no session holds the lock of: a node that died before any sweep removed it.
    const doomed = (await pool.query<{ id: string }>("INSERT INTO troupe_nodes (id, host, pid) VALUES ('00000000-0000-4000-8000-00000000dead', 'gone', 1) RETURNING id::text")).rows[0]!;
    const recorded = recordStatements();
    restore = recorded.restore;
    let result: Awaited<ReturnType<typeof sweep>> | undefined;
    let sweeps = 0;
    await until(async () => (sweeps++, (result = await sweep(pool, false)).removedNodes.length > 0), 'the dead node swept');
    expect(result!.removedNodes).toEqual([doomed.id]);
    // Each sweep tried the three nodes' locks in one statement.
    expect(times(recorded.sent, 'troupe-dead-nodes')).toBe(sweeps);
    expect(recorded.sent.filter((s) => /pg_try_advisory_lock/.test(s))).toEqual([]);
    // No lock of a node is held by the sweeper's sessions: the two live nodes' are their own.
    const held = await pool.query<{ objid: string }>("SELECT objid::text FROM pg_locks WHERE locktype = 'advisory' AND classid = $1::bigint::oid AND objsubid = 2 AND granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) ORDER BY objid", [NODE_LOCK_CLASS]);
    expect(held.rows.map((r) => Number(r.objid))).toEqual(live.map((n) => n.lock).sort((a, b) => a - b));
    for (const n of live) await n.leave();
  });
});
