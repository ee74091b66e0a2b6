/**
 * The schema version of an LMDB data dir, and the migrations that bring an older one up to it. A
 * migration runs at open, inside one synchronous transaction.
 */
import type { Database, RootDatabase } from 'lmdb';
import { TroupeError } from '../../errors.js';
import type { Key } from '../port.js';
import { settledIndexEntries, type TaskRecord } from '../records.js';
import { databaseEncoder, eventBatchEncoder } from './codec.js';
import { migrateEventsToBatches } from './event-log.js';
import { CODECS, DATABASES, DB, encoded, STRUCTURES } from './layout.js';

/** The schema this build reads and writes. Bump it with a migration in {@link MIGRATIONS}. */
export const SCHEMA_VERSION = 9;

/** Upgrades from version n to n+1, run at open inside one synchronous transaction. */
export const MIGRATIONS: Record<number, (root: RootDatabase) => void> = {
  // 1 → 2: events move from one record each to one record per batch; tasks, attempts and runs
  // are stored positionally (codec.ts) instead of as msgpack maps with shared structures.
  1: (root) => {
    migrateEventsToBatches(root.openDB({ name: 'events', sharedStructuresKey: STRUCTURES }), root.openDB(encoded('eventLog', eventBatchEncoder)));
    for (const [index, codec] of CODECS) {
      const name = DATABASES[index]!;
      const old = root.openDB<unknown, Key>({ name, sharedStructuresKey: STRUCTURES });
      const neu = root.openDB<unknown, Key>(encoded(name, databaseEncoder(codec)));
      for (const { key, value } of old.getRange()) neu.putSync(key, codec.normalize(value as never));
    }
  },
  // 2 → 3: a terminal task record may hold its final attempt (codec version 2, fields appended).
  // Nothing to rewrite: version 1 records read as they are; the bump keeps older builds, which
  // would look for that attempt in its own database, off a data dir this build wrote.
  2: () => undefined,
  // 3 → 4: the children index ([parentId, childId]). It is built by buildIndexesOnce, after the
  // log is replayed (children the log still holds count too); the bump keeps older builds, which
  // would submit children without an entry, off a data dir this build wrote.
  3: () => undefined,
  // 4 → 5: the retention indexes (settled, expiry), built by buildIndexesOnce as the children
  // index is; task records gain their own retention (codec version 3).
  4: () => undefined,
  // 5 → 6: the indexes list() reads settled tasks by (listed, labelled), built by buildIndexesOnce.
  5: () => undefined,
  // 6 → 7: the settled counts (meta settledCounts), kept in every commit from now on; counted from
  // the listed index at open when missing. The bump keeps schema 6 builds, which would leave
  // them behind, off a data dir this build wrote.
  6: () => undefined,
  // 7 → 8: task records may hold their trace context (codec version 4, a field appended). Nothing
  // to rewrite; the bump keeps older builds, which would quarantine a version 4 record as
  // unreadable, off a data dir this build wrote.
  7: () => undefined,
  // 8 → 9: a settled task's `listed` entry holds its settle instant (false under a retention rule
  // of its own), which retention reads, and the separate index by settle instant (`settled`) is
  // gone. The indexes of settled tasks are emptied here and built again by buildIndexesOnce from
  // the stored tasks, after the log is replayed.
  8: (root) => {
    // Emptied whole (LMDB drops their pages), not key by key: one index entry per settled task.
    for (const name of ['settled', 'expiry', 'listed', 'labelled'] as const) root.openDB<unknown, Key>({ name, sharedStructuresKey: STRUCTURES }).clearSync();
    const meta = root.openDB<unknown, string>({ name: 'meta', sharedStructuresKey: STRUCTURES });
    for (const flag of ['settledIndexed', 'listedIndexed', 'settledEntriesIndexed']) meta.removeSync(flag);
  },
};

/** The indexes derived from the task records, each with the meta flag that says a data dir has it, and what it takes from one task. */
const DERIVED: ReadonlyArray<{ flag: string; index(dbs: ReadonlyArray<Database<unknown, Key>>, task: TaskRecord): void }> = [
  {
    flag: 'childrenIndexed',
    index(dbs, task) {
      if (typeof task.parentId === 'string') dbs[DB.children]!.putSync([task.parentId, task.id], true);
    },
  },
  {
    // The indexes of settled tasks (settledIndexEntries): expiry, listed (valued with the settle
    // instant since schema version 9) and labelled.
    flag: 'settledEntriesIndexed',
    index(dbs, task) {
      for (const [index, key, value] of settledIndexEntries(task)) dbs[DB[index]]!.putSync(key, value);
    },
  },
];

/** Whether this data dir lacks an index derived from the stored tasks (see {@link buildIndexesOnce}). */
export function indexesToBuild(meta: Database<unknown, string>): boolean {
  return DERIVED.some(({ flag }) => meta.get(flag) !== true);
}

/**
 * Builds the indexes derived from the stored tasks that this data dir lacks, in one pass over
 * them, once per data dir (a meta flag says each is built; a new store has them all at once).
 * Runs at open, after the log is replayed, so that tasks the log still held count too.
 */
export function buildIndexesOnce(root: RootDatabase, dbs: ReadonlyArray<Database<unknown, Key>>, meta: Database<unknown, string>): void {
  const missing = DERIVED.filter(({ flag }) => meta.get(flag) !== true);
  if (missing.length === 0) return;
  root.transactionSync(() => {
    for (const { value } of dbs[DB.tasks]!.getRange()) for (const { index } of missing) index(dbs, value as TaskRecord);
    for (const { flag } of missing) meta.putSync(flag, true);
  });
}


/**
 * Brings the data dir's schema up to {@link SCHEMA_VERSION}, or refuses it: a newer schema is
 * SCHEMA_MISMATCH, and records with no schema version in the meta are STORE_CORRUPT (opening would
 * stamp them as a new store). Returns the version found (undefined: a new store).
 */
export function upgradeSchema(root: RootDatabase, meta: Database<unknown, string>, holdsRecords: () => boolean, dataDir: string): number | undefined {
  const stored = meta.get('schemaVersion') as number | undefined;
  if (stored === undefined && holdsRecords()) {
    throw new TroupeError('STORE_CORRUPT', `data dir ${dataDir} holds records but no schema version in its meta; Troupe refuses to open it and leaves it as it is`);
  }
  if (stored !== undefined && (!Number.isInteger(stored) || stored > SCHEMA_VERSION)) {
    throw new TroupeError('SCHEMA_MISMATCH', `data dir ${dataDir} has schema version ${String(stored)}, this build reads version ${SCHEMA_VERSION}`);
  }
  if (stored !== undefined && stored < SCHEMA_VERSION) {
    for (let version = stored; version < SCHEMA_VERSION; version++) {
      const migrate = MIGRATIONS[version];
      if (!migrate) throw new TroupeError('SCHEMA_MISMATCH', `no migration from schema version ${version} to ${version + 1}`);
      root.transactionSync(() => migrate(root));
    }
  }
  return stored;
}

/** Whether any of `dbs` holds a record (a data dir with records but no schema version is not new). */
export function holdsRecords(dbs: ReadonlyArray<Database<unknown, Key>>): boolean {
  for (const db of dbs) for (const _key of db.getKeys({ limit: 1 })) return true;
  return false;
}
