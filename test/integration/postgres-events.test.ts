/**
 * The cluster event log on PostgreSQL: read with no gap and no duplicate although transactions
 * commit out of the order their events were numbered in; rolled-back events never show; a
 * follower goes on after its LISTEN connection is cut.
 */
import { describe, expect, it } from 'vitest';
import { appendEvents, followEvents, parseCursor, readEvents, type StoredEvent } from '../../src/store/postgres/events.js';
import { scratchPools } from '../helpers.js';

const pools = scratchPools();
const database = () => pools({ max: 12 });

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

  it('refuses a cursor that is not one', () => {
    expect(() => parseCursor('12')).toThrow(expect.objectContaining({ code: 'INVALID_INPUT' }));
    expect(parseCursor('')).toEqual({ xid: '0', seq: '0' });
  });
});
