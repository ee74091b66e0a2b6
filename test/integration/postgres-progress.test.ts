/**
 * Agents' progress on PostgreSQL (schema version 20), at the level of the store's verb and across
 * runtimes: a write is fenced by its attempt's token (a stale attempt's reports store nothing: no
 * event, no change of the row), stores each report as a `task.progress` event in order and the
 * last one on the task's row; bad input writes nothing. Progress an agent reports on one runtime
 * is seen live, by `events()` and `get()`, on another. What both stores share is in
 * contract-progress.ts.
 */
import type pg from 'pg';
import { describe, expect, it } from 'vitest';
import { writeProgress, type ProgressWrite } from '../../src/store/postgres/progress.js';
import { claimTasks, submitTasks, type ClaimedTask } from '../../src/store/postgres/queue.js';
import { settleAttempts } from '../../src/store/postgres/settle.js';
import { fixtureAgent, rejection, scratchClusters, scratchPools } from '../helpers.js';
import { pgRuntimes } from '../pg-runtime.js';
import { nextEvent } from './contract.js';

const clusters = scratchClusters();
const pools = scratchPools();
const runtime = pgRuntimes();
const LEASE = 60_000;

/** A report of `claimed`'s attempt. */
const report = (claimed: ClaimedTask, value: number, message?: string): ProgressWrite => ({ taskId: claimed.id, token: claimed.token, attemptId: claimed.attemptId, value, at: 1_000 + value * 1_000, ...(message === undefined ? {} : { message }) });

/** A submitted task of agent `a`, claimed: its first attempt. */
async function claimedTask(pool: pg.Pool, nodeId: string, id: string): Promise<ClaimedTask> {
  await submitTasks(pool, [{ id, agent: 'a', maxAttempts: 3 }]);
  const [claimed] = await claimTasks(pool, nodeId, 'a', 1, LEASE);
  return claimed!;
}

const progressOf = async (pool: pg.Pool, id: string) => (await pool.query<{ progress: unknown }>('SELECT progress FROM troupe_tasks WHERE id = $1', [id])).rows[0]!.progress;
const eventsOf = async (pool: pg.Pool, id: string) => (await pool.query<{ attempt_id: string; data: unknown }>("SELECT attempt_id, data FROM troupe_events WHERE task_id = $1 AND type = 'task.progress' ORDER BY xid, seq", [id])).rows;

describe('progress on PostgreSQL', () => {
  it("stores a current attempt's reports as events in order and the last on its row; a stale attempt's store nothing", async () => {
    const { pool, join } = await clusters();
    const node = await join();
    const old = await claimedTask(pool, node.id, 't1');
    const other = await claimedTask(pool, node.id, 't2');
    expect(await writeProgress(pool, [report(old, 0.1, 'a'), report(other, 0.5), report(old, 0.2, 'b')])).toEqual({ stored: 3, stale: [] });
    expect(await progressOf(pool, 't1')).toEqual({ value: 0.2, message: 'b', at: 1_200 });
    expect(await progressOf(pool, 't2')).toEqual({ value: 0.5, at: 1_500 });
    expect(await eventsOf(pool, 't1')).toEqual([
      { attempt_id: 't1:1:1', data: { value: 0.1, message: 'a' } },
      { attempt_id: 't1:1:1', data: { value: 0.2, message: 'b' } },
    ]);
    // The attempt ends (requeued), a second starts: the first one's reports are stale.
    await settleAttempts(pool, [{ taskId: old.id, token: old.token, exit: 'error' }]);
    const [current] = await claimTasks(pool, node.id, 'a', 1, LEASE);
    expect(await writeProgress(pool, [report(old, 0.9, 'late'), report(current!, 0.3)])).toEqual({ stored: 1, stale: [{ taskId: 't1', token: old.token }] });
    expect(await progressOf(pool, 't1')).toEqual({ value: 0.3, at: 1_300 });
    // Settled: nothing more, and the settle kept the last report.
    await settleAttempts(pool, [{ taskId: 't1', token: current!.token, exit: 'success' }]);
    expect(await writeProgress(pool, [report(current!, 1)])).toEqual({ stored: 0, stale: [{ taskId: 't1', token: current!.token }] });
    expect(await progressOf(pool, 't1')).toEqual({ value: 0.3, at: 1_300 });
    expect((await eventsOf(pool, 't1')).map((e) => e.data)).toEqual([{ value: 0.1, message: 'a' }, { value: 0.2, message: 'b' }, { value: 0.3 }]);
  });

  it('refuses a malformed report with INVALID_INPUT, storing nothing of its batch', async () => {
    const { pool, join } = await clusters();
    const node = await join();
    const claimed = await claimedTask(pool, node.id, 't1');
    const good = report(claimed, 0.5);
    for (const [bad, message] of [
      [{ ...good, value: 1.5 }, 'reports[1].value must be a number from 0 to 1'],
      [{ ...good, value: Number.NaN }, 'reports[1].value must be a number from 0 to 1'],
      [{ ...good, message: 'a\u0000b' }, 'reports[1].message must be a string without NUL'],
      [{ ...good, at: Infinity }, 'reports[1].at must be a finite number'],
      [{ ...good, attemptId: '' }, 'reports[1].attemptId must be a non-empty string without NUL'],
      [{ ...good, token: 0 }, 'reports[1].token must be a positive integer'],
    ] as const) {
      expect(await rejection(writeProgress(pool, [good, bad as ProgressWrite]))).toMatchObject({ code: 'INVALID_INPUT', message });
    }
    expect(await rejection(writeProgress(pool, 'x' as never))).toMatchObject({ code: 'INVALID_INPUT' });
    expect(await progressOf(pool, 't1')).toBeNull();
    expect(await eventsOf(pool, 't1')).toEqual([]);
  });

  it('shows the progress an agent reports on one runtime, live, on another', async () => {
    const { url } = await pools({ migrated: false });
    const worker = await runtime(url, { agents: [{ name: 'progress', module: fixtureAgent('progress') }] });
    const reader = await runtime(url);
    const task = await worker.submit({ agent: 'progress', input: null });
    const seen: unknown[] = [];
    const stop = new AbortController();
    for await (const event of reader.events({ taskId: task.id, types: ['task.progress'], signal: stop.signal })) {
      seen.push(event.data);
      expect(event.attemptId).toBe(`${task.id}:1:1`);
      if (seen.length === 3) stop.abort();
    }
    expect(seen).toEqual([1, 2, 3].map((i) => ({ value: i / 1000, message: `step ${i}` })));
    const running = await reader.get(task.id);
    expect(running.state).toBe('running');
    expect(running.progress?.value).toBeGreaterThanOrEqual(0.003);
    expect(running.progress?.message).toBe(`step ${Math.round(running.progress!.value * 1000)}`);
    // The next report, heard live by a listener on the reader, is on the row it reads after.
    const next = await nextEvent(reader, 'task.progress', task.id);
    const after = await reader.get(task.id);
    expect(after.progress!.value).toBeGreaterThanOrEqual((next.data as { value: number }).value);
    await reader.cancel(task.id, 'enough');
    expect(await reader.wait(task.id)).toMatchObject({ state: 'cancelled', progress: { value: expect.any(Number) as number } });
  });
});
