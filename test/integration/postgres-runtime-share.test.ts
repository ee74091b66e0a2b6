/**
 * Two runtimes on one PostgreSQL database share its queue (issue #15): both run tasks of one
 * submit, and every task settles once, in one attempt, on one of them; submits on both at once
 * are admitted against `maxQueued` exactly (src/store/postgres/admission.ts).
 */
import { describe, expect, it } from 'vitest';
import { builtinAgent } from 'troupe';
import { scratchPools } from '../helpers.js';
import { pgRuntimes } from '../pg-runtime.js';

const pools = scratchPools();
const runtime = pgRuntimes();

describe('two runtimes on one database', () => {
  it('drain one queue: both run some, each task settles once, in one attempt', async () => {
    const { url, pool } = await pools({ max: 2 });
    const agents = [builtinAgent('sleep')];
    // No start-ahead: each claims for its free slots only, so neither takes the whole queue at once.
    const a = await runtime(url, { agents, threads: 1, slotsPerThread: 2, prefetch: 0 });
    const b = await runtime(url, { agents, threads: 1, slotsPerThread: 2, prefetch: 0 });
    const TASKS = 120;
    const tasks = await a.submitMany(Array.from({ length: TASKS }, (_, i) => ({ agent: 'sleep', input: { ms: 10, steps: 1 }, labels: { n: String(i) } })));
    // Each runtime waits for half, and sees the other half settle through the same log.
    const settled = await Promise.all(tasks.map((task, i) => (i % 2 === 0 ? a : b).wait(task.id, { timeoutMs: 60_000 })));
    expect(settled.every((task) => task.state === 'done' && task.attempts === 1)).toBe(true);

    const { rows } = await pool.query<{ task_id: string; node: string; exit: string }>('SELECT task_id, node, exit FROM troupe_attempts');
    expect(rows).toHaveLength(TASKS);
    expect(new Set(rows.map((r) => r.task_id)).size).toBe(TASKS);
    expect(rows.every((r) => r.exit === 'success')).toBe(true);
    const byNode = new Map<string, number>();
    for (const r of rows) byNode.set(r.node, (byNode.get(r.node) ?? 0) + 1);
    console.log(`runtime a and b ran ${[...byNode.values()].join(' and ')} of ${TASKS}`);
    expect(byNode.size).toBe(2);
    // One settling event per task in the log.
    const done = await pool.query<{ n: string }>("SELECT count(*) AS n, count(DISTINCT task_id) AS tasks FROM troupe_events WHERE type = 'task.done'");
    expect(done.rows[0]).toEqual({ n: String(TASKS), tasks: String(TASKS) });
  });

  it('admit exactly maxQueued of the submits both make at once, and refuse the rest with AT_CAPACITY', async () => {
    const { url, pool } = await pools({ max: 2 });
    const agents = [builtinAgent('echo')];
    const a = await runtime(url, { agents, maxQueued: 20 });
    const b = await runtime(url, { agents, maxQueued: 20 });
    // Frozen, nothing is claimed: every admitted task stays queued.
    await a.freeze();
    const results = await Promise.allSettled(Array.from({ length: 40 }, (_, i) => (i % 2 === 0 ? a : b).submit({ agent: 'echo', input: i })));
    const refused = results.flatMap((r) => (r.status === 'rejected' ? [r.reason as { code: string }] : []));
    expect(refused).toHaveLength(20);
    expect(refused.every((e) => e.code === 'AT_CAPACITY')).toBe(true);
    expect((await pool.query("SELECT count(*)::int AS n FROM troupe_tasks WHERE state = 'queued'")).rows[0].n).toBe(20);
    const [ma, mb] = await Promise.all([a.metrics(), b.metrics()]);
    expect(ma.atCapacityRejections + mb.atCapacityRejections).toBe(20);
  });
});
