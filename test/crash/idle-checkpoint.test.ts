/**
 * A store that goes quiet materializes what it holds and truncates its log behind it (rather than
 * waiting for the next busy commit), so a kill -9 after a quiet spell leaves nothing to replay,
 * and nothing is lost: the queued tasks are all there after the restart, in their state.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { open } from 'lmdb';
import { describe, expect, it } from 'vitest';
import { createRuntime } from 'troupe';
import { scratchDirs } from '../helpers.js';

const scratch = scratchDirs();
const INDEX = new URL('../../dist/src/index.js', import.meta.url).pathname;
const TASKS = 500;

/** The log records a data dir holds, read by another process as LMDB allows while the runtime runs. */
function logRecords(dataDir: string): number {
  const env = open({ path: dataDir, noSubdir: false, maxDbs: 24, readOnly: true });
  try {
    return [...env.openDB({ name: 'log' }).getKeys()].length;
  } finally {
    void env.close();
  }
}

describe('a quiet store', () => {
  it('truncates its log without another commit, and a kill -9 then loses nothing', async () => {
    const dataDir = join(scratch(), 'data');
    const child = spawn(process.execPath, ['--input-type=module', '-e', `
      import { createRuntime, builtinAgent } from ${JSON.stringify(INDEX)};
      const rt = await createRuntime({ dataDir: ${JSON.stringify(dataDir)}, logger: false, threads: 1, retention: false, starvation: false, agents: [builtinAgent('echo')] });
      await rt.freeze('hold them');
      const tasks = await rt.submitMany(Array.from({ length: ${TASKS} }, (_, n) => ({ agent: 'echo', input: n })));
      console.log('submitted ' + tasks.map((t) => t.id).join(','));
      setInterval(() => {}, 1000);
    `], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    const ids = await new Promise<string[]>((resolve) => child.stdout!.on('data', (chunk: Buffer) => /submitted (\S+)\n/.test((out += chunk.toString())) && resolve(/submitted (\S+)\n/.exec(out)![1]!.split(','))));
    expect(logRecords(dataDir)).toBeGreaterThan(0);
    // Quiet: within a few seconds (1 s is the longest an entry stays dirty) the log is empty.
    for (let waited = 0; logRecords(dataDir) > 0; waited += 100) {
      expect(waited, 'log records left after a quiet spell').toBeLessThan(10_000);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    child.kill('SIGKILL');
    await once(child, 'exit');

    const rt = await createRuntime({ dataDir, logger: false, threads: 1, retention: false });
    try {
      expect(rt.stats().tasks.queued).toBe(TASKS);
      for (const id of [ids[0]!, ids.at(-1)!]) expect((await rt.get(id)).state).toBe('queued');
    } finally {
      await rt.close();
    }
  }, 60_000);
});
