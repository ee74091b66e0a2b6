/**
 * Opening a store replays the log records after the checkpoint: a previous run died with their
 * changes not yet materialized. Each key's final value is folded first (a patch needs the version
 * before it), then put in the overlay (replayIntoOverlay) or, for an open that must have them in
 * their databases, written once in one transaction with the log's truncation (replayLog), the
 * index of active tasks following each replayed task record as it does when one is materialized.
 */
import { existsSync, readFileSync, statfsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Database, RootDatabase } from 'lmdb';
import { isTerminal } from '../../../machines/index.js';
import type { Key } from '../port.js';
import type { TaskRecord } from '../records.js';
import { CODECS, DB, FINAL, PATCH, REMOVAL, type LogEntry } from './layout.js';
import { buildIndexesOnce, indexesToBuild } from './migrations.js';
import { keyString, REMOVED, type Overlay } from './overlay.js';

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

/** What a replay found: each key's version as of the end of the log, and the last log record. */
interface Folded {
  finals: Map<string, Replayed>;
  checkpoint: number;
  last: number;
}

/**
 * Folds the log after the checkpoint into each key's last version. The ops are read newest first,
 * so that a key whose latest op says its database has it (a settled task, written in its own
 * commit) costs nothing more, and a record is decoded and its patches applied only for the
 * version kept.
 */
function foldLog(dbs: ReadonlyArray<Database<unknown, Key>>, log: Database<LogEntry, number>, meta: Database<unknown, string>): Folded {
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
  return { finals, checkpoint, last };
}

/** What {@link replayAtOpen} replays from and into. */
export interface ReplaySources {
  root: RootDatabase;
  dbs: ReadonlyArray<Database<unknown, Key>>;
  log: Database<LogEntry, number>;
  meta: Database<unknown, string>;
  overlay: Overlay;
  dataDir: string;
}

/**
 * The replay of an open, and the derived indexes an older data dir lacks. Into the overlay, unless
 * the records must be written now: an index built from the stored tasks must see the log's, and
 * a disk that may be full (or an open again after a failed commit: `reopened`) must fail the open
 * rather than some later commit. Returns the checkpoint and the last log record.
 */
export function replayAtOpen(at: ReplaySources, reopened: boolean): { checkpoint: number; last: number } {
  const { root, dbs, log, meta, overlay, dataDir } = at;
  if (reopened || indexesToBuild(meta) || !roomFor(dataDir, logBytes(log, meta))) {
    const last = replayLog(root, dbs, log, meta);
    buildIndexesOnce(root, dbs, meta);
    return { checkpoint: last, last };
  }
  return { checkpoint: (meta.get('checkpoint') as number | undefined) ?? 0, last: replayIntoOverlay(dbs, log, meta, overlay, Date.now()) };
}

/**
 * Replays the log after the checkpoint into the overlay, as changes decided but not yet in their
 * databases: they are written as any other (once cooled, by the batches that follow), and the log
 * records stay until they are, so a crash before that replays them again. Nothing is written at
 * open, and the rebuild that follows reads the replayed records from memory. Returns the last log
 * record (batches go on from it); the checkpoint stays where it is.
 */
export function replayIntoOverlay(dbs: ReadonlyArray<Database<unknown, Key>>, log: Database<LogEntry, number>, meta: Database<unknown, string>, overlay: Overlay, now: number): number {
  const { finals, checkpoint, last } = foldLog(dbs, log, meta);
  // All as of the first record replayed: the checkpoint stays behind them until every one is written.
  for (const { db, key, value } of finals.values()) if (value !== SKIP) overlay.set(db, key, value === undefined ? REMOVED : value, checkpoint + 1, now);
  return last;
}

/**
 * Replays the log after the checkpoint into the databases, in one transaction with the log's
 * truncation, and returns the last log record applied (the new checkpoint). For an open that must
 * find every record in its database (one that builds derived indexes from the stored tasks), or
 * that must know the disk has room for what the log holds (see LmdbStore.init).
 */
export function replayLog(root: RootDatabase, dbs: ReadonlyArray<Database<unknown, Key>>, log: Database<LogEntry, number>, meta: Database<unknown, string>): number {
  const { finals, last } = foldLog(dbs, log, meta);
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

/** The bytes of the log after the checkpoint: about what its records take once written to their databases. */
export function logBytes(log: Database<LogEntry, number>, meta: Database<unknown, string>): number {
  let bytes = 0;
  for (const key of log.getKeys({ start: ((meta.get('checkpoint') as number | undefined) ?? 0) + 1 })) bytes += log.getBinary(key)?.length ?? 0;
  return bytes;
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

/**
 * Whether the data file in `dir` has room to take `bytes` more, four times over plus 64 MB: on the
 * disk, and under this process's limit on a file's size (Linux's RLIMIT_FSIZE, read from
 * /proc/self/limits where there is one). When in doubt, no.
 */
export function roomFor(dir: string, bytes: number): boolean {
  const need = 4 * bytes + 64 * 1024 * 1024;
  try {
    const { bavail, bsize } = statfsSync(dir);
    if (bavail * bsize <= need) return false;
    const limit = /^Max file size\s+(\d+)/m.exec(existsSync(LIMITS) ? readFileSync(LIMITS, 'utf8') : '');
    return !limit || statSync(join(dir, 'data.mdb')).size + need < Number(limit[1]);
  } catch {
    return false;
  }
}
const LIMITS = '/proc/self/limits';
