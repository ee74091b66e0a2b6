/**
 * The cluster event log on PostgreSQL: read with no gap and no duplicate although transactions
 * commit out of the order their events were numbered in; rolled-back events never show; a
 * follower goes on after its LISTEN connection is cut, and while no one reads it only moves its
 * cursor to the end of the log (less and less often while the log is quiet) and hears the NOTIFY
 * hints. A statement's events are stored as one row
 * (schema version 6), and a cursor inside it resumes after its event; version 6 keeps the events
 * and cursors of the log it found.
 */
import { describe, expect, it } from 'vitest';
import { appendEvents, cursorOf, followEvents, parseCursor, readEvents, type StoredEvent } from '../../src/store/postgres/events.js';
import { MIGRATIONS, migrate } from '../../src/store/postgres/migrations.js';
import { scratchPools } from '../helpers.js';

const pools = scratchPools();
const database = () => pools({ max: 12 });

/** Appends each batch of `batches` in a transaction of its own. */
async function append(pool: import('pg').Pool, ...batches: Array<Array<{ type: string; taskId?: string; data?: unknown }>>): Promise<void> {
  for (const batch of batches) {
    const client = await pool.connect();
    try {
      await client.query('BEGIN');
      await appendEvents(client, batch);
      await client.query('COMMIT');
    } finally {
      client.release();
    }
  }
}

/** Reads the whole log `limit` events at a time, each read from the last one's cursor. */
async function readAll(pool: import('pg').Pool, limit: number): Promise<StoredEvent[]> {
  const all: StoredEvent[] = [];
  for (;;) {
    const page = await readEvents(pool, all.at(-1)?.cursor ?? '', limit);
    expect(page.length).toBeLessThanOrEqual(limit);
    if (page.length === 0) return all;
    all.push(...page);
  }
}

