/**
 * Joining the cluster on PostgreSQL: a node's row appears only with its advisory lock held, so a
 * sweeper never takes a joining node for dead (and removes it, and takes its attempts back).
 */
import pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import { deadNodes, joinCluster, NODE_LOCK_CLASS } from '../../src/store/postgres/nodes.js';
import { scratchPools } from '../helpers.js';

const pools = scratchPools();
const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

describe('joining the cluster', () => {
  it('shows no row of a joining node until its lock is held', async () => {
    const { url, pool } = await pools({ max: 4 });
    // Another session holds the lock the first node will take (lock numbers start at 1), so the
    // join stops between writing its row and holding its lock.
    const holder = new pg.Client({ connectionString: url });
    await holder.connect();
    cleanups.push(() => holder.end());
    await holder.query('SELECT pg_advisory_lock($1, 1)', [NODE_LOCK_CLASS]);
    const joining = joinCluster(url, () => undefined);
    const waiting = () => pool.query("SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2 AND objid = 1 AND NOT granted");
    while ((await waiting()).rows[0].n === 0);
    expect((await pool.query('SELECT count(*)::int AS n FROM troupe_nodes')).rows[0].n).toBe(0);
    await holder.query('SELECT pg_advisory_unlock($1, 1)', [NODE_LOCK_CLASS]);
    const node = await joining;
    cleanups.push(() => node.leave());
    expect(node.lock).toBe(1);
    expect((await pool.query('SELECT id::text FROM troupe_nodes')).rows).toEqual([{ id: node.id }]);
    expect(await deadNodes(pool)).toEqual([]);
  });
});
