/**
 * Agents' log lines on PostgreSQL (schema version 10), at the level of the store's verbs and of a
 * cluster node: a write is fenced by its attempt's token (a stale attempt's lines are not stored,
 * and a write that meets an end holding the row waits for it and stores nothing), reads come in
 * key order after a cursor with the task's state, and a node settles an attempt only once its
 * lines are stored. Bad input writes nothing.
 */
import type pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import type { ClusterNodeHandle, openClusterNode as OpenClusterNode } from '../../src/cluster/node.js';
import type { resolveNodeOptions as ResolveNodeOptions } from '../../src/cluster/options.js';
import { toLogCursor } from '../../src/events/logs.js';
import { readLogPage, writeLogLines, type LogWrite } from '../../src/store/postgres/logs.js';
import { claimTasks, submitTasks, type ClaimedTask } from '../../src/store/postgres/queue.js';
import { settleAttempts } from '../../src/store/postgres/settle.js';
import { count, until } from '../cluster.js';
import { fixtureAgent, rejection, scratchClusters } from '../helpers.js';

const clusters = scratchClusters();
const LEASE = 60_000;
const closing: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const close of closing.splice(0)) await close();
});

/** `n` lines of `claimed`'s attempt, numbered from `from`. */
function linesOf(claimed: ClaimedTask, n: number, from = 0): LogWrite[] {
  return Array.from({ length: n }, (_, i) => ({ taskId: claimed.id, token: claimed.token, run: claimed.run, attempt: claimed.attempt, attemptId: claimed.attemptId, seq: from + i, level: 'info', message: `line ${from + i}`, at: 1_000 + i }));
}

const stored = async (pool: pg.Pool, id: string) => (await pool.query('SELECT run, attempt, seq, message FROM troupe_logs WHERE task_id = $1 ORDER BY run, attempt, seq', [id])).rows;

/** A submitted task of agent `a`, claimed: its first attempt. */
async function claimedTask(pool: pg.Pool, nodeId: string, id: string): Promise<ClaimedTask> {
  await submitTasks(pool, [{ id, agent: 'a', maxAttempts: 3 }]);
  const [claimed] = await claimTasks(pool, nodeId, 'a', 1, LEASE);
  return claimed!;
}

