/**
 * Retention on the runtime on PostgreSQL, as on LMDB for the runtime's rules: a background sweep
 * every `sweepMs` removes settled tasks past their state's age (`get` is NOT_FOUND after) and the
 * events older than `eventsMs` (`events({ after })` from before them is CURSOR_EXPIRED, `events()`
 * starts at the oldest kept); `stats().retention` counts the sweeps, and those skipped while
 * another runtime held the sweep's lock; bad options are refused as on LMDB, a rule with a count
 * is refused; `retention: false` sweeps nothing. Tasks and events are aged on the database's
 * clock, and the tests wait for sweeps, not for time.
 */
import { describe, expect, it, vi } from 'vitest';
import { builtinAgent, type Runtime, type RuntimeEvent } from 'troupe';
import pg from 'pg';
import { resolveOptions } from '../../src/options.js';
import { insertEvents } from '../../src/store/postgres/events.js';
import { RETENTION_LOCK } from '../../src/store/postgres/retention.js';
import { rejection, scratchPools } from '../helpers.js';
import { pgRuntimes, thrown } from '../pg-runtime.js';
import { nextEvent } from './contract.js';

const pools = scratchPools();
const runtime = pgRuntimes();
const HOUR = 3_600_000;
const SWEPT = { timeout: 20_000, interval: 20 };

/** Events the log holds now, from its start. */
async function replay(rt: Runtime): Promise<RuntimeEvent[]> {
  const events: RuntimeEvent[] = [];
  const stop = new AbortController();
  const tail = await rt.submit({ agent: 'echo', input: 'tail' });
  await rt.wait(tail.id);
  for await (const event of rt.events({ signal: stop.signal })) {
    events.push(event);
    if (event.taskId === tail.id && event.type === 'task.done') stop.abort();
  }
  return events;
}