describe('the PostgreSQL event log', () => {
  it('holds back an event numbered later whose transaction committed first, until the earlier one ends', async () => {
    const { pool } = await database();
    const first = await pool.connect();
    const second = await pool.connect();
    try {
      await first.query('BEGIN');
      await appendEvents(first, [{ type: 'a', taskId: 't1' }]); // seq 1, still open
      await second.query('BEGIN');
      await appendEvents(second, [{ type: 'b', taskId: 't2', data: { n: 2 } }]); // seq 2
      await second.query('COMMIT');
      // Following seq, a reader would take b now and never go back for a.
      expect(await readEvents(pool, '')).toEqual([]);
      await first.query('COMMIT');
      const events = await readEvents(pool, '');
      expect(events.map((e) => [e.type, e.seq])).toEqual([['a', 1], ['b', 2]]);
      expect(events[1]).toMatchObject({ taskId: 't2', data: { n: 2 } });
      expect(await readEvents(pool, events[0]!.cursor)).toEqual([events[1]]);
      expect(await readEvents(pool, events[1]!.cursor)).toEqual([]);
    } finally {
      first.release();
      second.release();
    }
  });

  it('delivers every committed event to a follower once, in order, and none rolled back, under concurrent writers', async () => {
    const { url, pool } = await database();
    const received: StoredEvent[] = [];
    const stop = new AbortController();
    let expected = Number.POSITIVE_INFINITY;
    let all!: () => void;
    const done = new Promise<void>((resolve) => (all = resolve));
    const following = followEvents(pool, url, { signal: stop.signal, pollMs: 200 }, (events) => {
      received.push(...events);
      if (received.length >= expected) all();
    });
    let committed = 0;
    const writer = async (w: number) => {
      const client = await pool.connect();
      try {
        for (let i = 0; i < 20; i++) {
          await client.query('BEGIN');
          const n = 1 + ((w + i) % 3);
          await appendEvents(client, Array.from({ length: n }, (_, k) => ({ type: 'e', taskId: `w${w}`, data: { i, k } })));
          // Transactions stay open across each other's commits.
          await client.query('SELECT pg_sleep($1)', [((w * 7 + i * 3) % 5) / 1000]);
          if ((w + i) % 7 === 0) await client.query('ROLLBACK');
          else {
            await client.query('COMMIT');
            committed += n;
          }
        }
      } finally {
        client.release();
      }
    };
    await Promise.all([0, 1, 2, 3, 4].map(writer));
    expected = committed;
    if (received.length >= expected) all();
    await done;
    stop.abort();
    await following;
    const stored = (await pool.query<{ seq: string }>('SELECT seq FROM troupe_events ORDER BY xid, seq')).rows.map((r) => Number(r.seq));
    expect(received).toHaveLength(committed);
    expect(received.map((e) => e.seq)).toEqual(stored);
    expect(new Set(received.map((e) => e.seq)).size).toBe(received.length);
    expect([...received.map((e) => e.cursor)].sort()).toEqual(received.map((e) => e.cursor));
  }, 60_000);

  it('reads nothing while no one reads: its cursor moves to the end of the log, the NOTIFY hints still come, and reading again starts from there', async () => {
    const { url, pool } = await database();
    const received: StoredEvent[] = [];
    const hints: string[] = [];
    const skipped: string[] = [];
    let reading = false;
    let nudge = () => {};
    const waiters = new Set<() => void>();
    const heard = () => {
      for (const w of waiters) w();
    };
    const until = (done: () => boolean) => new Promise<void>((resolve) => {
      const check = () => done() && (waiters.delete(check), resolve());
      waiters.add(check);
      check();
    });
    const stop = new AbortController();
    const options = {
      signal: stop.signal,
      pollMs: 20,
      reading: () => reading,
      onNotify: (payload: string) => (hints.push(payload), heard()),
      skipped: (cursor: string) => (skipped.push(cursor), heard()),
      nudge: (n: () => void) => (nudge = n),
    };
    const following = followEvents(pool, url, options, (events) => (received.push(...events), heard()));
    // The hints below are NOTIFYs: only a follower already listening hears them.
    while ((await pool.query("SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'troupe-events' AND query LIKE 'LISTEN%'")).rowCount === 0);
    await append(pool, [{ type: 'task.queued', taskId: 'a' }, { type: 'task.started', taskId: 'a' }], [{ type: 'runtime.frozen' }], [{ type: 'task.done', taskId: 'a' }]);
    const last = (await readAll(pool, 100)).at(-1)!.cursor;
    await until(() => skipped.at(-1) === last && hints.length === 3);
    expect(hints).toEqual(['queued', 'control', '']);
    expect(received).toEqual([]);
    reading = true;
    nudge();
    await append(pool, [{ type: 'after', taskId: 'b' }]);
    await until(() => received.length > 0);
    stop.abort();
    await following;
    expect(received.map((e) => e.type)).toEqual(['after']);
  });

  it('while no one reads, looks at a quiet log less and less often, and at once when it moves again', async () => {
    const { url, pool } = await database();
    /** A pool whose looks at the end of the log are counted, per follower. */
    const counting = (looks: { n: number }) =>
      ({
        query: (...args: Parameters<typeof pool.query>) => {
          if (typeof args[0] === 'string' && args[0].includes('pg_snapshot_xmin')) looks.n++;
          return (pool.query as (...a: unknown[]) => unknown)(...args);
        },
      }) as unknown as import('pg').Pool;
    const stop = new AbortController();
    const quiet = { n: 0 };
    const every = { n: 0 };
    const moved: string[] = [];
    let heard = () => {};
    const base = { signal: stop.signal, pollMs: 20, reading: () => false, keepsProcessAlive: false };
    // One backs off up to a minute; the other looks every 20 ms (quietMaxMs at pollMs: as before).
    const backingOff = followEvents(counting(quiet), url, { ...base, quietMaxMs: 60_000, skipped: (cursor) => (moved.push(cursor), heard()) }, () => undefined);
    const steady = followEvents(counting(every), url, { ...base, quietMaxMs: 20 }, () => undefined);
    const untilLooks = async (done: () => boolean) => {
      while (!done()) await new Promise((resolve) => setTimeout(resolve, 5));
    };
    // Seven looks at a quiet log: waits of 40, 80, ..., 1,280 ms, where the other looked about 120 times.
    await untilLooks(() => quiet.n >= 7);
    expect(every.n).toBeGreaterThanOrEqual(2 * quiet.n);
    // Its next look is 2.56 s away; a commit's NOTIFY brings it at once (while the other looks a few times).
    while ((await pool.query("SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'troupe-events' AND query LIKE 'LISTEN%'")).rowCount! < 2);
    const looked = every.n;
    await append(pool, [{ type: 'task.queued', taskId: 'a' }]);
    const last = (await readAll(pool, 10)).at(-1)!.cursor;
    await new Promise<void>((resolve) => {
      heard = () => moved.includes(last) && resolve();
      heard();
    });
    expect(every.n - looked).toBeLessThan(40);
    stop.abort();
    await Promise.all([backingOff, steady]);
  });

  it('goes on after its LISTEN connection is cut', async () => {
    const { url, pool } = await database();
    const received: StoredEvent[] = [];
    const stop = new AbortController();
    const waiters: Array<{ n: number; resolve: () => void }> = [];
    const following = followEvents(pool, url, { signal: stop.signal, pollMs: 60_000, reconnectMs: 10 }, (events) => {
      received.push(...events);
      for (const w of waiters) if (received.length >= w.n) w.resolve();
    });
    const count = (n: number) => new Promise<void>((resolve) => (received.length >= n ? resolve() : waiters.push({ n, resolve })));
    const write = async (type: string) => {
      const client = await pool.connect();
      try {
        await client.query('BEGIN');
        await appendEvents(client, [{ type }]);
        await client.query('COMMIT');
      } finally {
        client.release();
      }
    };
    await write('before');
    await count(1);
    await pool.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'troupe-events' AND datname = current_database()");
    // The poll is an hour away: only a new LISTEN connection brings this one in.
    await write('after');
    await count(2);
    stop.abort();
    await following;
    expect(received.map((e) => e.type)).toEqual(['before', 'after']);
  });

  it('stores a statement\'s events as one row, and resumes from a cursor inside it after that event', async () => {
    const { pool } = await database();
    const batch = (name: string, n: number) => Array.from({ length: n }, (_, k) => ({ type: `${name}${k}`, data: { k } }));
    await append(pool, batch('a', 5), batch('b', 1), batch('c', 7));
    // Two statements in one transaction: two rows, the second's events after the first's.
    const client = await pool.connect();
    try {
      await client.query('BEGIN');
      await appendEvents(client, batch('d', 3));
      await appendEvents(client, batch('e', 2));
      await client.query('COMMIT');
    } finally {
      client.release();
    }
    expect((await pool.query('SELECT n FROM troupe_event_batches ORDER BY xid, last_seq')).rows.map((r) => r.n)).toEqual([5, 1, 7, 3, 2]);
    const whole = await readEvents(pool, '');
    expect(whole.map((e) => e.type)).toEqual([...batch('a', 5), ...batch('b', 1), ...batch('c', 7), ...batch('d', 3), ...batch('e', 2)].map((e) => e.type));
    expect(whole.map((e) => e.seq)).toEqual(whole.map((_, i) => i + 1));
    expect(whole[2]).toEqual({ cursor: whole[2]!.cursor, seq: 3, at: expect.any(Number), type: 'a2', data: { k: 2 } });
    // Every cursor, inside a row or at its end, resumes right after its event.
    for (const [i, event] of whole.entries()) expect(await readEvents(pool, event.cursor)).toEqual(whole.slice(i + 1));
    // Any page size reads the same log, pages cut inside rows and across them.
    for (const limit of [1, 2, 3, 4, 6, 100]) expect(await readAll(pool, limit)).toEqual(whole);
    // The view shows one row per event, as the table of versions 2-5 did.
    expect((await pool.query('SELECT seq::int, type, data FROM troupe_events ORDER BY xid, seq')).rows).toEqual(whole.map((e) => ({ seq: e.seq, type: e.type, data: e.data })));
  });

  it('orders transactions by their ids as numbers, across a power of ten', async () => {
    const { pool } = await database();
    // Rows as four long-ended transactions around a power of ten would have written them (below
    // the watermark: all ended), stored out of order. As text, '1000' sorts before '999'.
    const xmin = Number((await pool.query('SELECT pg_snapshot_xmin(pg_current_snapshot())::text AS x')).rows[0].x);
    let power = 10 ** Math.floor(Math.log10(xmin));
    if (power + 1 >= xmin) power /= 10;
    const xids = [power - 2, power - 1, power, power + 1];
    for (const [i, xid] of [[2, xids[2]], [1, xids[1]], [3, xids[3]], [0, xids[0]]] as const) {
      await pool.query(`INSERT INTO troupe_event_batches (xid, last_seq, n, events) VALUES ($1::text::xid8, $2::bigint, 1, json_build_array(json_build_array($2::bigint, $3::text, NULL, NULL, NULL)))`, [String(xid), i + 1, `x${xid}`]);
    }
    const types = xids.map((xid) => `x${xid}`);
    expect((await readEvents(pool, '')).map((e) => e.type)).toEqual(types);
    for (const limit of [1, 2, 3]) expect((await readAll(pool, limit)).map((e) => e.type)).toEqual(types);
  });

  it('keeps the events and cursors of a log written before schema version 6', async () => {
    const { pool } = await pools({ max: 4, migrated: false });
    await migrate(pool, MIGRATIONS.slice(0, 5));
    // What versions 2-5 wrote: a row per event; two transactions of two events, one of one.
    for (const types of [['a', 'b'], ['c'], ['d', 'e']]) {
      await pool.query(`INSERT INTO troupe_events (type, task_id, data) SELECT t, 'x', jsonb_build_object('t', t) FROM unnest($1::text[]) AS t`, [types]);
    }
    const before = (await pool.query<{ xid: string; seq: string; type: string }>('SELECT xid::text, seq, type FROM troupe_events ORDER BY xid, seq')).rows;
    expect(await migrate(pool, MIGRATIONS.slice(0, 6))).toMatchObject({ from: 5, applied: [6] });
    const after = await readEvents(pool, '');
    expect(after.map((e) => [e.cursor, e.type, e.taskId, e.data])).toEqual(before.map((r) => [cursorOf(r.xid, r.seq), r.type, 'x', { t: r.type }]));
    // A cursor taken before the migration resumes where it was; new events come after the old.
    expect((await readEvents(pool, cursorOf(before[1]!.xid, before[1]!.seq))).map((e) => e.type)).toEqual(['c', 'd', 'e']);
    await append(pool, [{ type: 'f' }, { type: 'g' }]);
    const next = await readEvents(pool, after.at(-1)!.cursor);
    expect(next.map((e) => e.type)).toEqual(['f', 'g']);
    expect(next[0]!.seq).toBeGreaterThan(after.at(-1)!.seq);
  });

  it('refuses a cursor that is not one', () => {
    expect(() => parseCursor('12')).toThrow(expect.objectContaining({ code: 'INVALID_INPUT' }));
    expect(parseCursor('')).toEqual({ xid: '0', seq: '0' });
  });
});
