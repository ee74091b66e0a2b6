/**
 * A cluster node claims ahead of its free slots only once its attempts are known to be fast (the
 * start-ahead window, src/tasks/start-ahead.ts), and the attempts it claimed ahead, queued on a
 * thread behind its running ones, keep their leases while they wait: they are not stuck.
 */
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { submitTasks } from '../../src/store/postgres/queue.js';
import { fixtureAgent, scratchDirs, scratchPools } from '../helpers.js';
import { clusterNodes, count, NOOP_AGENT, readStamps, until } from '../cluster.js';

const pools = scratchPools();
const nodes = clusterNodes();
const dirs = scratchDirs();

/** When each task's attempt was claimed, in epoch ms on the database's clock (this machine's, the server being local). */
async function claimedAt(pool: import('pg').Pool): Promise<Map<string, number>> {
  const { rows } = await pool.query<{ task_id: string; at: number }>('SELECT task_id, (extract(epoch FROM started_at) * 1000)::float8 AS at FROM troupe_attempts');
  return new Map(rows.map((r) => [r.task_id, r.at]));
}

describe('a cluster node claiming ahead', () => {
  it('claims nothing ahead for a slow agent: no attempt waits on its thread for a slot', async () => {
    const { url, pool } = await pools({ max: 4 });
    const file = join(dirs(), 'stamps');
    const ids = ['t0', 't1', 't2', 't3', 't4', 't5'];
    await submitTasks(pool, ids.map((id) => ({ id, agent: 'stamp', input: { file, ms: 300 } })));
    const node = await nodes({ connectionString: url, agents: [{ name: 'stamp', module: fixtureAgent('stamp') }], threads: 1, slotsPerThread: 2, pollMs: 20 });
    const windows: number[] = [];
    await until(async () => {
      windows.push(node.prefetch.window);
      return (await count(pool, "SELECT count(*) FROM troupe_tasks WHERE state = 'done'")) === ids.length;
    }, 'every task done');
    // Without evidence, then with evidence that attempts are slow, the window stays shut.
    expect(windows.filter((w) => w !== 0)).toEqual([]);
    expect(node.prefetch.execMs).toBeGreaterThanOrEqual(250);
    // Each attempt's agent started soon after its claim: none was claimed to wait behind a 300 ms
    // one. The first two, claimed for the free slots as the node started, may wait for their thread to load.
    const claims = await claimedAt(pool);
    const stamps = readStamps(file);
    const byClaim = [...ids].sort((x, y) => claims.get(x)! - claims.get(y)! || x.localeCompare(y));
    const waits = byClaim.map((id) => ({ id, waitMs: Math.round(stamps.get(`${id} 1`)!.start - claims.get(id)!) }));
    console.log(`claim -> agent start: ${waits.map((w) => `${w.id} ${w.waitMs} ms`).join(', ')}`);
    for (const { id, waitMs } of waits.slice(2)) expect({ id, late: waitMs >= 150 }).toEqual({ id, late: false });
  }, 30_000);

  it('keeps renewing the leases of attempts queued on a thread for several leases, and does not take them for stuck', async () => {
    const { url, pool } = await pools({ max: 4 });
    const file = join(dirs(), 'stamps');
    const node = await nodes({
      connectionString: url,
      agents: [
        { name: 'noop', module: NOOP_AGENT },
        { name: 'stamp', module: fixtureAgent('stamp') },
      ],
      threads: 1,
      slotsPerThread: 1,
      prefetch: 3,
      leaseMs: 300,
      sweepMs: 50,
      pollMs: 20,
    });
    // Fast attempts first: they open the window to its cap of 3.
    await submitTasks(pool, Array.from({ length: 200 }, (_, i) => ({ id: `n${String(i).padStart(3, '0')}`, agent: 'noop', input: null })));
    await until(async () => (await count(pool, "SELECT count(*) FROM troupe_tasks WHERE state = 'done'")) === 200 && node.held === 0, 'the fast tasks done');
    expect(node.prefetch.window).toBe(3);
    // Then four of 900 ms (3 leases each) on one slot: claimed together, three wait on the thread, the last for 2.7 s (9 leases).
    const ids = ['s0', 's1', 's2', 's3'];
    await submitTasks(pool, ids.map((id) => ({ id, agent: 'stamp', input: { file, ms: 900 }, maxAttempts: 1 })));
    await until(async () => (await count(pool, "SELECT count(*) FROM troupe_tasks WHERE id LIKE 's%' AND state IN ('done', 'failed', 'dropped')")) === 4, 'the slow tasks settled');

    expect((await pool.query("SELECT id, state, attempts FROM troupe_tasks WHERE id LIKE 's%' ORDER BY id")).rows).toEqual(ids.map((id) => ({ id, state: 'done', attempts: 1 })));
    expect((await pool.query("SELECT task_id, exit FROM troupe_attempts WHERE task_id LIKE 's%' ORDER BY task_id")).rows).toEqual(ids.map((id) => ({ task_id: id, exit: 'success' })));
    // They were claimed together and ran one after another, so the last waited on its thread for several leases.
    const claims = await claimedAt(pool);
    const at = ids.map((id) => claims.get(id)!);
    expect(Math.max(...at) - Math.min(...at)).toBeLessThan(100);
    const stamps = readStamps(file);
    const longest = Math.max(...ids.map((id) => stamps.get(`${id} 1`)!.start - claims.get(id)!));
    console.log(`longest wait on the thread: ${Math.round(longest)} ms (lease 300 ms)`);
    expect(longest).toBeGreaterThanOrEqual(1_800);
  }, 30_000);
});
