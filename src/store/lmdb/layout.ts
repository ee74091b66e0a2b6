/**
 * How the LMDB backend lays records out: the named databases (and the number each has in log
 * records), the flags of a log op, and the log record's encoding.
 *
 * A log record holds one batch's record changes as flat `[db, key, value]` ops: a put is
 * `[db, key, record]`; a removal `[db + REMOVAL, key, null]`; a change to a record whose earlier
 * version the log or its database holds is `[db + PATCH, key, [field index, value, …]]`; and a
 * record written to its database in the batch's own commit is the marker `[db + FINAL, key,
 * null]`, which tells a replay that the database has the latest version.
 */
import type { DatabaseOptions } from 'lmdb';
import { attemptCodec, plainEncoder, runCodec, taskCodec, type RecordCodec } from './codec.js';

/**
 * The record databases, in the order their index is written in log records (append only). `settled`
 * (an index by settle instant, [agent, state, settledAt, id]) is empty since schema version 9: the
 * `listed` entries hold the settle instant instead (see settledIndexEntries).
 */
export const DATABASES = ['tasks', 'active', 'runs', 'attempts', 'instances', 'logs', 'timers', 'idempotency', 'inbox', 'schedules', 'control', 'quarantine', 'children', 'settled', 'expiry', 'listed', 'labelled'] as const;
export type DbName = (typeof DATABASES)[number];
export const DB = Object.fromEntries(DATABASES.map((name, i) => [name, i])) as Record<DbName, number>;

/** Added to a database index in a log op that removes the key. */
export const REMOVAL = 64;
/** Added to a database index in a log op that patches the record. */
export const PATCH = 128;
/**
 * Added to a database index in a batch op that is written to its database in the batch's own
 * commit (see StepWriter.putTask `final`); in the log, the op becomes a marker (see the module
 * comment) when the log holds earlier changes of the key.
 */
export const FINAL = 256;
/** A batch op that is not logged at all. */
export const UNLOGGED = -1;

/** The databases of positionally stored records (codec.ts), by index. */
export const CODECS = new Map<number, RecordCodec<any>>([
  [DB.tasks, taskCodec],
  [DB.attempts, attemptCodec],
  [DB.runs, runCodec],
]);
/** Databases whose records change field by field: a later version is logged as a patch. */
export const PATCHED = new Set([DB.tasks]);

/** A log record: the batch's changes as flat [db, key, value] ops (see the module comment); read back, a put's value is as logged (positional for a database with a codec). */
export interface LogEntry {
  ops: unknown[];
}

/** The log's values: record values positional, patches as [field index, value, …] already. */
export const logEncoder = plainEncoder<LogEntry>(
  (w, { ops }) => {
    let logged = 0;
    for (let i = 0; i < ops.length; i += 3) if (ops[i] !== UNLOGGED) logged++;
    w.array(3 * logged);
    for (let i = 0; i < ops.length; i += 3) {
      const index = ops[i] as number;
      if (index === UNLOGGED) continue;
      w.number(index);
      w.value(ops[i + 1]);
      const codec = CODECS.get(index);
      if (codec) codec.write(w, ops[i + 2]);
      else w.value(ops[i + 2]);
    }
  },
  // Values come back as logged (positional where the database has a codec): the replay decodes
  // only the versions it writes.
  (value) => {
    if (!Array.isArray(value)) throw new Error('not a log record');
    return { ops: value };
  },
);

/** Options of a database stored with one of our encoders (lmdb-js takes `encoder`; its typings do not list it). */
export function encoded(name: string, encoder: { encode(value: never): Buffer; decode(bytes: Uint8Array): unknown }): DatabaseOptions & { name: string } {
  return { name, encoder } as unknown as DatabaseOptions & { name: string };
}

/** Shared msgpack structures of the databases that still use them (instances, control, …). */
export const STRUCTURES = Symbol.for('troupe.structures');

/**
 * How records move from the overlay to their databases (see overlay.ts `TakePolicy`): once it has
 * not changed for 8 batches and 500 ms, long enough that a task submitted, queued behind a full
 * window, started and settled is written once; and one that keeps changing (an instance's
 * snapshot under a steady load) after 1 s, or the log behind it could never be truncated and a
 * reopen after a crash would replay everything since (measured: 11.5 s to open after 1 M tasks).
 * Such a record holds the checkpoint back, so a reopen after a crash replays about that long of
 * the log (with 2 s: 51,000 tasks' worth, 830 ms of a reopen at 2 M settled tasks).
 */
export const MATERIALIZE = { coolBatches: 8, coolMs: 500, maxAgeBatches: 5_000, maxAgeMs: 1_000, minBudget: 256, idleBudget: 20_000, maxEntries: 200_000 };
