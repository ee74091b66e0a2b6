/**
 * A backup of the LMDB environment while the runtime runs: LMDB copies it inside one read
 * transaction, so the copy is the store as of its last commit (every step acknowledged before the
 * call, with the log records not materialized yet), whatever commits meanwhile. Opening the copy
 * is opening after a crash: attempts that were running are ended as crashed, the log replays.
 */
import { chmodSync, readdirSync, rmSync, statSync } from 'node:fs';
import { isAbsolute, join, relative } from 'node:path';
import type { RootDatabase } from 'lmdb';
import { TroupeError } from '../../errors.js';
import type { BackupInfo } from '../port.js';
import { makePrivateDir, PRIVATE_FILE_MODE, syncPath } from '../private-files.js';
import { committed } from './committed.js';

/** The data file in a data dir, and in a copy's directory (LMDB's name). */
export const DATA_FILE = 'data.mdb';

/**
 * Copies the environment into `dir`, an existing empty directory: its data file made `0600` and
 * fsynced with the directory. Returns the file's path. Backups and compaction both copy this way.
 */
export async function copyEnvironment(root: RootDatabase, dir: string, compact: boolean): Promise<string> {
  const file = join(dir, DATA_FILE);
  await committed(root.backup(dir, compact));
  chmodSync(file, PRIVATE_FILE_MODE);
  syncPath(file);
  syncPath(dir);
  return file;
}

/**
 * Copies the environment into `dest`, an absolute directory that must not exist yet or be empty,
 * and must not be the data dir or inside it. The directory is made `0700` and the file `0600`, and
 * both are fsynced. A copy that fails is removed, with the directory when this call made it.
 */
export async function backupEnvironment(root: RootDatabase, dataDir: string, dest: string, compact: boolean): Promise<BackupInfo> {
  const inside = relative(dataDir, dest);
  if (inside === '' || (!inside.startsWith('..') && !isAbsolute(inside))) {
    throw new TroupeError('INVALID_INPUT', `backup: ${dest} is the data dir or inside it; give a directory elsewhere`);
  }
  const existing = statSync(dest, { throwIfNoEntry: false });
  if (existing && !existing.isDirectory()) throw new TroupeError('INVALID_INPUT', `backup: ${dest} exists and is not a directory`);
  if (existing && readdirSync(dest).length > 0) throw new TroupeError('INVALID_INPUT', `backup: ${dest} is not empty; give a new or empty directory`);
  const file = join(dest, DATA_FILE);
  try {
    makePrivateDir(dest);
    await copyEnvironment(root, dest, compact);
    return { path: dest, bytes: statSync(file).size, compact };
  } catch (error) {
    rmSync(file, { force: true });
    if (!existing) rmSync(dest, { recursive: true, force: true });
    if (error instanceof TroupeError) throw error;
    throw new TroupeError('STORE_FAILED', `backup to ${dest} failed: ${(error as Error).message}`, { cause: error });
  }
}
