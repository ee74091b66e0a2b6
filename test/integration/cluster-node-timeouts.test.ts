/**
 * A cluster node stops an attempt that runs past its agent's `timeoutMs`, and one whose thread
 * stops heartbeating (it blocks its event loop), terminating the thread when it does not stop;
 * each ends as the LMDB runtime would end it (`timeout`, `lease_expired`) and spends its budget.
 */
import { describe, expect, it } from 'vitest';
import { submitTasks } from '../../src/store/postgres/queue.js';
import { fixtureAgent, scratchPools } from '../helpers.js';
import { clusterNodes, count, until } from '../cluster.js';

const pools = scratchPools();
const nodes = clusterNodes();

describe('a cluster node', () => {
  it('ends an attempt past its timeout as timeout, and one whose thread blocks as lease_expired', async () => {
    const { url, pool } = await pools({ max: 4 });
    // The hang agent never returns: awaiting forever (ignoring its abort), or spinning its thread.
    await submitTasks(pool, [
      { id: 'late', agent: 'late', input: { mode: 'async' }, maxAttempts: 1 },
      { id: 'stuck', agent: 'stuck', input: { mode: 'block' }, maxAttempts: 1 },
    ]);
    await nodes({
      connectionString: url,
      agents: [{ name: 'late', module: fixtureAgent('hang'), timeoutMs: 150 }, { name: 'stuck', module: fixtureAgent('hang') }],
      threads: 2,
      slotsPerThread: 1,
      leaseMs: 600,
      cancelGraceMs: 100,
      pollMs: 20,
      // No sweep beyond the first: the node must find the blocked thread itself.
      sweepMs: 60_000,
    });
    await until(async () => (await count(pool, "SELECT count(*) FROM troupe_tasks WHERE state = 'dropped'")) === 2, 'both tasks dropped', 20_000);
    const tasks = (await pool.query("SELECT id, attempts, error->>'code' AS code, error->>'message' AS message FROM troupe_tasks ORDER BY id")).rows;
    expect(tasks).toEqual([
      { id: 'late', attempts: 1, code: 'RETRY_EXHAUSTED', message: expect.stringContaining('last error TIMEOUT') },
      { id: 'stuck', attempts: 1, code: 'RETRY_EXHAUSTED', message: expect.stringContaining('last error LEASE_EXPIRED') },
    ]);
    // Attempts claimed before the threads are up may share the first thread that is: a thread
    // terminated under one interrupts the other, queued behind it, which then runs again.
    const exits = async (id: string) => (await pool.query("SELECT exit, error->>'code' AS code FROM troupe_attempts WHERE task_id = $1 ORDER BY attempt", [id])).rows;
    const late = await exits('late');
    const stuck = await exits('stuck');
    expect(late.at(-1)).toEqual({ exit: 'timeout', code: 'TIMEOUT' });
    expect(stuck.at(-1)).toEqual({ exit: 'lease_expired', code: 'LEASE_EXPIRED' });
    expect(tasks[1].message).toMatch(/its thread was not heard from for \d+ ms/);
    for (const a of [...late.slice(0, -1), ...stuck.slice(0, -1)]) expect(a).toEqual({ exit: 'interrupted', code: null });
  }, 30_000);
});