describe('log lines on PostgreSQL', () => {
  it('stores the lines of a current attempt and reads them back in key order after a cursor, with the task state', async () => {
    const { pool, join } = await clusters();
    const node = await join();
    const claimed = await claimedTask(pool, node.id, 't1');
    const first = linesOf(claimed, 3);
    first[1]!.fields = { n: 1, nested: { ok: true } };
    first[2]!.level = 'error';
    expect(await writeLogLines(pool, first)).toEqual({ stored: 3, stale: [] });
    // A write tried again (its answer lost) stores nothing twice; the next one carries on.
    expect(await writeLogLines(pool, [...first, ...linesOf(claimed, 2, 3)])).toEqual({ stored: 2, stale: [] });
    const page = await readLogPage(pool, 't1', undefined, 10);
    expect(page?.state).toBe('running');
    expect(page?.lines.map((l) => [l.cursor, l.message, l.level, l.attemptId])).toEqual([0, 1, 2, 3, 4].map((seq) => [toLogCursor(1, 1, seq), `line ${seq}`, seq === 2 ? 'error' : 'info', 't1:1:1']));
    expect(page?.lines[1]).toEqual({ taskId: 't1', cursor: toLogCursor(1, 1, 1), level: 'info', message: 'line 1', at: 1_001, attemptId: 't1:1:1', fields: { n: 1, nested: { ok: true } } });
    expect(page?.lines[0]).not.toHaveProperty('fields');
    expect((await readLogPage(pool, 't1', [1, 1, 1], 2))?.lines.map((l) => l.message)).toEqual(['line 2', 'line 3']);
    expect((await readLogPage(pool, 't1', [1, 1, 4], 10))?.lines).toEqual([]);
    expect(await readLogPage(pool, 'nope', undefined, 10)).toBeUndefined();
    expect(await readLogPage(pool, 'a\u0000b', undefined, 10)).toBeUndefined();
  });

  it("drops a stale attempt's lines: its token moved on, or its task is not running; the current attempt's lines in the same write are stored", async () => {
    const { pool, join } = await clusters();
    const node = await join();
    const old = await claimedTask(pool, node.id, 't1');
    await writeLogLines(pool, linesOf(old, 2));
    // The attempt ends (retried: the task is queued again), then a second attempt starts.
    await settleAttempts(pool, [{ taskId: old.id, token: old.token, exit: 'error' }]);
    expect(await writeLogLines(pool, linesOf(old, 2, 2))).toEqual({ stored: 0, stale: [{ taskId: 't1', token: old.token }] });
    const [current] = await claimTasks(pool, node.id, 'a', 1, LEASE);
    expect(current).toMatchObject({ id: 't1', attempt: 2 });
    const other = await claimedTask(pool, node.id, 't2');
    const result = await writeLogLines(pool, [...linesOf(old, 1, 4), ...linesOf(current!, 2), ...linesOf(other, 1)]);
    expect(result).toEqual({ stored: 3, stale: [{ taskId: 't1', token: old.token }] });
    expect(await stored(pool, 't1')).toEqual([
      { run: 1, attempt: 1, seq: 0, message: 'line 0' },
      { run: 1, attempt: 1, seq: 1, message: 'line 1' },
      { run: 1, attempt: 2, seq: 0, message: 'line 0' },
      { run: 1, attempt: 2, seq: 1, message: 'line 1' },
    ]);
    // Settled: nothing more of any attempt.
    await settleAttempts(pool, [{ taskId: 't1', token: current!.token, exit: 'success' }]);
    expect(await writeLogLines(pool, linesOf(current!, 1, 2))).toMatchObject({ stored: 0 });
    expect(await readLogPage(pool, 't1', undefined, 10)).toMatchObject({ state: 'done' });
    expect(await stored(pool, 't1')).toHaveLength(4);
  });

  it('a write that meets an end holding the task row waits for it, then stores nothing', async () => {
    const { pool, join, otherPool } = await clusters();
    const node = await join();
    const claimed = await claimedTask(pool, node.id, 't1');
    const ender = await otherPool(1).connect();
    try {
      await ender.query('BEGIN');
      await ender.query('UPDATE troupe_tasks SET token = token + 1 WHERE id = $1', ['t1']);
      const write = writeLogLines(pool, linesOf(claimed, 2));
      await until(async () => (await count(pool, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%INSERT INTO troupe_logs%'")) === 1, 'the write waiting for the row');
      await ender.query('COMMIT');
      expect(await write).toEqual({ stored: 0, stale: [{ taskId: 't1', token: claimed.token }] });
    } finally {
      ender.release();
    }
    expect(await stored(pool, 't1')).toEqual([]);
  });

  it('refuses malformed lines with INVALID_INPUT, storing none of the write', async () => {
    const { pool, join } = await clusters();
    const node = await join();
    const claimed = await claimedTask(pool, node.id, 't1');
    const good = linesOf(claimed, 1)[0]!;
    const bad: Array<Partial<LogWrite> | null> = [null, { token: 0 }, { seq: -1 }, { run: 0 }, { level: 'loud' as never }, { message: 'a\u0000b' }, { message: 5 as never }, { at: Number.NaN }, { fields: [] as never }, { fields: { d: new Date() } }, { attemptId: '' }];
    for (const change of bad) {
      const line = change === null ? null : { ...good, seq: 1, ...change };
      expect(await rejection(writeLogLines(pool, [good, line as LogWrite])), JSON.stringify(change)).toMatchObject({ code: 'INVALID_INPUT' });
    }
    expect(await rejection(writeLogLines(pool, 'x' as never))).toMatchObject({ code: 'INVALID_INPUT' });
    expect(await stored(pool, 't1')).toEqual([]);
  });
});

const built = {
  ...((await import(new URL('../../dist/src/cluster/node.js', import.meta.url).href)) as { openClusterNode: typeof OpenClusterNode }),
  ...((await import(new URL('../../dist/src/cluster/options.js', import.meta.url).href)) as { resolveNodeOptions: typeof ResolveNodeOptions }),
};

describe('a cluster node storing log lines', () => {
  it("settles an attempt only once its lines are stored: its end waits for a write in flight", async () => {
    const { url, pool } = await clusters();
    await submitTasks(pool, [{ id: 't1', agent: 'logging', input: { lines: 120 } }]);
    let open!: () => void;
    const gate = new Promise<void>((resolve) => (open = resolve));
    const writes: number[] = [];
    const node: ClusterNodeHandle = await built.openClusterNode(
      built.resolveNodeOptions({
        connectionString: url,
        agents: [{ name: 'logging', module: fixtureAgent('logging') }],
        threads: 1,
        slotsPerThread: 1,
        pollMs: 20,
        logger: false,
        queue: {
          log: async (on, lines) => {
            writes.push(lines.length);
            await gate;
            return writeLogLines(on, lines);
          },
        },
      }),
    );
    closing.push(() => node.close({ timeoutMs: 1_000 }));
    await until(async () => writes.length > 0 && node.running === 0, 'the attempt ended, its first lines held');
    // Its end is decided; its lines are held, and so is its settle. One write is in flight at a
    // time: the lines that came meanwhile wait for it.
    expect(await count(pool, "SELECT count(*) FROM troupe_tasks WHERE state = 'running'")).toBe(1);
    expect(writes).toHaveLength(1);
    open();
    await until(async () => (await count(pool, "SELECT count(*) FROM troupe_tasks WHERE state = 'done'")) === 1, 'the task done');
    expect(await count(pool, "SELECT count(*) FROM troupe_logs WHERE task_id = 't1'")).toBe(120);
    expect(writes.reduce((a, b) => a + b, 0)).toBe(120);
  });
});
