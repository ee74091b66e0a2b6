/**
 * Modes of what Troupe writes under a data dir: task inputs, results and logs often hold prompts,
 * tokens and code, so directories are `0700` and files `0600`. Modes are set with chmod after
 * creation, so the process umask can neither widen nor narrow them; the umask itself is
 * process-global state that a library must not change. What already exists keeps its mode: it may
 * be the user's choice (a shared volume, a backup group), so it is reported, never changed.
 */
import { chmodSync, closeSync, fsyncSync, mkdirSync, openSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';

/** Mode of every directory Troupe creates under (and including) a data dir. */
export const PRIVATE_DIR_MODE = 0o700;
/** Mode of every file and socket Troupe creates under a data dir. */
export const PRIVATE_FILE_MODE = 0o600;

/** A path that group or others can read, write or enter. */
export interface LooseMode {
  path: string;
  /** Its permission bits as `ls` and `chmod` spell them: `'0755'`. */
  mode: string;
}

/** The warning about a {@link LooseMode}: one wording wherever a data dir is checked. */
export function looseModeWarning({ path, mode }: LooseMode): string {
  return `${path} has mode ${mode}: group or others can reach the data dir (Troupe leaves existing modes alone: chmod go-rwx it)`;
}

/** Creates `path` and any missing parents as `0700`; a directory that already exists is left as it is. */
export function makePrivateDir(path: string): void {
  const made = mkdirSync(path, { recursive: true, mode: PRIVATE_DIR_MODE });
  if (made === undefined) return;
  const first = resolve(made);
  // mkdir applied the umask: set the exact mode on each directory made, from the deepest up.
  for (let dir = resolve(path); ; dir = dirname(dir)) {
    chmodSync(dir, PRIVATE_DIR_MODE);
    if (dir === first || dirname(dir) === dir) break;
  }
}

/**
 * The data dir and its top-level entries that group or others have any permission on. Workspaces'
 * contents are not walked: agents write them, and the `0700` workspace directory covers them.
 */
export function findLooseModes(dataDir: string): LooseMode[] {
  const loose: LooseMode[] = [];
  const check = (path: string) => {
    const mode = statSync(path).mode & 0o777;
    if ((mode & 0o077) !== 0) loose.push({ path, mode: `0${mode.toString(8).padStart(3, '0')}` });
  };
  check(dataDir);
  for (const name of readdirSync(dataDir)) {
    try {
      check(join(dataDir, name));
    } catch {
      // Gone since the listing (a stale lock moved aside): nothing to report.
    }
  }
  return loose;
}

/** fsync of a file, or of a directory (its entries): what a copy or a rename wrote reaches the disk. */
export function syncPath(path: string): void {
  const fd = openSync(path, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
