/**
 * Cron schedules of the PostgreSQL cluster (issue #15): each tick fires exactly once while three
 * nodes call fireDue at once, again and again; the overlap policies skip and allow as fire.ts
 * means them; paused schedules fire nothing; a schedule whose tasks `maxQueued` has no room for
 * skips its ticks, and submits are admitted on either of admission's locks; bad specs are refused
 * and store nothing.
 */
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { compileCron, tickIso } from '../../src/scheduler/cron.js';
import { readEvents } from '../../src/store/postgres/events.js';
import { checkTasks, claimTasks, submitTasks } from '../../src/store/postgres/queue.js';
import { fireDue, type FireResult } from '../../src/store/postgres/schedule-fire.js';
import { createSchedule, setSchedulePaused } from '../../src/store/postgres/schedules.js';
import { submitAndRead } from '../../src/store/postgres/tasks.js';
import { settleAttempts } from '../../src/store/postgres/settle.js';
import { rejection, scratchClusters } from '../helpers.js';

const clusters = scratchClusters();

/** The database's clock passes for a schedule: its stored tick moves `seconds` into the past. */
const age = (pool: pg.Pool, id: string, seconds: number) => pool.query(`UPDATE troupe_schedules SET next_run_at = next_run_at - $2 * interval '1 second' WHERE id = $1`, [id, seconds]);
const stored = async (pool: pg.Pool, id: string) =>
  (await pool.query("SELECT (extract(epoch FROM next_run_at) * 1000)::float8 AS next, fired::int, skipped::int, last_task_id FROM troupe_schedules WHERE id = $1", [id])).rows[0];
const firedEvents = async (pool: pg.Pool) => (await readEvents(pool, '', 1_000_000)).filter((e) => e.type === 'schedule.fired');

