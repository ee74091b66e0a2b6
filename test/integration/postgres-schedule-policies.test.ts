/**
 * The LMDB runtime's schedule policies on the PostgreSQL cluster (schema version 13), at the level
 * of fireDue and updateSchedule, on the database's clock (stored times moved, never a sleep):
 * catch-up of ticks that fell due while no node ran (skip, once, all, within the window), who
 * counts as running (a live node that started before the ticks; not a dead node's row, nor a lock
 * of the same number in another database), `queue_one` (a tick held behind a running task, replaced
 * by a later one, fired as the task settles), each tick decided against the last run as it was at
 * the tick, three nodes firing queue_one schedules while their tasks settle (no tick twice), and
 * updates.
 */
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { compileCron, tickIso } from '../../src/scheduler/cron.js';
import { readEvents } from '../../src/store/postgres/events.js';
import { submitTasks } from '../../src/store/postgres/queue.js';
import { fireDue, type FireResult } from '../../src/store/postgres/schedule-fire.js';
import { createSchedule, updateSchedule } from '../../src/store/postgres/schedules.js';
import { cancelTask } from '../../src/store/postgres/tasks.js';
import { rejection, scratchClusters } from '../helpers.js';

const clusters = scratchClusters();
const HOUR = 3_600_000;
const task = { agent: 'a' };

const dbNow = async (pool: pg.Pool) => Number((await pool.query('SELECT (extract(epoch FROM now()) * 1000)::float8 AS now')).rows[0].now);
/** The start of the database's current hour, and its now. */
const hourOf = async (pool: pg.Pool) => {
  const now = await dbNow(pool);
  return { now, hour: Math.floor(now / HOUR) * HOUR };
};
const setNext = (pool: pg.Pool, id: string, at: number) => pool.query('UPDATE troupe_schedules SET next_run_at = to_timestamp($2::float8 / 1000) WHERE id = $1', [id, at]);
/** A node that has run since long before the ticks: none of them fell due while no node ran. */
const runningSinceYesterday = (pool: pg.Pool, node: string) => pool.query(`UPDATE troupe_nodes SET started_at = now() - interval '1 day' WHERE id = $1`, [node]);
const stored = async (pool: pg.Pool, id: string) =>
  (
    await pool.query(
      `SELECT (extract(epoch FROM next_run_at) * 1000)::float8 AS next, (extract(epoch FROM pending_tick) * 1000)::float8 AS pending, fired::int, skipped::int, last_task_id, paused
         FROM troupe_schedules WHERE id = $1`,
      [id],
    )
  ).rows[0] as { next: number; pending: number | null; fired: number; skipped: number; last_task_id: string | null; paused: boolean };
/** A schedule's `schedule.fired` events as [tick, 'fired' or why skipped]. */
const story = async (pool: pg.Pool, id: string) =>
  (await readEvents(pool, '', 1_000_000))
    .filter((e) => e.type === 'schedule.fired' && (e.data as { scheduleId: string }).scheduleId === id)
    .map((e) => [(e.data as { tick: number }).tick, (e.data as { skipped?: string }).skipped ?? 'fired']);
const of = (result: FireResult, id: string) => ({
  fired: result.fired.filter((f) => f.scheduleId === id).map((f) => f.tick),
  skipped: result.skipped.filter((s) => s.scheduleId === id).map((s) => [s.tick, s.reason]),
});

