/**
 * The LMDB backend's entry: opening a data dir (its lock, its files' modes) and the store on it.
 * The store itself is in lmdb-store.ts.
 */
import { chmodSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { open, type RootDatabase, type RootDatabaseOptionsWithPath } from 'lmdb';
import { TroupeError } from '../../errors.js';
import { lockDataDir, type DataDirLock } from '../lock.js';
import { findLooseModes, makePrivateDir, PRIVATE_FILE_MODE } from '../private-files.js';
import type { QuarantineRecord, Store } from '../port.js';
import type { EventRecord } from '../records.js';
import type { LooseMode } from '../private-files.js';
import { LmdbStore } from './lmdb-store.js';
import { checkDataFile } from './preflight.js';
import { closeEnvironment } from './close-environment.js';

export { SCHEMA_VERSION } from './migrations.js';

/** Options of {@link openStore}. */
export interface StoreOptions {
  dataDir: string;
  /** Called, in commit order, with the events of each committed batch. */
  onCommitted?: (events: EventRecord[]) => void;
  /** Told about every record moved to quarantine. */
  onQuarantine?: (record: QuarantineRecord) => void;

  /**
   * Told, once per open, about each existing entry of the data dir (the dir itself included) that
   * group or others have permissions on. Troupe creates its own dirs `0700` and files `0600`, but
   * leaves the modes of what it finds alone.
   */
  onLooseMode?: (found: LooseMode) => void;
  /** Clock for quarantine events. */
  now?: () => number;
}

/** The files lmdb-js creates in the data dir (with `noSubdir: false`). */
const LMDB_FILES = ['data.mdb', 'lock.mdb'];

/** How every LMDB environment of a data dir is opened (the store's, compaction's). */
export function environmentOptions(dataDir: string): RootDatabaseOptionsWithPath {
  // noSubdir: false, or lmdb-js takes a dir name with a dot ("my.data") for a file name.
  // permissionsMode (lmdb-js passes it to mdb_env_open; not in its typings) creates the files
  // without group or other bits; the chmod after the open sets the exact mode whatever the umask.
  return { path: dataDir, noSubdir: false, maxDbs: 24, overlappingSync: false, eventTurnBatching: false, compression: false, permissionsMode: PRIVATE_FILE_MODE } as RootDatabaseOptionsWithPath;
}

/**
 * Opens (creating if needed) the store in `dataDir`. Throws DATA_DIR_LOCKED or SCHEMA_MISMATCH.
 * `held` is the dir's lock when the caller holds it already (a failed store opening again): it is
 * kept, not released, when the open fails.
 */
export async function openStore(options: StoreOptions, held?: DataDirLock): Promise<Store> {
  makePrivateDir(options.dataDir);
  const lock = held ?? (await lockDataDir(options.dataDir));
  let root: RootDatabase | undefined;
  try {
    // Before LMDB maps the file: what it would crash on (or read as an empty store) is refused here.
    checkDataFile(options.dataDir);
    const created = LMDB_FILES.map((name) => join(options.dataDir, name)).filter((path) => !existsSync(path));
    root = open(environmentOptions(options.dataDir));
    for (const path of created) chmodSync(path, PRIVATE_FILE_MODE);
    if (options.onLooseMode) for (const found of findLooseModes(options.dataDir)) options.onLooseMode(found);
    const store = new LmdbStore(options, root, lock, (again) => openStore(options, again));
    await store.init(held !== undefined);
    return store;
  } catch (error) {
    if (root) await closeEnvironment(root).catch(() => undefined);
    if (!held) await lock.release();
    if (error instanceof TroupeError) throw error;
    throw new TroupeError('STORE_FAILED', `cannot open the store in ${options.dataDir}: ${(error as Error).message}`, { cause: error });
  }
}

