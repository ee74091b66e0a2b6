/**
 * Per-agent limits across the cluster on PostgreSQL (issue #15): `concurrency`, `rate` and
 * `dailyLimit` hold for the sum of all nodes' claims, checked from the rows; settles and sweeps
 * free concurrency slots; bad limits are refused and write nothing.
 */
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { dailyAt, windowStart } from '../../src/scheduler/cron.js';
import { setAgentLimits, type AgentLimits } from '../../src/store/postgres/limits.js';
import { deadNodes } from '../../src/store/postgres/nodes.js';
import { claimTasks, submitTasks, type ClaimedTask } from '../../src/store/postgres/queue.js';
import { settleAttempts } from '../../src/store/postgres/settle.js';
import { reclaim, sweep } from '../../src/store/postgres/sweeper.js';
import { rejection, scratchClusters, type ScratchCluster } from '../helpers.js';

const clusters = scratchClusters();
const LEASE = 60_000;
const NONE: AgentLimits = { concurrency: null, rate: null, dailyLimit: null };

const tasks = (count: number, agent = 'a', from = 0) => Array.from({ length: count }, (_, i) => ({ id: `${agent}${String(from + i).padStart(4, '0')}`, agent, maxAttempts: 100 }));
const running = async (pool: pg.Pool, agent = 'a') => (await pool.query<{ n: number }>("SELECT count(*)::int AS n FROM troupe_tasks WHERE agent = $1 AND state = 'running'", [agent])).rows[0]!.n;
const agentRow = async (pool: pg.Pool, agent = 'a') => (await pool.query('SELECT * FROM troupe_agents WHERE name = $1', [agent])).rows[0];
const success = (claimed: readonly ClaimedTask[]) => claimed.map((c) => ({ taskId: c.id, token: c.token, exit: 'success' as const }));
/** Backends of this database waiting for a lock. */
const lockWaiters = async (pool: pg.Pool) =>
  (await pool.query<{ n: number }>("SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'")).rows[0]!.n;

/** Three nodes, each with a pool of its own, claiming (and settling what they claim) until a claim of each comes back empty. */
async function drainOnce(cluster: ScratchCluster, agent = 'a'): Promise<ClaimedTask[]> {
  const all: ClaimedTask[] = [];
  await Promise.all(
    [cluster.pool, cluster.otherPool(), cluster.otherPool()].map(async (on, k) => {
      const node = await cluster.join();
      for (let round = 0; ; round++) {
        const claimed = await claimTasks(on, node.id, agent, 1 + ((round + k) % 3), LEASE);
        if (claimed.length === 0) return;
        all.push(...claimed);
        await settleAttempts(on, success(claimed));
      }
    }),
  );
  return all;
}

