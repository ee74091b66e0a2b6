/**
 * Opening a store replays the log records after the checkpoint: a previous run died with their
 * changes not yet materialized. Each key's final value is folded first (a patch needs the version
 * before it), then written once, in one transaction with the log's truncation. The index of active
 * tasks follows each replayed task record, as it does when a record is materialized.
 */
import type { Database, RootDatabase } from 'lmdb';
import { isTerminal } from '../../../machines/index.js';
import type { Key } from '../port.js';
import type { TaskRecord } from '../records.js';
import { CODECS, DB, FINAL, PATCH, REMOVAL, type LogEntry } from './layout.js';
import { keyString, REMOVED } from './overlay.js';

/** A replayed key whose latest version its database already has. */
const SKIP = Symbol('skip');

/** A key the replay has seen, newest op first: its value once known, and the patches newer than what it rests on. */
interface Replayed {
  db: number;
  key: Key;
  value: unknown;
  /** Patches met so far that wait for the version they apply to, newest first. */
  patches: unknown[][];
  known: boolean;
}

/**
 * Replays the log after the checkpoint; returns the last log record applied (the new checkpoint).
 * The ops are read newest first, so that a key whose latest op says its database has it (a
 * settled task, written in its own commit) costs nothing more, and a record is decoded and its
 * patches applied only for the version that is written.
 */
export function replayLog(root: RootDatabase, dbs: ReadonlyArray<Database<unknown, Key>>, log: Database<LogEntry, number>, meta: Database<unknown, string>): number {
  const checkpoint = (meta.get('checkpoint') as number | undefined) ?? 0;
  let last = checkpoint;
  const records: unknown[][] = [];
  for (const { key, value } of log.getRange({ start: checkpoint + 1 })) {
    records.push(value.ops);
    last = key;
  }
  const finals = new Map<string, Replayed>();
  for (let r = records.length - 1; r >= 0; r--) {
    const ops = records[r]!;
    for (let i = ops.length - 3; i >= 0; i -= 3) {
      const index = ops[i] as number;
      const k = ops[i + 1] as Key;
      const db = index % REMOVAL;
      const id = `${db}\u0000${keyString(k)}`;
      let entry = finals.get(id);
      if (entry?.known) continue;
      if (!entry) finals.set(id, (entry = { db, key: k, value: undefined, patches: [], known: false }));
      if (index >= FINAL) {
        // The database has this version: what came before it in the log is stale.
        entry.value = entry.patches.length === 0 ? SKIP : patched(db, dbs[db]!.get(k), entry.patches);
        entry.known = true;
      } else if (index >= PATCH) entry.patches.push(ops[i + 2] as unknown[]);
      else {
        const base = index >= REMOVAL ? REMOVED : decoded(db, ops[i + 2]);
        entry.value = entry.patches.length === 0 ? base : patched(db, base, entry.patches);
        entry.known = true;
      }
    }
  }
  // Patches of a version that was in the database before the checkpoint.
  for (const entry of finals.values()) {
    if (entry.known) continue;
    entry.value = patched(entry.db, dbs[entry.db]!.get(entry.key), entry.patches);
  }
  // A replayed task is in the active index exactly while it is not terminal. (A removed task's
  // retention entry went in its removal's own commit, not through the log.)
  for (const { db, key, value } of [...finals.values()]) {
    if (db !== DB.tasks || value === SKIP) continue;
    const active = value !== REMOVED && value !== undefined && !isTerminal((value as TaskRecord).state);
    finals.set(`${DB.active}\u0000${keyString(key)}`, { db: DB.active, key, value: active ? true : REMOVED, patches: [], known: true });
  }
  root.transactionSync(() => {
    for (const { db, key, value } of finals.values()) {
      if (value === SKIP) continue;
      if (value === REMOVED || value === undefined) dbs[db]!.removeSync(key);
      else dbs[db]!.putSync(key, value);
    }
    for (const k of log.getKeys({ end: last + 1 })) log.removeSync(k);
    meta.putSync('checkpoint', last);
  });
  return last;
}

/** A put's value as logged: positional for a database with a codec (see layout.ts `logEncoder`). */
function decoded(db: number, value: unknown): unknown {
  const codec = CODECS.get(db);
  return codec ? codec.fromValues(value) : value;
}

/** `base` with `patches` (newest first) applied oldest first. */
function patched(db: number, base: unknown, patches: readonly unknown[][]): unknown {
  const codec = CODECS.get(db)!;
  let value = base;
  for (let p = patches.length - 1; p >= 0; p--) value = codec.patch(value as never, patches[p]!);
  return value;
}
