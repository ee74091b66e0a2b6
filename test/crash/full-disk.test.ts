/**
 * A full disk under a live runtime (a 2 MiB tmpfs; needs root to mount one, as on this project's
 * machines): submits fail with STORE_FAILED instead of the process dying, and every submit that
 * was acknowledged is in the store when the data dir is opened again on a disk with room.
 */
import { execFileSync, spawn } from 'node:child_process';
import { cpSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { createRuntime } from 'troupe';
import { tempDir } from '../helpers.js';

const CHILD = new URL('../../dist/test/fixtures/crash/full-disk-child.js', import.meta.url);

/** Mounts a tmpfs of `size` at `path`; false where this process may not mount. */
function mountTmpfs(path: string, size: string): boolean {
  if (process.getuid?.() !== 0) return false;
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', path], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

const probe = tempDir('troupe-mount-');
const canMount = mountTmpfs(probe.path, '64k');
if (canMount) execFileSync('umount', [probe.path]);
probe.cleanup();

describe('a full disk', () => {
  it.runIf(canMount)('fails the submits it cannot store with STORE_FAILED, and loses none it acknowledged', async () => {
    const dir = tempDir('troupe-full-');
    const small = join(dir.path, 'small');
    mkdirSync(small);
    expect(mountTmpfs(small, '2m')).toBe(true);
    try {
      const dataDir = join(small, 'data');
      const child = spawn(process.execPath, [CHILD.pathname, dataDir], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
      child.stderr.resume();
      const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
      const lines = stdout.split('\n').filter(Boolean);
      const acked = lines.filter((l) => l.startsWith('acked ')).map((l) => l.slice(6));
      const failed = lines.filter((l) => l.startsWith('failed '));
      expect(code, stdout.slice(-500)).toBe(0);
      expect(lines.at(-1)).toBe('exited cleanly');
      // The store stopped at the first failed commit, and says why.
      const failure = JSON.parse(lines.find((l) => l.startsWith('storeFailure '))!.slice('storeFailure '.length)) as { message: string } | null;
      expect(failure?.message).toContain('the store stopped after a failed commit');
      expect(acked.length).toBeGreaterThan(0);
      expect(failed.length).toBeGreaterThan(0);
      expect(new Set(failed)).toEqual(new Set(['failed STORE_FAILED']));
      // On a disk with room, every acknowledged task is there, and no refused one is.
      const copy = join(dir.path, 'copy');
      cpSync(dataDir, copy, { recursive: true });
      const rt = await createRuntime({ dataDir: copy, logger: false, threads: 1 });
      try {
        const stored: string[] = [];
        for (let after: string | undefined; ; ) {
          const page = await rt.list({ limit: 1000, ...(after ? { after } : {}) });
          stored.push(...page.tasks.map((t) => t.id));
          if (!page.next) break;
          after = page.next;
        }
        expect(stored.sort()).toEqual([...acked].sort());
      } finally {
        await rt.close();
      }
    } finally {
      execFileSync('umount', [small]);
      dir.cleanup();
    }
  }, 60_000);
});
