/**
 * Closing lets go of everything a data dir's LMDB environment held in this process. lmdb-js keeps
 * each database it opens in a module-level map (`allDbs`) and never takes one out on its own, so
 * without src/store/lmdb/close-environment.ts every runtime closed on a new data dir stayed
 * reachable (about 120 KB of heap each, growing without end).
 */
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { basename } from 'node:path';
import * as lmdb from 'lmdb';
import { describe, expect, it } from 'vitest';
import { builtinAgent, createRuntime } from 'troupe';
import { compactDataDir } from '../../src/store/lmdb/compact.js';
import { openStore } from '../../src/store/lmdb/store.js';
import { scratchDirs } from '../helpers.js';

const dataDir = scratchDirs();
const base = { logger: false as const, threads: 1, slotsPerThread: 2 };
const run = promisify(execFile);
/** The built package, as an app imports it. */
const TROUPE = fileURLToPath(new URL('../../dist/src/index.js', import.meta.url));

/** The databases lmdb-js still holds for the data dir `path` (it keys them by the dir's name, then `-` and the database's). */
function held(path: string, registry: unknown = lmdb): string[] {
  const open = (registry as { allDbs: Map<string, unknown> }).allDbs;
  expect(open).toBeInstanceOf(Map);
  const name = basename(path);
  return [...open.keys()].filter((key) => key === name || key.startsWith(`${name}-`));
}

describe('closing an LMDB data dir', () => {
  it('leaves none of a closed runtime\'s databases in lmdb-js\'s registry, and opening again still works', async () => {
    const path = dataDir();
    const rt = await createRuntime({ ...base, dataDir: path, agents: [builtinAgent('echo')] });
    const task = await rt.wait((await rt.submit({ agent: 'echo', input: 'kept' })).id);
    expect(held(path).length).toBeGreaterThan(10);
    await rt.close();
    expect(held(path)).toEqual([]);
    const again = await createRuntime({ ...base, dataDir: path });
    expect(await again.get(task.id)).toMatchObject({ state: 'done', output: 'kept' });
    await again.close();
    expect(held(path)).toEqual([]);
  });

  it('leaves none after a store reopened in place, a failed open and a compaction', async () => {
    const path = dataDir();
    const store = await openStore({ dataDir: path });
    expect(held(path).length).toBeGreaterThan(10);
    const reopened = await store.reopen();
    expect(held(path).length).toBeGreaterThan(10);
    await reopened.close(true);
    expect(held(path)).toEqual([]);
    // A data dir from a newer schema: the open fails after LMDB mapped it. (This test's own
    // environment stays in the registry under the same keys until the failed open takes them over.)
    const env = lmdb.open({ path });
    await env.openDB({ name: 'meta' }).put('schemaVersion', 99);
    await env.close();
    await expect(openStore({ dataDir: path })).rejects.toMatchObject({ code: 'SCHEMA_MISMATCH' });
    expect(held(path)).toEqual([]);
    const other = dataDir();
    await (await openStore({ dataDir: other })).close(true);
    await compactDataDir(other);
    expect(held(other)).toEqual([]);
  });

  it('leaves none in the registry of lmdb-js\'s CommonJS build when the app opened that one first (a script of its own)', async () => {
    // Once lmdb-js's CommonJS build has opened an environment, every later open in the process goes
    // through it, and so into its registry: the script makes that happen before Troupe opens anything.
    const script = `
      import { createRequire } from 'node:module';
      import { basename } from 'node:path';
      const require = createRequire(${JSON.stringify(import.meta.url)});
      const cjs = require('lmdb');
      await cjs.open({ path: ${JSON.stringify(dataDir())} }).close();
      const { createRuntime } = await import(${JSON.stringify(TROUPE)});
      const path = ${JSON.stringify(dataDir())};
      const held = () => [...cjs.allDbs.keys()].filter((key) => key === basename(path) || key.startsWith(basename(path) + '-')).length;
      const rt = await createRuntime({ dataDir: path, logger: false, threads: 1, slotsPerThread: 2 });
      const open = held();
      await rt.close();
      console.log(JSON.stringify({ open, closed: held() }));`;
    const { stdout } = await run(process.execPath, ['--input-type=module', '-e', script]);
    const counts = JSON.parse(stdout.trim()) as { open: number; closed: number };
    expect(counts.open).toBeGreaterThan(10);
    expect(counts.closed).toBe(0);
  });
});