describe('cron schedules of the PostgreSQL cluster', () => {
  it('fires each tick exactly once while three nodes call fireDue at once, again and again', async () => {
    const { pool, join, otherPool } = await clusters({ max: 8 });
    const schedules = [
      { id: 'every-second', cron: '* * * * * *', everyS: 1 },
      { id: 'every-2s', cron: '*/2 * * * * *', everyS: 2 },
      { id: 'every-3s-berlin', cron: '*/3 * * * * *', tz: 'Europe/Berlin', everyS: 3 },
    ];
    const starts = new Map<string, number>();
    for (const s of schedules) {
      const created = await createSchedule(pool, { id: s.id, cron: s.cron, ...(s.tz ? { tz: s.tz } : {}), task: { agent: 'a', input: { from: s.id } }, overlap: 'allow', catchUp: 'all' });
      // Two minutes of ticks are due at once: 120, 60 and 40 of them.
      await age(pool, s.id, 120);
      starts.set(s.id, created.nextRunAt - 120_000);
    }
    const results: FireResult[] = [];
    const firedBy: number[] = [];
    // Each call looks at no more than 7 ticks of a schedule, so catching up takes many calls, from all nodes.
    const node = async (on: pg.Pool, k: number) => {
      const me = await join();
      firedBy[k] = 0;
      for (let call = 0; call < 40; call++) {
        const result = await fireDue(on, me.id, { maxTicks: 7, limit: 2 });
        results.push(result);
        firedBy[k] += result.fired.length;
      }
    };
    await Promise.all([node(pool, 0), node(otherPool(), 1), node(otherPool(), 2)]);
    // The nodes shared the work: at least two of them fired ticks.
    expect(firedBy.filter((n) => n > 0).length).toBeGreaterThanOrEqual(2);
    const fired = results.flatMap((r) => r.fired);
    expect(results.flatMap((r) => r.skipped)).toEqual([]);
    // No node ever found a tick's task submitted already: no tick was fired twice.
    expect(fired.filter((f) => !f.created)).toEqual([]);
    for (const s of schedules) {
      const cron = compileCron(s.cron, s.tz);
      const row = await stored(pool, s.id);
      // Every tick from the first due one up to the stored next one fired, once.
      const ticks = cron.between(starts.get(s.id)! - 1, row.next - 1, 1_000);
      expect(ticks.length).toBeGreaterThanOrEqual(120 / s.everyS);
      expect(fired.filter((f) => f.scheduleId === s.id).map((f) => f.tick).sort((a, b) => a - b)).toEqual(ticks);
      expect(row.fired).toBe(ticks.length);
      // One task per tick, under the tick's key.
      const tasks = (await pool.query<{ key: string; n: number }>("SELECT idempotency_key AS key, count(*)::int AS n FROM troupe_tasks WHERE input->>'from' = $1 GROUP BY 1 ORDER BY 1", [s.id])).rows;
      expect(tasks).toEqual(ticks.map((t) => ({ key: `schedule:${s.id}:${tickIso(t)}`, n: 1 })));
      expect(row.last_task_id).toBe(fired.find((f) => f.scheduleId === s.id && f.tick === ticks.at(-1))!.taskId);
    }
    // One schedule.fired per tick, naming its task.
    const events = await firedEvents(pool);
    expect(events).toHaveLength(fired.length);
    expect(new Set(events.map((e) => `${(e.data as { scheduleId: string }).scheduleId}@${(e.data as { tick: number }).tick}`)).size).toBe(fired.length);
    for (const e of events) expect(e.taskId).toBe(fired.find((f) => f.scheduleId === (e.data as { scheduleId: string }).scheduleId && f.tick === (e.data as { tick: number }).tick)!.taskId);
  }, 60_000);

  it('skips a tick while the last task runs with overlap skip, fires every tick with allow, and records both', async () => {
    const { pool, join } = await clusters();
    const node = await join();
    await createSchedule(pool, { id: 'skip', cron: '* * * * * *', task: { agent: 'a' }, catchUp: 'all' });
    await createSchedule(pool, { id: 'allow', cron: '* * * * * *', task: { agent: 'b' }, overlap: 'allow', catchUp: 'all' });
    await age(pool, 'skip', 5);
    await age(pool, 'allow', 5);
    const first = await fireDue(pool, node.id);
    // Five seconds back: 5 or 6 ticks are due (the sixth when a second turns during the call).
    const skipFired = first.fired.filter((f) => f.scheduleId === 'skip');
    const skipSkipped = first.skipped.filter((s) => s.scheduleId === 'skip');
    const allowFired = first.fired.filter((f) => f.scheduleId === 'allow');
    expect(skipFired).toHaveLength(1);
    expect(skipSkipped.length).toBeGreaterThanOrEqual(4);
    expect(skipSkipped.every((s) => s.reason === 'overlap' && s.tick > skipFired[0]!.tick)).toBe(true);
    expect(allowFired.length).toBeGreaterThanOrEqual(5);
    expect(first.skipped.filter((s) => s.scheduleId === 'allow')).toEqual([]);
    expect(await stored(pool, 'skip')).toMatchObject({ fired: 1, skipped: skipSkipped.length, last_task_id: skipFired[0]!.taskId });
    // The task is still queued: the next due ticks are skipped too.
    await age(pool, 'skip', 3);
    const again = await fireDue(pool, node.id);
    expect(again.fired.filter((f) => f.scheduleId === 'skip')).toEqual([]);
    expect(again.skipped.filter((s) => s.scheduleId === 'skip').length).toBeGreaterThanOrEqual(2);
    // Once it settles, the next tick fires.
    const [claimed] = await claimTasks(pool, node.id, 'a', 1, 60_000);
    expect(claimed!.id).toBe(skipFired[0]!.taskId);
    await settleAttempts(pool, [{ taskId: claimed!.id, token: claimed!.token, exit: 'success' }]);
    // The clock passes for the settle too: a tick is decided against the run as it was at the tick.
    await pool.query(`UPDATE troupe_tasks SET settled_at = settled_at - interval '10 seconds' WHERE id = $1`, [claimed!.id]);
    await age(pool, 'skip', 3);
    const after = await fireDue(pool, node.id);
    expect(after.fired.filter((f) => f.scheduleId === 'skip')).toHaveLength(1);
    const events = (await firedEvents(pool)).filter((e) => (e.data as { scheduleId: string }).scheduleId === 'skip');
    const skipped = [...skipSkipped, ...again.skipped.filter((s) => s.scheduleId === 'skip'), ...after.skipped.filter((s) => s.scheduleId === 'skip')];
    expect(events.filter((e) => (e.data as { skipped?: string }).skipped === 'overlap')).toHaveLength(skipped.length);
    expect(events.filter((e) => e.taskId !== undefined)).toHaveLength(2);
    expect(await stored(pool, 'skip')).toMatchObject({ fired: 2, skipped: skipped.length });
  });

  it('fires nothing of a paused schedule, resumes from the next tick after now, and skips ticks whose template no longer validates', async () => {
    const { pool, join } = await clusters();
    const node = await join();
    await createSchedule(pool, { id: 'p', cron: '* * * * * *', task: { agent: 'a' }, paused: true, catchUp: 'all' });
    await age(pool, 'p', 30);
    expect(await fireDue(pool, node.id)).toEqual({ fired: [], skipped: [], unusable: [] });
    const resumed = await setSchedulePaused(pool, 'p', false);
    const now = Number((await pool.query('SELECT (extract(epoch FROM now()) * 1000)::float8 AS now')).rows[0].now);
    expect(resumed.nextRunAt).toBeGreaterThan(now - 1_000);
    expect(resumed.nextRunAt).toBeLessThanOrEqual(now + 1_000);
    expect(await setSchedulePaused(pool, 'p', true)).toMatchObject({ paused: true, nextRunAt: resumed.nextRunAt });
    await setSchedulePaused(pool, 'p', false);
    await pool.query(`UPDATE troupe_schedules SET task = '{"agent": ""}'::jsonb`);
    await age(pool, 'p', 2);
    const result = await fireDue(pool, node.id);
    expect(result.fired).toEqual([]);
    expect(result.skipped.length).toBeGreaterThanOrEqual(2);
    // As on LMDB: the first tick's task could not be made; the ticks after it overlapped it; errors are recorded last.
    expect(result.skipped.map((s) => s.reason)).toEqual([...result.skipped.slice(1).map(() => 'overlap'), 'error']);
    expect(result.skipped.at(-1)).toMatchObject({ reason: 'error', error: expect.stringContaining('agent') });
    expect((await stored(pool, 'p')).next).toBeGreaterThan(Math.max(...result.skipped.map((s) => s.tick)));
    expect((await pool.query('SELECT count(*)::int AS n FROM troupe_tasks')).rows[0].n).toBe(0);
  });

  it('admits against maxQueued: the schedules of a fire in order (one with no room skips its ticks, and advances), submits on either lock', async () => {
    const { pool, join } = await clusters();
    const node = await join();
    await submitTasks(pool, [{ id: 'before', agent: 'a' }]);
    for (const id of ['s1', 's2']) {
      await createSchedule(pool, { id, cron: '* * * * * *', task: { agent: 'a' }, overlap: 'skip', catchUp: 'all' });
      await age(pool, id, 3);
    }
    const result = await fireDue(pool, node.id, { maxQueued: 2 });
    // s1 (first in the fire's order) takes the last place; s2's tick would make 3.
    expect(result.fired.map((f) => f.scheduleId)).toEqual(['s1']);
    const full = result.skipped.filter((s) => s.scheduleId === 's2' && s.reason === 'error');
    expect(full).toHaveLength(1);
    expect(full[0]!.error).toBe('admission is full: 2 tasks queued, maxQueued is 2');
    const s2 = await stored(pool, 's2');
    expect(s2).toMatchObject({ fired: 0, last_task_id: null });
    expect(s2.next).toBeGreaterThan(full[0]!.tick);
    expect((await pool.query('SELECT count(*)::int AS n FROM troupe_tasks')).rows[0].n).toBe(2);
    expect((await firedEvents(pool)).filter((e) => e.data && (e.data as { error?: string }).error === full[0]!.error)).toHaveLength(1);
    // Submits (admission.ts): room for one beyond the 2 queued on the shared lock, which keeps 10
    // for each other session the server takes; the next on the exclusive one; then full.
    const sessions = Number((await pool.query("SELECT current_setting('max_connections') AS n")).rows[0].n);
    const max = 2 + (sessions - 1) * 10 + 1;
    const submit = (ids: string[]) => submitAndRead(pool, checkTasks(ids.map((id) => ({ id, agent: 'a' }))), undefined, max);
    await submit(['shared']);
    await submit(['exclusive']);
    await submitTasks(pool, Array.from({ length: max - 4 }, (_, i) => ({ id: `fill${i}`, agent: 'a' })));
    const message = `admission is full: ${max} tasks queued, maxQueued is ${max}`;
    expect(await rejection(submit(['over']))).toMatchObject({ code: 'AT_CAPACITY', message });
    expect(await rejection(submit(Array.from({ length: 11 }, (_, i) => `batch${i}`)))).toMatchObject({ code: 'AT_CAPACITY', message });
    expect((await pool.query("SELECT count(*)::int AS n FROM troupe_tasks WHERE state = 'queued'")).rows[0].n).toBe(max);
  });

  it('rejects bad specs and arguments and stores nothing', async () => {
    const { pool, join } = await clusters();
    const node = await join();
    await createSchedule(pool, { id: 'taken', cron: '0 3 * * *', task: { agent: 'a' } });
    const dump = async () => [(await pool.query('SELECT * FROM troupe_schedules ORDER BY id')).rows, (await pool.query('SELECT * FROM troupe_tasks')).rows, (await pool.query('SELECT * FROM troupe_events')).rows];
    const before = await dump();
    const task = { agent: 'a' };
    const refused: Array<[string, () => Promise<unknown>]> = [
      ['INVALID_INPUT', () => createSchedule(pool, null as never)],
      ['INVALID_INPUT', () => createSchedule(pool, { id: 'bad id', cron: '* * * * *', task })],
      ['INVALID_INPUT', () => createSchedule(pool, { id: 'taken', cron: '* * * * *', task })],
      ['INVALID_INPUT', () => createSchedule(pool, { id: 'x', cron: '* * * * *', task: { agent: '' } })],
      ['INVALID_INPUT', () => createSchedule(pool, { id: 'x', cron: '* * * * *', task: { agent: 'a', input: { f: () => 1 } } })],
      ['INVALID_INPUT', () => createSchedule(pool, { id: 'x', cron: '* * * * *', task: { agent: 'a', idempotencyKey: 'k' } as never })],
      ['INVALID_INPUT', () => createSchedule(pool, { id: 'x', cron: '* * * * *', task, overlap: 'sometimes' as never })],
      ['INVALID_INPUT', () => createSchedule(pool, { id: 'x', cron: '* * * * *', task, paused: 'yes' as never })],
      ['INVALID_INPUT', () => createSchedule(pool, { id: 'x', cron: '* * * * *', task, catchUp: 'some' as never })],
      ['INVALID_INPUT', () => createSchedule(pool, { id: 'x', cron: '* * * * *', task, catchUpWindowMs: -1 })],
      ['INVALID_INPUT', () => createSchedule(pool, { id: 'x', cron: '* * * * *', task, catchUpWindowMs: 1.5 })],
      ['INVALID_INPUT', () => createSchedule(pool, { id: 'x', cron: '* * * * *', task, extra: 1 } as never)],
      ['INVALID_CRON', () => createSchedule(pool, { id: 'x', cron: '61 * * * *', task })],
      ['INVALID_TIMEZONE', () => createSchedule(pool, { id: 'x', cron: '* * * * *', tz: 'Mars/Olympus', task })],
      ['INVALID_INPUT', () => setSchedulePaused(pool, 'taken', 'yes' as never)],
      ['NOT_FOUND', () => setSchedulePaused(pool, 'nobody', true)],
      ['INVALID_INPUT', () => fireDue(pool, 'not-a-node')],
      ['INVALID_INPUT', () => fireDue(pool, node.id, { limit: 0 })],
      ['INVALID_INPUT', () => fireDue(pool, node.id, { maxTicks: 1.5 })],
      ['INVALID_INPUT', () => fireDue(pool, node.id, { maxQueued: 0 })],
      ['ILLEGAL_STATE', () => fireDue(pool, '00000000-0000-4000-8000-000000000000')],
    ];
    for (const [i, [code, call]] of refused.entries()) expect({ i, ...(await rejection(call())) }).toMatchObject({ i, code });
    expect(await dump()).toEqual(before);
  });
});
