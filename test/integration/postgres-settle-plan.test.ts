/**
 * How a settle reads the rows it ends (src/store/postgres/settle.ts, endsStatement): by their
 * primary key, whatever the table's statistics say. Written with `state = 'running'` on the lookups,
 * the planner could read them through the partial index of running tasks, and where the statistics
 * said few tasks run (an ANALYZE of a queue at rest: every task queued) it joined every running row
 * with every end in a nested loop: 0.6 s for one settle of 352 ends beside 824 running tasks. The
 * test counts the index tuples a settle reads through that index (the server's statistics, flushed
 * on demand), which that plan multiplies by the number of ends.
 */
import { describe, expect, it } from 'vitest';
import pg from 'pg';
import { joinCluster } from '../../src/store/postgres/nodes.js';
import { claimTasks, submitTasks } from '../../src/store/postgres/queue.js';
import { settleAttempts } from '../../src/store/postgres/settle.js';
import { scratchPools } from '../helpers.js';

const pools = scratchPools();

/** Index tuples read so far through the partial index of running tasks, by this connection's backend included. */
async function runningIndexReads(pool: pg.Pool): Promise<number> {
  // One connection: the settle's statistics are this backend's, flushed at the end of this call's
  // transaction (PostgreSQL 15's pg_stat_force_next_flush), and read by the next one.
  await pool.query('SELECT pg_stat_force_next_flush()');
  const { rows } = await pool.query<{ n: string }>("SELECT idx_tup_read::text AS n FROM pg_stat_user_indexes WHERE indexrelname = 'troupe_tasks_running_agent'");
  return Number(rows[0]!.n);
}

describe('a settle on PostgreSQL', () => {
  it('reads the rows it ends by id, not through the running index, when the statistics say none run', async () => {
    const { url, pool } = await pools({ max: 1 });
    await submitTasks(pool, Array.from({ length: 1_000 }, (_, i) => ({ id: `t${String(i).padStart(4, '0')}`, agent: 'a' })));
    // The statistics of a queue at rest: every task queued, none running.
    await pool.query('ANALYZE troupe_tasks');
    const node = await joinCluster(url, () => undefined);
    try {
      const claimed = await claimTasks(pool, node.id, 'a', 800, 60_000);
      expect(claimed).toHaveLength(800);
      const before = await runningIndexReads(pool);
      const result = await settleAttempts(pool, claimed.slice(0, 300).map((task) => ({ taskId: task.id, token: task.token, exit: 'success' as const, output: null })));
      expect({ settled: result.settled.length, stale: result.stale.length }).toEqual({ settled: 300, stale: 0 });
      // Read through that index, the lookups take every running row at least once (800; 1,600 with
      // the lookups of the statement before the fix), and once per end in the nested loop (240,000).
      expect(await runningIndexReads(pool) - before).toBeLessThan(800);
    } finally {
      await node.leave();
    }
  });
});
