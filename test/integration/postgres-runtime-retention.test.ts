/**
 * Retention on the runtime on PostgreSQL, as on LMDB: a background sweep every `sweepMs` removes
 * settled tasks past their rule (`get` is NOT_FOUND after) and the events older than `eventsMs`
 * (`events({ after })` from before them is CURSOR_EXPIRED, `events()` starts at the oldest kept);
 * the rules are a task's own over its agent's over the runtime's, ages and counts, and one mixed
 * set of tasks loses exactly what an LMDB runtime with the same rules loses, swept by a runtime
 * that did not register the agent whose rule applies; `stats().retention` counts the sweeps, and
 * those skipped while another runtime held the sweep's lock; bad rules (runtime, agent, task) are
 * refused with LMDB's codes and messages, nothing stored; `retention: false` sweeps nothing.
 * Tasks and events are aged on the database's clock (the LMDB runtime's on a ManualClock), and the
 * tests wait for sweeps, not for time.
 */
import { describe, expect, it, vi } from 'vitest';
import { builtinAgent, createRuntime, ManualClock, type Runtime, type RuntimeEvent, type RuntimeOptions, type TaskSpec } from 'troupe';
import pg from 'pg';
import { resolveOptions } from '../../src/options.js';
import { insertEvents } from '../../src/store/postgres/events.js';
import { RETENTION_LOCK } from '../../src/store/postgres/retention.js';
import { rejection, scratchDirs, scratchPools } from '../helpers.js';
import { pgRuntimes, thrown } from '../pg-runtime.js';
import { nextEvent } from './contract.js';

const pools = scratchPools();
const runtime = pgRuntimes();
const dirs = scratchDirs();
const HOUR = 3_600_000;
const MIN = 60_000;
const SWEPT = { timeout: 20_000, interval: 20 };

/** The runtime's rules of the mixed case: done tasks an hour and the 3 newest per agent, failed ones two hours. */
const RULES = { done: { ageMs: HOUR, count: 3 }, failed: 2 * HOUR };
/** Its agents: `brief`'s own rule for done tasks (half an hour, no count) replaces the runtime's. */
const mixedAgents = (): NonNullable<RuntimeOptions['agents']> => [
  builtinAgent('echo'),
  builtinAgent('echo', { name: 'other' }),
  builtinAgent('echo', { name: 'brief', retention: { done: 30 * MIN } }),
  builtinAgent('fail', { retry: { maxAttempts: 1 } }),
];
/** Tasks of the mixed case, oldest settled first: name, agent, minutes since its settle, its own rule, and whether it stays. */
const MIXED: Array<[string, string, number, TaskSpec['retention'], boolean]> = [
  ['echo-300-own-for-good', 'echo', 300, { done: Infinity }, true],
  ['echo-200', 'echo', 200, undefined, false],
  ['fail-150', 'fail', 150, undefined, false],
  ['echo-100', 'echo', 100, undefined, false],
  ['other-90', 'other', 90, undefined, false],
  ['fail-90', 'fail', 90, undefined, true],
  ['fail-90-own-hour', 'fail', 90, { failed: HOUR }, false],
  // Beyond echo's 3 newest under the runtime's rule (20, 15 and 10), though younger than an hour.
  ['echo-50', 'echo', 50, undefined, false],
  ['brief-45', 'brief', 45, undefined, false],
  ['brief-45-own-hour', 'brief', 45, { done: HOUR }, true],
  ['echo-40', 'echo', 40, undefined, false],
  ['other-30', 'other', 30, undefined, true],
  // brief keeps 4: its rule has no count.
  ['brief-25', 'brief', 25, undefined, true],
  ['echo-20', 'echo', 20, undefined, true],
  ['brief-20', 'brief', 20, undefined, true],
  // A rule of its own for another state: it is counted under the runtime's.
  ['echo-15-own-failed', 'echo', 15, { failed: 1 }, true],
  ['echo-10', 'echo', 10, undefined, true],
  ['brief-10', 'brief', 10, undefined, true],
  ['echo-8-own-5-minutes', 'echo', 8, { done: 5 * MIN }, false],
  ['brief-5', 'brief', 5, undefined, true],
];
const specOf = ([name, agent, , retention]: (typeof MIXED)[number]): TaskSpec => ({ agent, input: agent === 'fail' ? { mode: 'result' } : name, labels: { name }, ...(retention ? { retention } : {}) });

/** Whether each task of `ids` is still stored. */
async function keptOf(rt: Runtime, ids: string[]): Promise<boolean[]> {
  return Promise.all(ids.map((id) => rt.get(id).then(() => true, (error: { code?: string }) => (expect(error.code).toBe('NOT_FOUND'), false))));
}