describe('agent limits across the cluster on PostgreSQL', () => {
  it('never runs more than `concurrency` attempts of an agent across three claiming nodes, checked from the rows at every step', async () => {
    const cluster = await clusters({ max: 8 });
    const { pool } = cluster;
    const LIMIT = 3;
    await setAgentLimits(pool, 'a', { ...NONE, concurrency: LIMIT });
    const count = 90;
    await submitTasks(pool, [...tasks(count), ...tasks(20, 'b')]);
    const seen: number[] = [];
    let done = 0;
    const observe = async (on: pg.Pool) => {
      const n = await running(on);
      seen.push(n);
      expect(n).toBeLessThanOrEqual(LIMIT);
    };
    const worker = async (on: pg.Pool, k: number) => {
      const node = await cluster.join();
      for (let round = 0; done < count; round++) {
        const claimed = await claimTasks(on, node.id, 'a', 1 + ((round + k) % 4), LEASE);
        await observe(on);
        if (claimed.length === 0) continue;
        // Every fourth claim's attempts run until their lease runs out and a sweep takes them back;
        // the rest settle, one in five with a retryable error (requeued).
        if ((round + k) % 4 === 0) {
          await on.query("UPDATE troupe_tasks SET lease_until = now() - interval '1 second' WHERE id = ANY($1::text[])", [claimed.map((c) => c.id)]);
          await reclaim(on, []);
          await observe(on);
          continue;
        }
        const { settled } = await settleAttempts(on, claimed.map((c, i) => ({ taskId: c.id, token: c.token, exit: (i + round) % 5 === 0 ? ('error' as const) : ('success' as const) })));
        await observe(on);
        done += settled.filter((s) => s.state === 'done').length;
      }
    };
    // A fourth connection reads the rows all along.
    const watcher = (async () => {
      while (done < count) await observe(pool);
    })();
    await Promise.all([worker(pool, 0), worker(cluster.otherPool(), 1), worker(cluster.otherPool(), 2), watcher]);
    // Requeued tasks were claimed again until every one was done.
    expect((await pool.query("SELECT count(*)::int AS n FROM troupe_tasks WHERE agent = 'a' AND state = 'done'")).rows[0].n).toBe(count);
    expect(Math.max(...seen)).toBe(LIMIT);
    expect(seen.length).toBeGreaterThan(count);
    // An agent without limits is not held by another's.
    const node = await cluster.join();
    expect(await claimTasks(pool, node.id, 'b', 20, LEASE)).toHaveLength(20);
  }, 60_000);

  it.each([
    ['concurrency', { ...NONE, concurrency: 2 }],
    ['rate', { ...NONE, rate: { limit: 2, windowMs: 3_600_000 } }],
    ['dailyLimit', { ...NONE, dailyLimit: { limit: 2, resetAt: '00:00', tz: 'UTC' } }],
  ] as const)('lets only one of two claims in flight take the last slots of a %s limit', async (_, limits) => {
    const cluster = await clusters();
    const { pool, url } = cluster;
    await setAgentLimits(pool, 'a', limits);
    await submitTasks(pool, tasks(6));
    const [first, second] = [await cluster.join(), await cluster.join()];
    // Both claims stop at their events' rows, held by this lock, after each has decided its slots.
    const holder = new pg.Client({ connectionString: url });
    await holder.connect();
    try {
      await holder.query('BEGIN');
      await holder.query('LOCK TABLE troupe_event_batches IN SHARE ROW EXCLUSIVE MODE');
      const one = claimTasks(cluster.otherPool(), first.id, 'a', 2, LEASE);
      while ((await lockWaiters(pool)) < 1);
      const two = claimTasks(cluster.otherPool(), second.id, 'a', 2, LEASE);
      while ((await lockWaiters(pool)) < 2);
      await holder.query('COMMIT');
      const claimed = [...(await one), ...(await two)];
      expect(claimed).toHaveLength(2);
      expect(await running(pool)).toBe(2);
    } finally {
      await holder.end();
    }
  });

  it('holds per-model sub-limits across three claiming nodes, and passes over a full model to the tasks behind it', async () => {
    const cluster = await clusters({ max: 8 });
    const { pool } = cluster;
    await setAgentLimits(pool, 'a', { ...NONE, concurrency: 5, models: { m1: 1, m2: 2 } });
    expect((await agentRow(pool)).models).toEqual({ m1: 1, m2: 2 });
    const labelled = (model: string | undefined, count: number, from: number) => tasks(count, 'a', from).map((t) => ({ ...t, labels: model ? { model } : ({} as Record<string, string>) }));
    // m1's tasks first in the queue, then m2's, tasks without a model, and tasks of a model with no sub-limit.
    await submitTasks(pool, [...labelled('m1', 30, 0), ...labelled('m2', 20, 100), ...labelled(undefined, 10, 200), ...labelled('m3', 10, 300)]);
    const node = await cluster.join();
    const first = await claimTasks(pool, node.id, 'a', 5, LEASE);
    // One of m1 (its sub-limit), two of m2, and the total filled from the tasks behind them.
    expect(first.map((c) => c.id)).toEqual(['a0000', 'a0100', 'a0101', 'a0200', 'a0201']);
    await settleAttempts(pool, success(first));
    const byModel = async (on: pg.Pool) =>
      Object.fromEntries(
        (await on.query<{ model: string; n: number }>("SELECT coalesce(labels ->> 'model', '-') AS model, count(*)::int AS n FROM troupe_tasks WHERE agent = 'a' AND state = 'running' GROUP BY 1")).rows.map((r) => [r.model, r.n]),
      ) as Record<string, number>;
    const most: Record<string, number> = {};
    const observe = async (on: pg.Pool) => {
      const now = await byModel(on);
      for (const [model, n] of Object.entries(now)) most[model] = Math.max(most[model] ?? 0, n);
      expect(now.m1 ?? 0).toBeLessThanOrEqual(1);
      expect(now.m2 ?? 0).toBeLessThanOrEqual(2);
      expect(Object.values(now).reduce((a, b) => a + b, 0)).toBeLessThanOrEqual(5);
    };
    let left = 70 - first.length;
    await Promise.all(
      [pool, cluster.otherPool(), cluster.otherPool()].map(async (on, k) => {
        const member = await cluster.join();
        for (let round = 0; left > 0; round++) {
          const claimed = await claimTasks(on, member.id, 'a', 1 + ((round + k) % 4), LEASE);
          await observe(on);
          if (claimed.length === 0) continue;
          const { settled } = await settleAttempts(on, success(claimed));
          left -= settled.length;
          await observe(on);
        }
      }),
    );
    expect((await pool.query("SELECT count(*)::int AS n FROM troupe_tasks WHERE agent = 'a' AND state = 'done'")).rows[0].n).toBe(70);
    expect(most.m1).toBe(1);
  }, 60_000);

  it('frees a concurrency slot when an attempt settles, and when a sweep takes one back from an expired lease or a dead node', async () => {
    const cluster = await clusters();
    const { pool } = cluster;
    await setAgentLimits(pool, 'a', { ...NONE, concurrency: 2 });
    await submitTasks(pool, tasks(10));
    const node = await cluster.join();
    const claim = (n = 5, by = node.id) => claimTasks(pool, by, 'a', n, LEASE);
    const [a, b] = await claim();
    expect(b).toBeDefined();
    expect(await claim()).toEqual([]);
    await settleAttempts(pool, success([a!]));
    const [c] = await claim();
    expect(c).toBeDefined();
    expect(await claim()).toEqual([]);
    // A lease that ran out still holds its slot until a sweep ends the attempt.
    await pool.query("UPDATE troupe_tasks SET lease_until = now() - interval '1 second' WHERE id = $1", [b!.id]);
    expect(await claim()).toEqual([]);
    expect((await reclaim(pool, [])).reclaimed.map((r) => r.taskId)).toEqual([b!.id]);
    const [d] = await claim();
    expect(d).toBeDefined();
    expect(await claim()).toEqual([]);
    // A dead node's attempt holds its slot until a sweep finds the node dead.
    await settleAttempts(pool, success([c!]));
    const doomed = await cluster.join();
    expect(await claim(5, doomed.id)).toHaveLength(1);
    expect(await claim()).toEqual([]);
    await pool.query("SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2 AND objid = $1", [doomed.lock]);
    while (!(await deadNodes(pool)).includes(doomed.id));
    expect(await claim()).toEqual([]);
    expect((await sweep(pool)).reclaimed).toHaveLength(1);
    expect(await claim()).toHaveLength(1);
    expect(await running(pool)).toBe(2);
  });

  it('shares a rate bucket among three claiming nodes, refilled on the database clock', async () => {
    const cluster = await clusters({ max: 8 });
    const { pool } = cluster;
    // 5 an hour: the few ms the test takes refill nothing worth a start.
    await setAgentLimits(pool, 'a', { ...NONE, rate: { limit: 5, windowMs: 3_600_000 } });
    await submitTasks(pool, tasks(40));
    expect(await drainOnce(cluster)).toHaveLength(5);
    expect((await agentRow(pool)).tokens).toBeLessThan(1);
    // Two tokens' worth of time passes (720 s a token), as the database's clock measures it.
    await pool.query("UPDATE troupe_agents SET refilled_at = refilled_at - interval '1440 seconds'");
    expect(await drainOnce(cluster)).toHaveLength(2);
    // Ten windows refill no more than a full bucket.
    await pool.query("UPDATE troupe_agents SET refilled_at = refilled_at - interval '10 hours'");
    expect(await drainOnce(cluster)).toHaveLength(5);
    // Set again, the limits keep the bucket's (empty) tokens rather than fill it, as FlowControl.configure does.
    await setAgentLimits(pool, 'a', { ...NONE, rate: { limit: 10, windowMs: 3_600_000 } });
    expect((await agentRow(pool)).tokens).toBeLessThan(1);
    expect(await drainOnce(cluster)).toHaveLength(0);
    await pool.query("UPDATE troupe_agents SET refilled_at = refilled_at - interval '10 hours'");
    expect(await drainOnce(cluster)).toHaveLength(10);
    await setAgentLimits(pool, 'a', NONE);
    expect(await agentRow(pool)).toMatchObject({ tokens: null, refilled_at: null });
    expect(await drainOnce(cluster)).toHaveLength(40 - 22);
  }, 60_000);

  it('shares the day\'s budget among three claiming nodes, over flow.ts\'s daily window, and starts again in the next window', async () => {
    const cluster = await clusters({ max: 8 });
    const { pool } = cluster;
    const dailyLimit = { limit: 7, resetAt: '06:30', tz: 'Asia/Kolkata' };
    await setAgentLimits(pool, 'a', { ...NONE, dailyLimit });
    await submitTasks(pool, tasks(40));
    const before = Number((await pool.query('SELECT (extract(epoch FROM now()) * 1000)::float8 AS now')).rows[0].now);
    expect(await drainOnce(cluster)).toHaveLength(7);
    const row = await agentRow(pool);
    const daily = dailyAt(dailyLimit.resetAt, dailyLimit.tz);
    // The window is the one containing the database's now (the test may straddle a reset: either side).
    const start = row.day_start.getTime() as number;
    expect([windowStart(daily, before), windowStart(daily, Date.now())]).toContain(start);
    expect(row).toMatchObject({ day_count: 7 });
    expect(row.day_ends.getTime()).toBe(daily.next(start));
    // Set again with the same window: the day's count stays.
    await setAgentLimits(pool, 'a', { ...NONE, dailyLimit });
    expect(await drainOnce(cluster)).toHaveLength(0);
    // The stored window is yesterday's: the next claim starts a new one.
    await pool.query("UPDATE troupe_agents SET day_start = day_start - interval '1 day', day_ends = day_ends - interval '1 day'");
    expect(await drainOnce(cluster)).toHaveLength(7);
    expect((await agentRow(pool)).day_start.getTime()).toBe(start);
  }, 60_000);

  it('rejects bad limits with INVALID_INPUT and writes nothing', async () => {
    const { pool } = await clusters();
    await setAgentLimits(pool, 'a', { ...NONE, concurrency: 1 });
    const dump = async () => [(await pool.query('SELECT * FROM troupe_agents ORDER BY name')).rows, (await pool.query('SELECT * FROM troupe_events')).rows];
    const before = await dump();
    const refused: Array<[string, unknown, unknown]> = [
      ['empty agent', '', NONE],
      ['no limits', 'a', null],
      ['zero concurrency', 'a', { ...NONE, concurrency: 0 }],
      ['fractional concurrency', 'a', { ...NONE, concurrency: 1.5 }],
      ['rate without window', 'a', { ...NONE, rate: { limit: 1 } }],
      ['negative rate', 'a', { ...NONE, rate: { limit: -1, windowMs: 1_000 } }],
      ['rate as number', 'a', { ...NONE, rate: 5 }],
      ['zero daily', 'a', { ...NONE, dailyLimit: { limit: 0, resetAt: '00:00', tz: 'UTC' } }],
      ['bad reset time', 'a', { ...NONE, dailyLimit: { limit: 1, resetAt: '25:00', tz: 'UTC' } }],
      ['bad zone', 'a', { ...NONE, dailyLimit: { limit: 1, resetAt: '00:00', tz: 'Mars/Olympus' } }],
      ['zero model limit', 'a', { ...NONE, models: { m: 0 } }],
      ['models as array', 'a', { ...NONE, models: [1] }],
      ['model with a NUL', 'a', { ...NONE, models: { 'm\u0000': 1 } }],
    ];
    for (const [what, agent, limits] of refused) expect({ what, ...(await rejection(setAgentLimits(pool, agent as string, limits as AgentLimits))) }).toMatchObject({ what, code: 'INVALID_INPUT' });
    expect(await dump()).toEqual(before);
  });
});
