/**
 * A cluster node on a real PostgreSQL with real threads (issue #15): it claims what its slots can
 * take, runs each task's attempt on its agent pool, and settles what the threads report in one
 * transaction per turn, each attempt once.
 */
import type pg from 'pg';
import { describe, expect, it } from 'vitest';
import type { AttemptEnd, SettleResult } from '../../src/store/postgres/settle.js';
import { settleAttempts } from '../../src/store/postgres/settle.js';
import { renewLeases, submitTasks, type Lease } from '../../src/store/postgres/queue.js';
import { fixtureAgent, scratchDirs, scratchPools } from '../helpers.js';
import { clusterNodes, count, heldAtOnce, NOOP_AGENT, until } from '../cluster.js';

const pools = scratchPools();
const nodes = clusterNodes();
const dirs = scratchDirs();

/** settleAttempts, with every call and what it answered kept. */
function countedSettles(): { calls: Array<{ ends: readonly AttemptEnd[]; result: SettleResult }>; settle: typeof settleAttempts } {
  const calls: Array<{ ends: readonly AttemptEnd[]; result: SettleResult }> = [];
  return {
    calls,
    settle: async (pool: pg.Pool, ends: readonly AttemptEnd[]) => {
      const result = await settleAttempts(pool, ends);
      calls.push({ ends, result });
      return result;
    },
  };
}

describe('a cluster node', () => {
  it('runs 500 tasks to done, each attempt ended once, settling many ends per transaction', async () => {
    const { url, pool } = await pools({ max: 4 });
    const TASKS = 500;
    await submitTasks(pool, Array.from({ length: TASKS }, (_, i) => ({ id: `t${String(i).padStart(4, '0')}`, agent: 'noop', input: { n: i } })));
    const { calls, settle } = countedSettles();
    const node = await nodes({ connectionString: url, agents: [{ name: 'noop', module: NOOP_AGENT }], threads: 2, slotsPerThread: 4, prefetch: 64, pollMs: 20, queue: { settle } });
    await until(async () => (await count(pool, "SELECT count(*) FROM troupe_tasks WHERE state = 'done'")) === TASKS, 'every task done');
    await until(async () => node.held === 0, 'the last settles');

    const tasks = (await pool.query('SELECT id, state, attempts, lease_until, output FROM troupe_tasks ORDER BY id')).rows;
    expect(tasks).toHaveLength(TASKS);
    for (const t of tasks) expect(t).toEqual({ id: t.id, state: 'done', attempts: 1, lease_until: null, output: { startedAt: expect.any(Number) } });
    const attempts = (await pool.query('SELECT task_id, attempt, node, exit, ended_at IS NOT NULL AS ended FROM troupe_attempts ORDER BY task_id')).rows;
    expect(attempts).toEqual(tasks.map((t) => ({ task_id: t.id, attempt: 1, node: node.id, exit: 'success', ended: true })));

    // Every attempt was ended by exactly one end in exactly one settle, and none was stale.
    const ends = calls.flatMap((c) => c.ends.map((e) => `${e.taskId}:${e.token}`));
    expect(ends).toHaveLength(TASKS);
    expect(new Set(ends).size).toBe(TASKS);
    expect(calls.flatMap((c) => c.result.stale)).toEqual([]);
    expect(calls.flatMap((c) => c.result.settled)).toHaveLength(TASKS);
    // Batched: far fewer settle transactions than tasks (one per end would be 500).
    const sizes = calls.map((c) => c.ends.length);
    console.log(`500 tasks settled in ${calls.length} transactions (largest batch ${Math.max(...sizes)})`);
    expect(calls.length).toBeLessThan(TASKS / 2);
    // Never more running rows than the node's 8 slots and its 64 claimed ahead, claim to settle.
    expect((await heldAtOnce(pool)).get(node.id)).toBeLessThanOrEqual(8 + 64);
  }, 60_000);

  it('keeps the leases of attempts that run for many leases, renewing them together', async () => {
    const { url, pool } = await pools({ max: 4 });
    const file = `${dirs()}/attempts`;
    // Each attempt runs for about 4 leases of 300 ms; a sweep every 50 ms takes back any that lapses.
    await submitTasks(pool, Array.from({ length: 4 }, (_, i) => ({ id: `t${i}`, agent: 'record', input: { file, sleepMs: 1_200 }, maxAttempts: 1 })));
    const renewals: Array<readonly Lease[]> = [];
    await nodes({
      connectionString: url,
      agents: [{ name: 'record', module: fixtureAgent('record') }],
      threads: 1,
      slotsPerThread: 4,
      leaseMs: 300,
      sweepMs: 50,
      pollMs: 20,
      queue: {
        renew: (db: pg.Pool, leases: readonly Lease[], leaseMs: number) => {
          renewals.push(leases);
          return renewLeases(db, leases, leaseMs);
        },
      },
    });
    await until(async () => (await count(pool, "SELECT count(*) FROM troupe_tasks WHERE state IN ('done', 'dropped')")) === 4, 'every task settled');
    expect((await pool.query("SELECT id, state, attempts FROM troupe_tasks ORDER BY id")).rows).toEqual(['t0', 't1', 't2', 't3'].map((id) => ({ id, state: 'done', attempts: 1 })));
    expect(await count(pool, "SELECT count(*) FROM troupe_attempts WHERE exit = 'success'")).toBe(4);
    // About every 100 ms (a third of the lease), one statement for all four leases.
    expect(renewals.length).toBeGreaterThanOrEqual(6);
    expect(Math.max(...renewals.map((r) => r.length))).toBe(4);
  }, 30_000);
});