/** The mixed case on LMDB: each task settled at its minute on a ManualClock, then the sweep at the end. */
async function mixedOnLmdb(): Promise<{ kept: boolean[]; own: unknown[] }> {
  const clock = new ManualClock();
  const sweepAt = clock.now() + 400 * MIN;
  const rt = await createRuntime({ dataDir: dirs(), clock, logger: false, threads: 1, starvation: false, agents: mixedAgents(), retention: { ...RULES, sweepMs: 400 * MIN } });
  try {
    const ids: string[] = [];
    for (const entry of MIXED) {
      clock.advance(sweepAt - entry[2] * MIN - clock.now());
      const task = await rt.submit(specOf(entry));
      await rt.wait(task.id);
      ids.push(task.id);
    }
    const own = await Promise.all(ids.map(async (id) => (await rt.get(id)).retention));
    clock.advance(sweepAt - clock.now());
    await vi.waitFor(() => expect(rt.stats().retention!.sweeps).toBe(1), SWEPT);
    return { kept: await keptOf(rt, ids), own };
  } finally {
    await rt.close();
  }
}

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

  it('applies a task’s own rule over its agent’s over the runtime’s, ages and counts, as LMDB does, on a runtime that did not register the agent', async () => {
    const { url, pool } = await pools({ max: 2 });
    // This runtime runs the agents and registers brief's rule; it sweeps nothing itself.
    const runner = await runtime(url, { agents: mixedAgents(), retention: false });
    const ids: string[] = [];
    for (const entry of MIXED) ids.push((await runner.submit(specOf(entry))).id);
    for (const id of ids) await runner.wait(id);
    const own = await Promise.all(ids.map(async (id) => (await runner.get(id)).retention));
    for (const [i, entry] of MIXED.entries()) await pool.query(`UPDATE troupe_tasks SET settled_at = now() - $2 * interval '1 minute' WHERE id = $1`, [ids[i], entry[2]]);
    // The sweeping runtime runs no agent: brief's rule comes from its row.
    const sweeper = await runtime(url, { retention: { ...RULES, sweepMs: 20 } });
    expect(sweeper.agents.list()).toEqual([]);
    await vi.waitFor(() => expect(sweeper.stats().retention!.sweeps).toBeGreaterThan(1), SWEPT);

    const kept = await keptOf(runner, ids);
    expect(Object.fromEntries(MIXED.map(([name], i) => [name, kept[i]]))).toEqual(Object.fromEntries(MIXED.map(([name, , , , stays]) => [name, stays])));
    expect(sweeper.stats().retention!.removed).toBe(MIXED.filter((entry) => !entry[4]).length);
    const lmdb = await mixedOnLmdb();
    expect(kept).toEqual(lmdb.kept);
    expect(own).toEqual(lmdb.own);
    expect(own[0]).toEqual({ done: Infinity });
  });

  it('refuses bad rules with LMDB’s codes and messages, storing nothing: a task’s, an agent’s, the runtime’s', async () => {
    const { url, pool } = await pools({ max: 1 });
    const lmdb = await createRuntime({ dataDir: dirs(), logger: false, threads: 1, agents: [builtinAgent('echo')] });
    try {
      const rt = await runtime(url, { agents: [builtinAgent('echo')] });
      for (const retention of [{ done: { count: 1 } }, { done: -5 }, { running: 1 }, 7, { failed: 1.5 }]) {
        const expected = await rejection(lmdb.submit({ agent: 'echo', retention: retention as never }));
        expect(await rejection(rt.submit({ agent: 'echo', retention: retention as never }))).toMatchObject({ code: expected.code, message: expected.message });
        expect(expected.code).toBe('INVALID_INPUT');
      }
      expect((await rt.list()).tasks).toEqual([]);
      for (const retention of [{ queued: 1 }, { done: { ageMs: 1, keep: 2 } }, { done: { count: -1 } }, 'weekly']) {
        const agent = builtinAgent('echo', { name: 'bad', retention: retention as never });
        const expected = thrown(() => lmdb.agents.register(agent));
        expect(thrown(() => rt.agents.register(agent))).toMatchObject({ code: expected.code, message: expected.message });
        expect(expected.code).toBe('INVALID_OPTIONS');
        expect(await rejection(runtime(url, { agents: [agent] }))).toMatchObject({ code: expected.code, message: expected.message });
      }
      expect(rt.agents.list().map((a) => a.name)).toEqual(['echo']);
      // A schedule's task keeps its own, as LMDB's does.
      const task = { agent: 'echo', retention: { done: Infinity, failed: HOUR } };
      await lmdb.schedules.create({ id: 'kept', cron: '0 3 * * *', task });
      await rt.schedules.create({ id: 'kept', cron: '0 3 * * *', task });
      expect((await rt.schedules.get('kept'))!.task.retention).toEqual((await lmdb.schedules.get('kept'))!.task.retention);
      expect((await rt.schedules.get('kept'))!.task.retention).toEqual(task.retention);
      expect((await pool.query(`SELECT count(*)::int AS n FROM troupe_agents WHERE name = 'bad' OR retention IS NOT NULL`)).rows[0].n).toBe(0);
    } finally {
      await lmdb.close();
    }
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

  it('refuses bad retention options as LMDB does, and takes a rule with a count', async () => {
    const { url } = await pools({ max: 1 });
    for (const retention of [{ done: -1 }, { sweepMs: 0 }, { finished: 1 }, 'weekly', { failed: { ageMs: 1, keep: 2 } }, { done: { count: 1.5 } }]) {
      const lmdb = thrown(() => resolveOptions({ retention } as never, {}));
      expect(await rejection(runtime(url, { retention } as never))).toMatchObject({ code: lmdb.code, message: lmdb.message });
      expect(lmdb.code).toBe('INVALID_OPTIONS');
    }
    const rt = await runtime(url, { retention: { done: { ageMs: HOUR, count: 100 }, failed: { count: 0 }, cancelled: Infinity } });
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
