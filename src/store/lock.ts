/**
 * Single-owner lock on a data dir. LMDB itself happily lets several processes write one
 * environment, but two runtimes dispatching the same queue would run tasks twice, so a runtime
 * takes this lock before it opens the store. A lock left by a dead process (kill -9) is taken over;
 * the owner's process start time guards against a recycled pid.
 *
 * The lock file says who holds the dir; on Linux the hold itself is an abstract Unix socket named
 * after the dir's device and inode, bound for as long as the runtime has the dir open. The kernel
 * releases it when the process dies, and deleting the lock file cannot: a second opener fails to
 * bind it and gets DATA_DIR_LOCKED whatever happened to the file.
 */
import { createServer, type Server } from 'node:net';
import { openSync, closeSync, fchmodSync, writeSync, readFileSync, renameSync, unlinkSync, existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { TroupeError } from '../errors.js';
import { PRIVATE_FILE_MODE } from './private-files.js';

const LOCK_FILE = 'troupe.lock';
const heldInProcess = new Set<string>();

interface LockOwner {
  pid: number;
  startTime: string | null;
  runtimeId?: string;
  at: number;
}

/** A held lock. */
export interface DataDirLock {
  readonly path: string;
  /** Lets go of the dir: the OS hold is unbound (awaited) and the lock file removed. */
  release(): Promise<void>;
}

/**
 * Takes the lock on `dataDir` (which must exist): the lock file, then (on Linux) the OS hold.
 * Throws DATA_DIR_LOCKED naming the holder.
 */
export async function lockDataDir(dataDir: string): Promise<DataDirLock> {
  const file = acquireLock(dataDir);
  let hold: Server | undefined;
  try {
    hold = await holdByName(dataDir);
  } catch (error) {
    file.release();
    throw error;
  }
  return {
    path: file.path,
    async release() {
      if (hold) await new Promise<void>((resolve) => hold!.close(() => resolve()));
      file.release();
    },
  };
}

/** Binds the dir's abstract socket name (Linux); elsewhere the lock file alone holds the dir. */
async function holdByName(dataDir: string): Promise<Server | undefined> {
  if (process.platform !== 'linux') return undefined;
  const { dev, ino } = statSync(dataDir);
  const name = `\0troupe-data-dir:${dev}:${ino}`;
  const server = createServer((socket) => socket.destroy());
  await new Promise<void>((resolve, reject) => {
    server.once('error', (error: NodeJS.ErrnoException) => {
      if (error.code === 'EADDRINUSE') reject(new TroupeError('DATA_DIR_LOCKED', `data dir ${dataDir} is held by another live runtime (its ${LOCK_FILE} may have been removed); close that runtime first`));
      else reject(error);
    });
    server.listen(name, () => resolve());
  });
  // Holding the name must never keep a process alive.
  server.unref();
  return server;
}

/** Takes the lock file of `dataDir`, or throws DATA_DIR_LOCKED naming the holder. */
function acquireLock(dataDir: string): { path: string; release(): void } {
  const path = join(dataDir, LOCK_FILE);
  if (heldInProcess.has(path)) {
    throw new TroupeError('DATA_DIR_LOCKED', `data dir ${dataDir} is already open by another runtime in this process`);
  }
  const owner: LockOwner = { pid: process.pid, startTime: processStartTime(process.pid), at: Date.now() };
  for (let tries = 0; tries < 3; tries++) {
    try {
      const fd = openSync(path, 'wx', PRIVATE_FILE_MODE);
      try {
        // open() applied the umask to the mode: set it exactly.
        fchmodSync(fd, PRIVATE_FILE_MODE);
        writeSync(fd, JSON.stringify(owner));
      } finally {
        closeSync(fd);
      }
      heldInProcess.add(path);
      return {
        path,
        release() {
          heldInProcess.delete(path);
          try {
            const current = readOwner(path);
            if (current?.pid === owner.pid && current.at === owner.at) unlinkSync(path);
          } catch {
            // Already gone: nothing to release.
          }
        },
      };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
    const holder = readOwner(path);
    if (holder && isAlive(holder)) {
      throw new TroupeError('DATA_DIR_LOCKED', `data dir ${dataDir} is locked by live process ${holder.pid}; close that runtime first`);
    }
    breakStaleLock(path, holder);
  }
  throw new TroupeError('DATA_DIR_LOCKED', `data dir ${dataDir}: could not take the lock after breaking a stale one`);
}

function breakStaleLock(path: string, stale: LockOwner | undefined): void {
  // Rename first: of two racing openers only one rename of the same file succeeds.
  const aside = `${path}.stale-${process.pid}-${Date.now()}`;
  try {
    renameSync(path, aside);
  } catch {
    return;
  }
  const moved = readOwner(aside);
  if (stale && moved && (moved.pid !== stale.pid || moved.at !== stale.at) && !existsSync(path)) {
    // We moved a fresh lock that a racer wrote after we read the stale one: put it back.
    renameSync(aside, path);
    return;
  }
  try {
    unlinkSync(aside);
  } catch {
    // Best effort.
  }
}

function readOwner(path: string): LockOwner | undefined {
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as LockOwner;
  } catch {
    return undefined;
  }
}

function isAlive(owner: LockOwner): boolean {
  try {
    process.kill(owner.pid, 0);
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
  const startTime = processStartTime(owner.pid);
  return owner.startTime === null || startTime === null || startTime === owner.startTime;
}

/** Linux: field 22 of /proc/<pid>/stat; elsewhere null (pid liveness only). */
function processStartTime(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return fields[19] ?? null;
  } catch {
    return null;
  }
}