describe('retention on PostgreSQL', () => {
  it('removes settled tasks past their age and old events in the background; old cursors expire', async () => {
    const { url, pool } = await pools({ max: 2 });
    const rt = await runtime(url, { agents: [builtinAgent('echo')], retention: { done: HOUR, eventsMs: HOUR, sweepMs: 20 } });
    expect(rt.stats().retention).toMatchObject({ sweeps: 0, removed: 0, eventsRemoved: 0 });
    const old = await rt.submit({ agent: 'echo', input: 'old' });
    const young = await rt.submit({ agent: 'echo', input: 'young' });
    for (const task of [old, young]) expect((await rt.wait(task.id)).state).toBe('done');
    const { cursor: oldCursor, seq: oldSeq } = (await replay(rt))[0]!;
    // An hour and more back, on the database's clock: the old task's settle, and every event so far.
    await pool.query(`UPDATE troupe_tasks SET settled_at = now() - interval '2 hours' WHERE id = $1`, [old.id]);
    await pool.query(`UPDATE troupe_event_batches SET at = now() - interval '2 hours'`);
    const swept = rt.stats().retention!.sweeps;
    await vi.waitFor(() => expect(rt.stats().retention!.sweeps).toBeGreaterThan(swept + 1), SWEPT);

    expect(await rejection(rt.get(old.id))).toMatchObject({ code: 'NOT_FOUND' });
    expect(await rt.get(young.id)).toMatchObject({ state: 'done' });
    expect((await pool.query('SELECT count(*)::int AS n FROM troupe_attempts WHERE task_id = $1', [old.id])).rows[0].n).toBe(0);
    expect(rt.stats().retention).toMatchObject({ removed: 1, eventsRemoved: expect.any(Number), lastSweepAt: expect.any(Number), nextSweepAt: expect.any(Number) });
    expect(rt.stats().retention!.eventsRemoved).toBeGreaterThan(0);

    const expired = await rejection(rt.events({ after: oldCursor }).next());
    expect(expired).toMatchObject({ code: 'CURSOR_EXPIRED', message: expect.stringContaining('the oldest cursor still available is') });
    expect(await rejection(rt.events({ after: oldSeq }).next())).toMatchObject({ code: 'CURSOR_EXPIRED' });
    // Without `after`: from the oldest event kept, none of the removed ones.
    const kept = await replay(rt);
    expect(kept[0]!.cursor > oldCursor).toBe(true);
    expect(kept.some((e) => e.taskId === old.id || e.taskId === young.id)).toBe(false);
  });

  it('ends a live events() iteration with CURSOR_EXPIRED when retention removed events the feed had not read yet, and feeds on after them', async () => {
    const { url, pool } = await pools({ max: 2 });
    const rt = await runtime(url, { agents: [builtinAgent('echo')], retention: false });
    const first = await rt.submit({ agent: 'echo', input: 'first' });
    const live = rt.events();
    let seen: RuntimeEvent;
    do seen = (await live.next()).value as RuntimeEvent;
    while (!(seen.taskId === first.id && seen.type === 'task.done'));
    const heard: RuntimeEvent[] = [];
    rt.on('*', (event) => heard.push(event));
    // While the iteration waits there, an event commits and retention removes it before the feed
    // reads it: one transaction appends it, removes its batch and moves the removal point past it,
    // as the sweep's statement does (so no read can see it: the feed is behind the removal).
    const client = await pool.connect();
    let removed: { xid: string; last_seq: string };
    try {
      await client.query('BEGIN');
      await client.query(insertEvents(`SELECT * FROM (VALUES ('runtime.frozen', NULL, NULL, '{"reason":"removed unread"}'::json)) v`));
      removed = (await client.query<{ xid: string; last_seq: string }>('DELETE FROM troupe_event_batches WHERE xid = pg_current_xact_id() RETURNING xid::text, last_seq::text')).rows[0]!;
      await client.query('UPDATE troupe_control SET events_removed_xid = $1::xid8, events_removed_seq = $2, events_removed_max_seq = greatest(events_removed_max_seq, $2) WHERE id = 1', [removed.xid, removed.last_seq]);
      await client.query('COMMIT');
    } finally {
      client.release();
    }
    const removedCursor = `${removed.xid.padStart(20, '0')}:${removed.last_seq.padStart(20, '0')}`;
    // The next events are read after the removal: the feed finds the gap first, then feeds on.
    const second = await rt.submit({ agent: 'echo', input: 'second' });
    await nextEvent(rt, 'task.done', second.id);
    expect(heard.map((e) => e.type)).not.toContain('runtime.frozen');
    expect(await rejection(live.next())).toMatchObject({ code: 'CURSOR_EXPIRED', message: `events: cursor ${seen.cursor} is older than what the event log keeps (retention removed the events through ${removedCursor}); the oldest cursor still available is ${removedCursor}, or omit after to read from the oldest event kept` });
    // A replay from there is refused alike; waits and new iterations go on.
    expect(await rejection(rt.events({ after: seen.cursor }).next())).toMatchObject({ code: 'CURSOR_EXPIRED' });
    expect((await rt.wait(second.id)).state).toBe('done');
    const third = await rt.submit({ agent: 'echo', input: 'third' });
    const after = rt.events({ after: removedCursor, taskId: third.id });
    expect(((await after.next()).value as RuntimeEvent).type).toBe('task.queued');
    await after.return(undefined);
  });

  it('skips its sweeps while another runtime of the cluster sweeps (holds the lock), and sweeps again after', async () => {
    const { url } = await pools({ max: 1 });
    const rt = await runtime(url, { retention: { sweepMs: 20 } });
    const other = new pg.Client({ connectionString: url });
    await other.connect();
    try {
      await other.query('BEGIN');
      await other.query('SELECT pg_advisory_xact_lock($1)', [RETENTION_LOCK]);
      // A sweep under way when the lock was taken may end with what it removed (a sweep); every one after it skips.
      await vi.waitFor(() => expect(rt.stats().retention!.skipped).toBeGreaterThan(0), SWEPT);
      const before = rt.stats().retention!;
      await vi.waitFor(() => expect(rt.stats().retention!.skipped).toBeGreaterThan(before.skipped! + 2), SWEPT);
      expect(rt.stats().retention!.sweeps).toBe(before.sweeps);
      await other.query('COMMIT');
    } finally {
      await other.end();
    }
    const swept = rt.stats().retention!.sweeps;
    await vi.waitFor(() => expect(rt.stats().retention!.sweeps).toBeGreaterThan(swept), SWEPT);
  });

  it('refuses bad retention options as LMDB does, and a rule with a count (not applied on PostgreSQL yet)', async () => {
    const { url } = await pools({ max: 1 });
    for (const retention of [{ done: -1 }, { sweepMs: 0 }, { finished: 1 }, 'weekly', { failed: { ageMs: 1, keep: 2 } }]) {
      const lmdb = thrown(() => resolveOptions({ retention } as never, {}));
      expect(await rejection(runtime(url, { retention } as never))).toMatchObject({ code: lmdb.code, message: lmdb.message });
      expect(lmdb.code).toBe('INVALID_OPTIONS');
    }
    expect(await rejection(runtime(url, { retention: { done: { ageMs: HOUR, count: 100 } } }))).toMatchObject({
      code: 'INVALID_OPTIONS',
      message: expect.stringContaining('options.retention.done.count is not supported with store.postgres yet'),
    });
    // Ages, and a count that does not limit, are taken.
    const rt = await runtime(url, { retention: { done: { ageMs: HOUR }, failed: { ageMs: HOUR, count: Infinity }, cancelled: Infinity } });
    expect(rt.stats().retention).toMatchObject({ sweeps: 0 });
  });

  it('sweeps nothing with retention: false', async () => {
    const off = await pools({ max: 2 });
    const on = await pools({ max: 1 });
    const rt = await runtime(off.url, { agents: [builtinAgent('echo')], retention: false });
    expect(rt.stats().retention).toBeNull();
    const task = await rt.submit({ agent: 'echo', input: 'kept' });
    await rt.wait(task.id);
    await off.pool.query(`UPDATE troupe_tasks SET settled_at = now() - interval '400 days'`);
    await off.pool.query(`UPDATE troupe_event_batches SET at = now() - interval '400 days'`);
    // A runtime that does sweep, on a database of its own, takes a few turns meanwhile.
    const sweeping = await runtime(on.url, { retention: { sweepMs: 20 } });
    await vi.waitFor(() => expect(sweeping.stats().retention!.sweeps).toBeGreaterThan(3), SWEPT);
    expect(await rt.get(task.id)).toMatchObject({ state: 'done' });
    expect((await off.pool.query('SELECT count(*)::int AS n FROM troupe_event_batches')).rows[0].n).toBeGreaterThan(0);
    expect(rt.stats().retention).toBeNull();
  });
});
