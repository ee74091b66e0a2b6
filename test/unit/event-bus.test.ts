/**
 * The event bus around a store recovery, on an in-memory log: an announced event reaches
 * listeners at once and its durable copy is not published again; a replay reads the log in
 * chunks from the database attached now, and fails with the outage while the store is detached.
 */
import { describe, expect, it } from 'vitest';
import { EventBus, type RuntimeEvent } from '../../src/events/event-bus.js';
import type { RangeOptions, SafeDatabase } from '../../src/store/port.js';
import type { EventRecord } from '../../src/store/records.js';
import { TroupeError } from '../../src/errors.js';

/** An event log in memory: `reads` counts the range calls, `open` how many are not finished. */
function memoryLog(events: EventRecord[]) {
  const log = {
    reads: 0,
    open: 0,
    db: {
      get: (seq: number) => events.find((e) => e.seq === seq),
      has: (seq: number) => events.some((e) => e.seq === seq),
      keys: () => events.map((e) => e.seq),
      *range(options: RangeOptions = {}) {
        log.reads++;
        log.open++;
        try {
          let n = 0;
          for (const event of events) {
            if (options.start !== undefined && event.seq < (options.start as number)) continue;
            if (options.limit !== undefined && n++ >= options.limit) return;
            yield { key: event.seq, value: event };
          }
        } finally {
          log.open--;
        }
      },
    } satisfies SafeDatabase<EventRecord, number>,
  };
  return log;
}

const event = (seq: number, type: EventRecord['type'] = 'task.queued'): EventRecord => ({ seq, at: 1_000 + seq, type, taskId: `t${seq}` });
const noHold = () => () => undefined;

describe('EventBus', () => {
  it('publishes an announced event at once, and not its durable copy again', () => {
    const bus = new EventBus(memoryLog([]).db, noHold);
    const heard: Array<[string, number]> = [];
    bus.on('*', (e: RuntimeEvent) => heard.push([e.type, e.seq]));
    bus.announce({ seq: 7, at: 1, type: 'store.failed', data: { message: 'full' } });
    expect(heard).toEqual([['store.failed', 7]]);
    // The commit after the store is back holds the durable copy (here with another seq) and more.
    bus.publish([event(9, 'store.failed'), event(10, 'store.recovered')]);
    bus.publish([event(11, 'store.failed')]);
    expect(heard).toEqual([
      ['store.failed', 7],
      ['store.recovered', 10],
      ['store.failed', 11],
    ]);
  });

  it("delivers an event to the listeners registered when it was published: a '*' listener added by a typed one hears the next event", () => {
    const bus = new EventBus(memoryLog([]).db, noHold);
    const heard: number[] = [];
    const off = bus.on('task.queued', () => {
      off();
      bus.on('*', (e: RuntimeEvent) => heard.push(e.seq));
    });
    bus.publish([event(1)]);
    expect(heard).toEqual([]);
    bus.publish([event(2)]);
    expect(heard).toEqual([2]);
  });

  it('replays in chunks, holding no read of the log across a yield, from the database attached now', async () => {
    const before = memoryLog(Array.from({ length: 600 }, (_, i) => event(i + 1)));
    const bus = new EventBus(before.db, noHold);
    const stop = new AbortController();
    const replay = bus.iterate({ signal: stop.signal });
    expect((await replay.next()).value).toMatchObject({ seq: 1 });
    expect(before.open).toBe(0);
    // The store closes and opens again: the next chunk comes from the new log.
    bus.detach(new TroupeError('STORE_FAILED', 'down'));
    const after = memoryLog(Array.from({ length: 601 }, (_, i) => event(i + 1)));
    bus.attach(after.db, () => 0);
    const seqs = [1];
    for (;;) {
      const { value } = await replay.next();
      seqs.push((value as RuntimeEvent).seq);
      if (seqs.length === 601) break;
    }
    expect(seqs).toEqual(Array.from({ length: 601 }, (_, i) => i + 1));
    expect(before.reads).toBe(1);
    expect(after.reads).toBe(2);
    expect(after.open).toBe(0);
    stop.abort();
    expect((await replay.next()).done).toBe(true);
  });

  it('fails a replay that needs the log while the store is detached, with the outage', async () => {
    const log = memoryLog(Array.from({ length: 300 }, (_, i) => event(i + 1)));
    const bus = new EventBus(log.db, noHold);
    const replay = bus.iterate();
    for (let i = 0; i < 256; i++) await replay.next();
    const outage = new TroupeError('STORE_FAILED', 'the store stopped');
    bus.detach(outage);
    await expect(replay.next()).rejects.toBe(outage);
    // A new replay started while detached fails the same way; once attached, one reads again.
    await expect(bus.iterate().next()).rejects.toBe(outage);
    bus.attach(log.db, () => 0);
    const again = bus.iterate({ after: 299 });
    expect((await again.next()).value).toMatchObject({ seq: 300 });
    await again.return(undefined);
  });
});

describe('EventBus: one task’s events', () => {
  it('starts the replay at the last event before the task was created, found by bisection, not at the log’s start', async () => {
    // 10,000 seqs, every seventh taken by a fencing token (no event), one ms apart.
    const log = memoryLog(Array.from({ length: 10_000 }, (_, i) => event(i + 1)).filter((e) => e.seq % 7 !== 0));
    let handed = 0;
    const range = log.db.range.bind(log.db);
    const counted = {
      ...log.db,
      *range(options?: RangeOptions) {
        for (const entry of range(options)) {
          handed++;
          yield entry;
        }
      },
    } satisfies SafeDatabase<EventRecord, number>;
    const bus = new EventBus(counted, noHold);
    // t9001 was created at 10_001 (its event's time): ask from a little before.
    const stream = bus.iterate({ taskId: 't9001' }, { at: 10_001 - 50 });
    expect((await stream.next()).value).toMatchObject({ seq: 9001, taskId: 't9001' });
    await stream.return(undefined);
    // From the start, the replay would be handed the ~7,700 events before it.
    expect(handed).toBeLessThan(600);
    // A time before the log's first event, or none: the replay starts at the start.
    const early = bus.iterate({ taskId: 't2' }, { at: 0 });
    expect((await early.next()).value).toMatchObject({ seq: 2 });
    await early.return(undefined);
    // With the task's first seq known, the replay starts right there.
    handed = 0;
    const exact = bus.iterate({ taskId: 't9500' }, { seq: 9500 });
    expect((await exact.next()).value).toMatchObject({ seq: 9500 });
    await exact.return(undefined);
    expect(handed).toBeLessThan(300);
  });
});
