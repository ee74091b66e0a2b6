/**
 * Damaged data files: an empty, truncated or meta-zeroed data.mdb is refused with STORE_CORRUPT
 * and left as it was, where LMDB alone would open it as an empty store (empty file) or die of a
 * signal (truncated: SIGBUS; zeroed meta: SIGSEGV). Each open runs in a child process, so a signal
 * would show as one instead of killing the test runner.
 */
import { spawnSync } from 'node:child_process';
import { cpSync, openSync, readFileSync, statSync, truncateSync, writeSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { open } from 'lmdb';
import { describe, expect, it } from 'vitest';
import { builtinAgent, createRuntime } from 'troupe';
import { tempDir } from '../helpers.js';

const INDEX = fileURLToPath(new URL('../../dist/src/index.js', import.meta.url));

/** Opens `dataDir` in a child process; what it printed, its exit code and its signal. */
function openInChild(dataDir: string): { out: string; status: number | null; signal: NodeJS.Signals | null } {
  const script = `
    import { createRuntime } from ${JSON.stringify(INDEX)};
    try {
      const rt = await createRuntime({ dataDir: ${JSON.stringify(dataDir)}, logger: false, threads: 1 });
      console.log('opened ' + (await rt.list({ limit: 1000 })).tasks.length);
      await rt.close();
    } catch (error) {
      console.log('refused ' + error.code + ' ' + error.message);
    }`;
  const child = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 30_000 });
  return { out: child.stdout.trim(), status: child.status, signal: child.signal };
}

describe('a damaged data file', () => {
  it('is refused with STORE_CORRUPT and left untouched: empty, truncated, meta pages zeroed', async () => {
    const dir = tempDir('troupe-corrupt-');
    try {
      const good = join(dir.path, 'good');
      const rt = await createRuntime({ dataDir: good, logger: false, threads: 1, agents: [builtinAgent('echo')] });
      await rt.freeze();
      await rt.submitMany(Array.from({ length: 100 }, (_, i) => ({ agent: 'echo', input: { i, pad: 'x'.repeat(500) } })));
      await rt.close();
      expect(openInChild(good).out).toBe('opened 100');

      const damaged: Array<[string, (file: string) => void, string]> = [
        ['empty', (file) => truncateSync(file, 0), 'is empty (0 bytes)'],
        ['truncated', (file) => truncateSync(file, Math.floor(statSync(file).size / 2 / 4096) * 4096), 'is truncated'],
        [
          'zeroed-meta',
          (file) => {
            const fd = openSync(file, 'r+');
            writeSync(fd, Buffer.alloc(8192), 0, 8192, 0);
            closeSync(fd);
          },
          'has no valid meta page',
        ],
      ];
      for (const [name, damage, why] of damaged) {
        const copy = join(dir.path, name);
        cpSync(good, copy, { recursive: true });
        const file = join(copy, 'data.mdb');
        damage(file);
        const before = readFileSync(file);
        const result = openInChild(copy);
        expect(result.signal, name).toBeNull();
        expect(result.out, name).toMatch(/^refused STORE_CORRUPT /);
        expect(result.out).toContain(why);
        expect(readFileSync(file).equals(before), `${name} left as it was`).toBe(true);
      }
    } finally {
      dir.cleanup();
    }
  }, 60_000);
});

describe('a data dir whose meta is gone', () => {
  it('is refused with STORE_CORRUPT instead of being stamped a new store over its records', async () => {
    const dir = tempDir('troupe-nometa-');
    try {
      const rt = await createRuntime({ dataDir: dir.path, logger: false, threads: 1, agents: [builtinAgent('echo')] });
      await rt.freeze();
      await rt.submit({ agent: 'echo', input: 'kept' });
      await rt.close();
      const env = open({ path: dir.path });
      await env.openDB({ name: 'meta' }).remove('schemaVersion');
      await env.close();
      const before = readFileSync(join(dir.path, 'data.mdb'));
      const result = openInChild(dir.path);
      expect(result.out).toMatch(/^refused STORE_CORRUPT .*no schema version/);
      expect(readFileSync(join(dir.path, 'data.mdb')).equals(before)).toBe(true);
    } finally {
      dir.cleanup();
    }
  });
});
