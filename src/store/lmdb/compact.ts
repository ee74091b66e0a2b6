/**
 * Compaction of a data dir no runtime holds (`troupe compact`). LMDB reuses the pages it frees but
 * never gives them back to the file system, so a data file keeps the size of its busiest day. This
 * copies the environment without its free pages into a work directory inside the data dir, fsyncs
 * the copy, and puts it in place of the old file in one rename: a crash before the rename leaves
 * the old file as it was (the work directory is cleared by the next compaction), and after it the
 * new file is complete. Everything in the store is kept as it is, the log and the clean-shutdown
 * mark included.
 */
import { existsSync, renameSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { open } from 'lmdb';
import { TroupeError } from '../../errors.js';
import { lockDataDir } from '../lock.js';
import { makePrivateDir, syncPath } from '../private-files.js';
import { copyEnvironment, DATA_FILE } from './backup.js';
import { checkDataFile } from './preflight.js';
import { environmentOptions } from './store.js';
import { closeEnvironment } from './close-environment.js';

/** The work directory inside the data dir. */
export const COMPACT_DIR = '.compacting';

/** What a compaction did: the data file's size before and after. */
export interface CompactionInfo {
  dataDir: string;
  before: number;
  after: number;
}

/** Where a compaction is, for a test that kills it there. */
export type CompactionStage = 'copied' | 'replaced';

/**
 * Compacts `dataDir` (absolute) in place. DATA_DIR_LOCKED while a runtime holds it, INVALID_INPUT
 * when it holds no store, STORE_CORRUPT for a damaged data file (left as it is).
 */
export async function compactDataDir(dataDir: string, onStage?: (stage: CompactionStage) => Promise<void> | void): Promise<CompactionInfo> {
  const file = join(dataDir, DATA_FILE);
  if (!existsSync(file)) throw new TroupeError('INVALID_INPUT', `compact: ${dataDir} holds no store (no data.mdb)`);
  const lock = await lockDataDir(dataDir);
  try {
    checkDataFile(dataDir);
    const before = statSync(file).size;
    const work = join(dataDir, COMPACT_DIR);
    // What a compaction that died before its rename left.
    rmSync(work, { recursive: true, force: true });
    makePrivateDir(work);
    const root = open(environmentOptions(dataDir));
    let copy: string;
    try {
      copy = await copyEnvironment(root, work, true);
    } finally {
      await closeEnvironment(root);
    }
    await onStage?.('copied');
    renameSync(copy, file);
    syncPath(dataDir);
    await onStage?.('replaced');
    rmSync(work, { recursive: true, force: true });
    // The reader table of the old file: LMDB makes a new one on the next open.
    rmSync(join(dataDir, 'lock.mdb'), { force: true });
    return { dataDir, before, after: statSync(file).size };
  } catch (error) {
    if (error instanceof TroupeError) throw error;
    throw new TroupeError('STORE_FAILED', `compact: ${dataDir}: ${(error as Error).message}`, { cause: error });
  } finally {
    await lock.release();
  }
}
