/**
 * `rt.schedules` of two runtimes on one PostgreSQL database: a `queue_one` schedule with ticks
 * due (the database's clock moved, not slept through) fires each tick once between them, holds the
 * latest behind its running task and fires it once that settles; an update on one runtime shows
 * on the other. Waits are for events, never for time.
 */
import { describe, expect, it, vi } from 'vitest';
import { builtinAgent, type RuntimeEvent } from 'troupe';
import { compileCron } from '../../src/scheduler/cron.js';
import { scratchPools } from '../helpers.js';
import { pgRuntimes } from '../pg-runtime.js';
import { heard } from './contract.js';

const pools = scratchPools();
const runtime = pgRuntimes();

describe('schedules of two runtimes on one database', () => {
  it('fire a queue_one schedule: each tick once, the latest held behind the running task and fired once it settles', async () => {
    const { url, pool } = await pools({ max: 2 });
    const agents = [builtinAgent('echo')];
    const a = await runtime(url, { agents });
    const b = await runtime(url, { agents });
    // Created paused, so that no tick fires before the clock is moved.
    const created = await a.schedules.create({ id: 'q', cron: '* * * * * *', overlap: 'queue_one', catchUp: 'all', task: { agent: 'echo', input: 'tick' }, paused: true });
    // Twenty ticks fall due at once: whichever runtime fires first fires the first, holds the rest
    // (each replacing the one before), and fires the one held once the first task is done.
    const first = created.nextRunAt - 20_000;
    const held = heard(a, (e) => e.type === 'schedule.fired' && e.taskId !== undefined && (e.data as { tick: number }).tick > first);
    await pool.query(`UPDATE troupe_schedules SET paused = false, next_run_at = next_run_at - interval '20 seconds' WHERE id = 'q'`);
    const pending = (await held) as RuntimeEvent<'schedule.fired'>;
    expect(pending.data.tick).toBeGreaterThanOrEqual(first + 19_000);
    await b.schedules.delete('q');
    const rows = (await pool.query<{ tick: number; skipped: string | null; task_id: string | null }>(
      `SELECT (data->>'tick')::float8 AS tick, data->>'skipped' AS skipped, task_id FROM troupe_events WHERE type = 'schedule.fired' ORDER BY seq`,
    )).rows;
    const ticks = rows.map((r) => r.tick);
    // Each tick once in the log: fired, or skipped as replaced; none twice.
    expect(new Set(ticks).size).toBe(ticks.length);
    expect(rows[0]).toMatchObject({ tick: first, skipped: null });
    expect(rows.filter((r) => r.tick < pending.data.tick && r.tick > first).every((r) => r.skipped === 'overlap')).toBe(true);
    const last = Math.max(...ticks);
    expect([...ticks].sort((x, y) => x - y)).toEqual(compileCron('* * * * * *').between(first - 1, last, 1_000));
    const tasks = (await pool.query<{ id: string; key: string }>(`SELECT id, idempotency_key AS key FROM troupe_tasks WHERE idempotency_key LIKE 'schedule:q:%'`)).rows;
    expect(tasks.map((t) => t.id).sort()).toEqual(rows.filter((r) => r.task_id !== null).map((r) => r.task_id!).sort());
    expect(await a.wait(pending.taskId!)).toMatchObject({ state: 'done', output: 'tick' });
  });

  it('an update on one runtime shows on the other', async () => {
    const { url } = await pools({ max: 2 });
    const agents = [builtinAgent('echo')];
    const a = await runtime(url, { agents });
    const b = await runtime(url, { agents });
    await a.schedules.create({ id: 'nightly', cron: '0 3 * * *', task: { agent: 'echo' } });
    await vi.waitFor(() => expect(b.schedules.get('nightly')).toMatchObject({ overlap: 'skip' }), { timeout: 5_000 });
    const updated = await b.schedules.update('nightly', { overlap: 'queue_one', catchUp: 'all', cron: '30 3 * * *' });
    expect(b.schedules.get('nightly')).toEqual(updated);
    await vi.waitFor(() => expect(a.schedules.get('nightly')).toEqual(updated), { timeout: 5_000 });
  });
});
