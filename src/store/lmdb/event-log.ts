/**
 * The event log on LMDB: each batch's events are one record, keyed by the seq of its first event,
 * so a commit writes one value however many events it holds. Reads find the record that holds a
 * seq (the one with the greatest key at or below it) and walk forward from there.
 */
import type { Database } from 'lmdb';
import type { RangeOptions, SafeDatabase } from '../port.js';
import type { EventRecord } from '../records.js';
import type { Quarantine } from './safe-read.js';

const isEvent = (v: unknown): v is EventRecord => typeof v === 'object' && v !== null && typeof (v as EventRecord).seq === 'number' && typeof (v as EventRecord).type === 'string';

/** Reads one event record (a batch's events) by key; undefined when it is missing or was quarantined, as it is when it cannot be read. */
export type EventChunks = (key: number) => EventRecord[] | undefined;

/** The event log's records, read safely: a record that cannot be read is quarantined whole. */
export function eventChunks(db: Database<EventRecord[], number>, quarantine: Quarantine, isQuarantined: (name: string, key: unknown) => boolean): EventChunks {
  return (key) => {
    if (isQuarantined('events', key)) return undefined;
    let value: unknown;
    try {
      value = db.get(key);
    } catch (error) {
      quarantine('events', db as Database<unknown, any>, key, `does not decode: ${(error as Error).message}`);
      return undefined;
    }
    if (value === undefined) return undefined;
    if (!Array.isArray(value) || !value.every(isEvent)) {
      quarantine('events', db as Database<unknown, any>, key, 'decodes to something that is not a batch of events');
      return undefined;
    }
    return value;
  };
}

/** Reads of the event log, one event at a time; a record that cannot be read is quarantined whole. */
export function eventReads(db: Database<EventRecord[], number>, quarantine: Quarantine, isQuarantined: (name: string, key: unknown) => boolean): SafeDatabase<EventRecord, number> {
  const chunk = eventChunks(db, quarantine, isQuarantined);
  /** The key of the record that holds `seq` (or the first after it). */
  const floor = (seq: number): number => {
    for (const key of db.getKeys({ start: seq, reverse: true, limit: 1 })) return key;
    return seq;
  };
  function* forward(options: RangeOptions): Generator<{ key: number; value: EventRecord }> {
    const start = typeof options.start === 'number' ? options.start : 0;
    const end = typeof options.end === 'number' ? options.end : Number.POSITIVE_INFINITY;
    let limit = options.limit ?? Number.POSITIVE_INFINITY;
    for (const key of db.getKeys({ start: floor(start) })) {
      if (key >= end) return;
      for (const event of chunk(key) ?? []) {
        if (event.seq < start) continue;
        if (event.seq >= end || limit-- <= 0) return;
        yield { key: event.seq, value: event };
      }
    }
  }
  return {
    get(seq) {
      for (const event of chunk(floor(seq)) ?? []) if (event.seq === seq) return event;
      return undefined;
    },
    range(options = {}) {
      if (!options.reverse) return forward(options);
      const { limit, ...bounds } = options;
      const all = [...forward(bounds)].reverse();
      return limit === undefined ? all : all.slice(0, limit);
    },
    *keys(options = {}) {
      for (const { key } of this.range(options)) yield key;
    },
    has(seq) {
      return this.get(seq) !== undefined;
    },
  };
}

/**
 * The seq after every event ever written, so that no seq is handed out twice: after the last
 * readable record's last event, past every record's key (a record that cannot be read is
 * quarantined by `read`; its events' seqs start at its key), and past `removedThrough`, the last
 * seq of the records truncated away (a log emptied by retention starts after them, not at 1).
 */
export function nextSeqOf(db: Database<EventRecord[], number>, read: EventChunks, removedThrough: number): number {
  let next = removedThrough + 1;
  for (const key of db.getKeys({ reverse: true })) {
    next = Math.max(next, key + 1);
    const last = read(key)?.at(-1);
    if (last) return Math.max(next, last.seq + 1);
  }
  return next;
}

/**
 * The oldest event records whose events all happened before `before`, at most `max`: their keys,
 * how many events, and the last seq. A record that cannot be read is quarantined (`read`), and the
 * sweep goes on past it.
 */
export function expiredEventRecords(db: Database<EventRecord[], number>, read: EventChunks, before: number, max: number): { keys: number[]; events: number; through: number } {
  const out = { keys: [] as number[], events: 0, through: 0 };
  for (const key of db.getKeys({ limit: max })) {
    const events = read(key);
    if (events === undefined) continue;
    const last = events.at(-1);
    if (!last || !(last.at < before)) break;
    out.keys.push(key);
    out.events += events.length;
    out.through = last.seq;
  }
  return out;
}

/** Schema 1 kept one record per event (database `events`); schema 2 keeps one per batch. */
export function migrateEventsToBatches(from: Database<EventRecord, number>, to: Database<EventRecord[], number>): void {
  let chunk: EventRecord[] = [];
  const flush = () => {
    if (chunk.length > 0) to.putSync(chunk[0]!.seq, chunk);
    chunk = [];
  };
  for (const { value } of from.getRange()) {
    if (!isEvent(value)) continue;
    chunk.push(value);
    if (chunk.length === 1_000) flush();
  }
  flush();
  for (const key of from.getKeys()) from.removeSync(key);
}