describe('schedule policies on the PostgreSQL cluster', () => {
  it('catches up the ticks that fell due while no node ran: skip, once, and all within catchUpWindowMs', async () => {
    const { pool, join } = await clusters();
    const { now, hour } = await hourOf(pool);
    await createSchedule(pool, { id: 'skip', cron: '0 * * * *', task });
    await createSchedule(pool, { id: 'once', cron: '0 * * * *', task, catchUp: 'once' });
    // The window reaches back to the tick two hours before this one, and no further.
    await createSchedule(pool, { id: 'all', cron: '0 * * * *', task, catchUp: 'all', overlap: 'allow', catchUpWindowMs: Math.ceil(now - (hour - 2 * HOUR)) + 60_000 });
    for (const id of ['skip', 'once', 'all']) await setNext(pool, id, hour - 4 * HOUR);
    // The first node since the five ticks fell due.
    const node = await join();
    const result = await fireDue(pool, node.id);
    const missed = (ticks: number[]) => ticks.map((t) => [t, 'catch_up']);
    const ago = (h: number) => hour - h * HOUR;
    expect(of(result, 'skip')).toEqual({ fired: [], skipped: missed([ago(4), ago(3), ago(2), ago(1), hour]) });
    expect(of(result, 'once')).toEqual({ fired: [hour], skipped: missed([ago(4), ago(3), ago(2), ago(1)]) });
    expect(of(result, 'all')).toEqual({ fired: [ago(2), ago(1), hour], skipped: missed([ago(4), ago(3)]) });
    for (const id of ['skip', 'once', 'all']) expect((await stored(pool, id)).next).toBe(hour + HOUR);
    expect(await stored(pool, 'skip')).toMatchObject({ fired: 0, skipped: 5, last_task_id: null });
    expect(await stored(pool, 'all')).toMatchObject({ fired: 3, skipped: 2, last_task_id: result.fired.find((f) => f.scheduleId === 'all' && f.tick === hour)!.taskId });
    expect(await story(pool, 'all')).toEqual([
      [ago(2), 'fired'],
      [ago(1), 'fired'],
      [hour, 'fired'],
      [ago(4), 'catch_up'],
      [ago(3), 'catch_up'],
    ]);
    const keys = (await pool.query<{ key: string }>('SELECT idempotency_key AS key FROM troupe_tasks ORDER BY 1')).rows.map((r) => r.key);
    expect(keys).toEqual([...[ago(2), ago(1), hour].map((t) => `schedule:all:${tickIso(t)}`), `schedule:once:${tickIso(hour)}`].sort());
  });

  it('fires late ticks that fell due while a live node ran; a dead node, or a lock of the same number in another database, is not running', async () => {
    const { pool, join } = await clusters();
    const elsewhere = await clusters();
    const { hour } = await hourOf(pool);
    // A node that died a day ago, whose row no sweep has removed yet: nobody holds its lock.
    const ghost = (await pool.query<{ lock: string }>(`INSERT INTO troupe_nodes (id, host, pid, started_at) VALUES (gen_random_uuid(), 'ghost', 1, now() - interval '1 day') RETURNING lock`)).rows[0]!;
    // Live nodes of another database on the same server hold the lock of the ghost's number there.
    for (let lock = 0; lock < Number(ghost.lock); ) lock = (await elsewhere.join()).lock;
    const node = await join();
    await createSchedule(pool, { id: 'late', cron: '0 * * * *', task, overlap: 'allow' });
    await setNext(pool, 'late', hour - 2 * HOUR);
    expect(of(await fireDue(pool, node.id), 'late')).toEqual({ fired: [], skipped: [hour - 2 * HOUR, hour - HOUR, hour].map((t) => [t, 'catch_up']) });
    // A live node has run since before them: the same ticks, late, all fire (this node fires them).
    const elder = await join();
    await runningSinceYesterday(pool, elder.id);
    await setNext(pool, 'late', hour - 2 * HOUR);
    expect(of(await fireDue(pool, node.id), 'late')).toEqual({ fired: [hour - 2 * HOUR, hour - HOUR, hour], skipped: [] });
  });

  it('queue_one holds the latest tick behind a running task (an older one is skipped) and fires it once the task settles', async () => {
    const { pool, join } = await clusters();
    const node = await join();
    await runningSinceYesterday(pool, node.id);
    const { hour } = await hourOf(pool);
    for (const overlap of ['skip', 'allow', 'queue_one'] as const) {
      await createSchedule(pool, { id: overlap, cron: '0 * * * *', overlap, task });
      await setNext(pool, overlap, hour - 2 * HOUR);
    }
    const first = await fireDue(pool, node.id);
    const ticks = [hour - 2 * HOUR, hour - HOUR, hour];
    expect(of(first, 'skip')).toEqual({ fired: [ticks[0]], skipped: [ticks[1], ticks[2]].map((t) => [t, 'overlap']) });
    expect(of(first, 'allow')).toEqual({ fired: ticks, skipped: [] });
    // 11:00 fired; 12:00 was held back, then replaced by 13:00 (and recorded as skipped).
    expect(of(first, 'queue_one')).toEqual({ fired: [ticks[0]], skipped: [[ticks[1], 'overlap']] });
    const firstTask = first.fired.find((f) => f.scheduleId === 'queue_one')!.taskId;
    expect(await stored(pool, 'queue_one')).toMatchObject({ pending: hour, fired: 1, skipped: 1, next: hour + HOUR, last_task_id: firstTask });
    // Its task is still queued: nothing more fires.
    expect(await fireDue(pool, node.id)).toEqual({ fired: [], skipped: [], unusable: [] });
    await cancelTask(pool, firstTask, 'done with it');
    const pending = await fireDue(pool, node.id);
    expect(pending.fired).toEqual([{ scheduleId: 'queue_one', tick: hour, taskId: expect.any(String), created: true }]);
    expect((await pool.query('SELECT idempotency_key FROM troupe_tasks WHERE id = $1', [pending.fired[0]!.taskId])).rows[0].idempotency_key).toBe(`schedule:queue_one:${tickIso(hour)}`);
    expect(await stored(pool, 'queue_one')).toMatchObject({ pending: null, fired: 2, skipped: 1, next: hour + HOUR, last_task_id: pending.fired[0]!.taskId });
    expect(await story(pool, 'queue_one')).toEqual([
      [ticks[0], 'fired'],
      [ticks[1], 'overlap'],
      [hour, 'fired'],
    ]);
    expect(await fireDue(pool, node.id)).toEqual({ fired: [], skipped: [], unusable: [] });
  });

  it('decides each tick against the last run as it was at the tick, fires a held tick as its run settled, even while paused', async () => {
    const { pool, join } = await clusters();
    const node = await join();
    await runningSinceYesterday(pool, node.id);
    const { hour } = await hourOf(pool);
    // The last run settled at 10:30, between the 10:00 and 11:00 ticks (hours before this one).
    await submitTasks(pool, [{ id: 'last-run', agent: 'a' }]);
    await cancelTask(pool, 'last-run', 'settled');
    await pool.query(`UPDATE troupe_tasks SET settled_at = to_timestamp($1::float8 / 1000) WHERE id = 'last-run'`, [hour - 1.5 * HOUR]);
    const seed = (id: string, next: number, pending: number | null) =>
      pool.query(`UPDATE troupe_schedules SET last_task_id = 'last-run', next_run_at = to_timestamp($2::float8 / 1000), pending_tick = to_timestamp($3::float8 / 1000) WHERE id = $1`, [id, next, pending]);
    await createSchedule(pool, { id: 'held', cron: '0 * * * *', task, overlap: 'queue_one' });
    await seed('held', hour - HOUR, hour - 2 * HOUR);
    await createSchedule(pool, { id: 'skipper', cron: '0 * * * *', task });
    await seed('skipper', hour - 2 * HOUR, null);
    const paused = await createSchedule(pool, { id: 'paused', cron: '0 * * * *', task, overlap: 'queue_one', paused: true });
    await seed('paused', paused.nextRunAt, hour - 3 * HOUR);
    const result = await fireDue(pool, node.id);
    // The held 10:00 tick fired as the run settled at 10:30; 11:00 came while its task was queued, and 12:00 replaced it.
    expect(of(result, 'held')).toEqual({ fired: [hour - 2 * HOUR], skipped: [[hour - HOUR, 'overlap']] });
    expect(await stored(pool, 'held')).toMatchObject({ pending: hour, next: hour + HOUR });
    // 10:00 came while the run went on; 11:00 found it settled and fired; 12:00 overlapped that one.
    expect(of(result, 'skipper')).toEqual({ fired: [hour - HOUR], skipped: [[hour - 2 * HOUR, 'overlap'], [hour, 'overlap']] });
    // As on LMDB, a held tick fires when its run settles, paused or not; the paused schedule's own ticks wait.
    expect(of(result, 'paused')).toEqual({ fired: [hour - 3 * HOUR], skipped: [] });
    expect(await stored(pool, 'paused')).toMatchObject({ pending: null, paused: true, next: paused.nextRunAt, fired: 1 });
  });

  it('never fires a tick twice while three nodes fire queue_one schedules and their tasks settle', async () => {
    const { pool, join, otherPool } = await clusters({ max: 8 });
    const schedules = [
      { id: 'q-1s', cron: '* * * * * *' },
      { id: 'q-2s', cron: '*/2 * * * * *' },
    ];
    const starts = new Map<string, number>();
    for (const s of schedules) {
      const created = await createSchedule(pool, { id: s.id, cron: s.cron, task: { agent: 'a', input: { from: s.id } }, overlap: 'queue_one', catchUp: 'all' });
      await pool.query(`UPDATE troupe_schedules SET next_run_at = next_run_at - interval '90 seconds' WHERE id = $1`, [s.id]);
      starts.set(s.id, created.nextRunAt - 90_000);
    }
    const results: FireResult[] = [];
    const firedBy = [0, 0, 0];
    let firing = 3;
    const node = async (on: pg.Pool, k: number) => {
      const me = await join();
      for (let call = 0; call < 30; call++) {
        const result = await fireDue(on, me.id, { maxTicks: 5, limit: 1 });
        results.push(result);
        firedBy[k]! += result.fired.length;
        // At most one task of a schedule is ever waiting or running.
        const open = await pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM troupe_tasks WHERE state NOT IN ('done', 'failed', 'dropped', 'cancelled') GROUP BY input->>'from'`);
        expect(open.rows.every((r) => r.n <= 1)).toBe(true);
      }
      firing--;
    };
    // Settles (cancels) whatever task is queued, again and again, while the nodes fire.
    const settler = async () => {
      while (firing > 0) {
        const { rows } = await pool.query<{ id: string }>(`SELECT id FROM troupe_tasks WHERE state = 'queued'`);
        for (const { id } of rows) await cancelTask(pool, id, 'settled').catch(() => undefined);
        await new Promise((resolve) => setImmediate(resolve));
      }
    };
    await Promise.all([node(pool, 0), node(otherPool(), 1), node(otherPool(), 2), settler()]);
    const fired = results.flatMap((r) => r.fired);
    // Held ticks fired after settles, ticks were replaced, and the nodes shared the work.
    expect(fired.length).toBeGreaterThan(2 * schedules.length);
    expect(results.flatMap((r) => r.skipped).length).toBeGreaterThan(0);
    expect(firedBy.filter((n) => n > 0).length).toBeGreaterThanOrEqual(2);
    // No node ever found a tick's task submitted already.
    expect(fired.filter((f) => !f.created)).toEqual([]);
    for (const s of schedules) {
      const row = await stored(pool, s.id);
      const ticks = compileCron(s.cron).between(starts.get(s.id)! - 1, row.next - 1, 1_000);
      // Every tick up to the stored next one fired, or was skipped, or is the one held: once.
      const accounted = [...(await story(pool, s.id)).map(([tick]) => tick as number), ...(row.pending === null ? [] : [row.pending])];
      expect(accounted.sort((a, b) => a - b)).toEqual(ticks);
      const tasks = (await pool.query<{ key: string }>(`SELECT idempotency_key AS key FROM troupe_tasks WHERE input->>'from' = $1`, [s.id])).rows.map((r) => r.key);
      expect(tasks.length).toBe(row.fired);
      expect(new Set(tasks).size).toBe(tasks.length);
      expect(row.skipped).toBe(accounted.length - row.fired - (row.pending === null ? 0 : 1));
    }
  }, 60_000);

  it('updates a schedule as the LMDB runtime does, and refuses a bad update writing nothing', async () => {
    const { pool } = await clusters();
    const created = await createSchedule(pool, { id: 'nightly', cron: '0 3 * * *', tz: 'Europe/Berlin', task });
    await pool.query(`UPDATE troupe_schedules SET fired = 4, pending_tick = now() WHERE id = 'nightly'`);
    // Neither cron nor zone changed: the next tick stays.
    const kept = await updateSchedule(pool, 'nightly', { task: { agent: 'b', input: 2 }, overlap: 'queue_one', catchUp: 'once', catchUpWindowMs: 60_000 });
    expect(kept).toMatchObject({ nextRunAt: created.nextRunAt, task: { agent: 'b', input: 2 }, overlap: 'queue_one', catchUp: 'once', catchUpWindowMs: 60_000, fired: 4, pendingTick: expect.any(Number) });
    // A field given as undefined goes back to its default; a new zone moves the next tick.
    const utc = await updateSchedule(pool, 'nightly', { tz: undefined, catchUp: undefined });
    expect(utc).toMatchObject({ tz: 'UTC', catchUp: 'skip', nextRunAt: compileCron('0 3 * * *').next(await dbNow(pool) - 1_000) });
    const paused = await updateSchedule(pool, 'nightly', { paused: true });
    expect(paused).toMatchObject({ paused: true, nextRunAt: utc.nextRunAt });
    const dump = async () => [(await pool.query('SELECT * FROM troupe_schedules')).rows, (await pool.query('SELECT * FROM troupe_events')).rows];
    const before = await dump();
    const refused: Array<[string, () => Promise<unknown>]> = [
      ['NOT_FOUND', () => updateSchedule(pool, 'nobody', { paused: true })],
      ['NOT_FOUND', () => updateSchedule(pool, 'bad id!', { paused: true })],
      ['INVALID_INPUT', () => updateSchedule(pool, '', { paused: true })],
      ['INVALID_INPUT', () => updateSchedule(pool, 'nightly', { id: 'other' } as never)],
      ['INVALID_INPUT', () => updateSchedule(pool, 'nightly', { nextRunAt: 5 } as never)],
      ['INVALID_INPUT', () => updateSchedule(pool, 'nightly', null as never)],
      ['INVALID_CRON', () => updateSchedule(pool, 'nightly', { cron: 'nope' })],
      ['INVALID_TIMEZONE', () => updateSchedule(pool, 'nightly', { tz: 'Mars/Olympus', cron: 'nope' })],
      ['INVALID_INPUT', () => updateSchedule(pool, 'nightly', { task: { agent: '' } })],
      ['INVALID_INPUT', () => updateSchedule(pool, 'nightly', { overlap: 'sometimes' as never })],
      ['INVALID_INPUT', () => updateSchedule(pool, 'nightly', { catchUp: 'some' as never })],
      ['INVALID_INPUT', () => updateSchedule(pool, 'nightly', { catchUpWindowMs: -1 })],
      ['INVALID_INPUT', () => updateSchedule(pool, 'nightly', { paused: 'yes' as never })],
      ['INVALID_INPUT', () => updateSchedule(pool, 'nightly', () => ({ bogus: 1 }) as never)],
    ];
    for (const [i, [code, call]] of refused.entries()) expect({ i, ...(await rejection(call())) }).toMatchObject({ i, code });
    expect(await dump()).toEqual(before);
    // Resumed by an update: from the first tick after now.
    const resumed = await updateSchedule(pool, 'nightly', { paused: false });
    expect(resumed.nextRunAt).toBe(compileCron('0 3 * * *').next(await dbNow(pool) - 1_000));
  });
});
