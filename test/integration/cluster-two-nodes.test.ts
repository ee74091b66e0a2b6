/**
 * Two cluster nodes on one database share its queue (issue #15): both run tasks, no task runs
 * twice, and neither ever holds more attempts than its slots.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { submitTasks } from '../../src/store/postgres/queue.js';
import { fixtureAgent, scratchDirs, scratchPools } from '../helpers.js';
import { clusterNodes, count, heldAtOnce, until } from '../cluster.js';

const pools = scratchPools();
const nodes = clusterNodes();
const dirs = scratchDirs();

describe('two cluster nodes', () => {
  it('share 1,000 tasks: both run some, none twice, all done, neither above its slots', async () => {
    const { url, pool } = await pools({ max: 4 });
    const file = join(dirs(), 'attempts');
    const TASKS = 1_000;
    // The record agent appends `taskId runId attempt` to the file, then waits 2 ms.
    const agents = [{ name: 'record', module: fixtureAgent('record') }];
    const a = await nodes({ connectionString: url, agents, threads: 1, slotsPerThread: 3, pollMs: 20 });
    const b = await nodes({ connectionString: url, agents, threads: 2, slotsPerThread: 2, pollMs: 20 });
    await submitTasks(pool, Array.from({ length: TASKS }, (_, i) => ({ id: `t${String(i).padStart(4, '0')}`, agent: 'record', input: { file, sleepMs: 2 } })));
    await until(async () => (await count(pool, "SELECT count(*) FROM troupe_tasks WHERE state = 'done'")) === TASKS, 'every task done');
    await until(async () => a.held === 0 && b.held === 0, 'the last settles');

    const byNode = new Map((await pool.query<{ node: string; n: number }>('SELECT node, count(*)::int AS n FROM troupe_attempts GROUP BY node')).rows.map((r) => [r.node, r.n]));
    console.log(`node a (3 slots) ran ${byNode.get(a.id)}, node b (4 slots) ran ${byNode.get(b.id)}`);
    expect([...byNode.keys()].sort()).toEqual([a.id, b.id].sort());
    expect(byNode.get(a.id)! + byNode.get(b.id)!).toBe(TASKS);
    expect(byNode.get(a.id)).toBeGreaterThan(0);
    expect(byNode.get(b.id)).toBeGreaterThan(0);
    // One attempt per task, ended as a success, and the agent ran each exactly once.
    expect(await count(pool, "SELECT count(*) FROM troupe_tasks WHERE state = 'done' AND attempts = 1 AND attempt_seq = 1")).toBe(TASKS);
    expect(await count(pool, "SELECT count(*) FROM troupe_attempts WHERE exit = 'success' AND ended_at IS NOT NULL AND attempt = 1")).toBe(TASKS);
    const ran = readFileSync(file, 'utf8').split('\n').filter(Boolean);
    expect(ran).toHaveLength(TASKS);
    expect(new Set(ran)).toEqual(new Set(Array.from({ length: TASKS }, (_, i) => `t${String(i).padStart(4, '0')} t${String(i).padStart(4, '0')}:1 1`)));
    // Each node held at most its slots at any instant, from claim to settle, on the database's clock.
    const held = await heldAtOnce(pool);
    console.log(`most held at once: a ${held.get(a.id)} of 3, b ${held.get(b.id)} of 4`);
    expect(held.get(a.id)).toBeLessThanOrEqual(3);
    expect(held.get(b.id)).toBeLessThanOrEqual(4);
    // And each filled its slots (the bound above is not met by running one at a time).
    expect(held.get(a.id)).toBe(3);
    expect(held.get(b.id)).toBe(4);
  }, 60_000);
});
