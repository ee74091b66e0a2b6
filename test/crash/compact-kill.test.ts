/**
 * `troupe compact`: free pages go back to the disk, everything in the store stays (its clean
 * shutdown mark too), a held or missing data dir is refused, and a kill -9 before or after the
 * compacted file is renamed into place leaves a store that opens with every task.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { builtinAgent, createRuntime, type Task } from 'troupe';
import { holdInChild, runCli, scratchDirs } from '../helpers.js';

const CHILD = new URL('../../dist/test/fixtures/crash/compact-child.js', import.meta.url);
const scratch = scratchDirs();

/** A data dir closed cleanly after 200 tasks with 8 KB inputs: its log records were freed at checkpoints. */
async function filledDataDir(): Promise<{ dataDir: string; tasks: Task[] }> {
  const dataDir = join(scratch(), 'data');
  const rt = await createRuntime({ dataDir, logger: false, threads: 1, agents: [builtinAgent('echo')] });
  const tasks = await Promise.all(Array.from({ length: 200 }, (_, n) => rt.submit({ agent: 'echo', input: { n, pad: 'x'.repeat(8_000) } })));
  for (const task of tasks) await rt.wait(task.id);
  await rt.close();
  return { dataDir, tasks };
}

async function expectAll(dataDir: string, tasks: Task[]): Promise<void> {
  const rt = await createRuntime({ dataDir, logger: false, threads: 1, agents: [builtinAgent('echo')] });
  try {
    expect(rt.stats().rebuild.previousShutdownClean).toBe(true);
    const done = await rt.list({ state: 'done', limit: 1_000 });
    expect(done.tasks.map((t) => t.id).sort()).toEqual(tasks.map((t) => t.id).sort());
    expect(await rt.get(tasks[7]!.id)).toMatchObject({ output: { n: 7 } });
  } finally {
    await rt.close();
  }
}

describe('troupe compact', () => {
  it('gives free pages back and keeps every task and the clean shutdown mark', async () => {
    const { dataDir, tasks } = await filledDataDir();
    const before = statSync(join(dataDir, 'data.mdb')).size;
    const result = await runCli(['--data-dir', dataDir, '--json', 'compact']);
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    const info = JSON.parse(result.stdout) as { before: number; after: number };
    expect(info.before).toBe(before);
    expect(info.after).toBe(statSync(join(dataDir, 'data.mdb')).size);
    expect(info.after).toBeLessThan(before);
    expect(existsSync(join(dataDir, '.compacting'))).toBe(false);
    // The new file is as private as the one it replaced.
    expect(statSync(join(dataDir, 'data.mdb')).mode & 0o777).toBe(0o600);
    await expectAll(dataDir, tasks);
  });

  it('refuses a data dir a runtime holds, and a path with no store', async () => {
    const { dataDir } = await filledDataDir();
    const before = statSync(join(dataDir, 'data.mdb'));
    const holder = await holdInChild(dataDir);
    try {
      const held = await runCli(['--data-dir', dataDir, 'compact']);
      expect(held.code).toBe(1);
      expect(held.stderr).toMatch(/^troupe: DATA_DIR_LOCKED: /);
      expect(statSync(join(dataDir, 'data.mdb')).ino).toBe(before.ino);
    } finally {
      holder.kill('SIGKILL');
      await once(holder, 'exit');
    }
    const none = await runCli(['--data-dir', join(dataDir, 'nothing'), 'compact']);
    expect(none.code).toBe(2);
    expect(none.stderr).toMatch(/^troupe: NO_DATA_DIR: /);
  });

  for (const stage of ['copied', 'replaced'] as const) {
    it(`loses nothing when killed -9 once the copy is ${stage === 'copied' ? 'written but not in place' : 'in place'}, and compacts again after`, async () => {
      const { dataDir, tasks } = await filledDataDir();
      const before = statSync(join(dataDir, 'data.mdb')).size;
      const child = spawn(process.execPath, [CHILD.pathname, dataDir, stage], { stdio: ['ignore', 'pipe', 'inherit'] });
      let out = '';
      await new Promise<void>((resolve) => child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()).includes(`${stage}\n`) && resolve()));
      child.kill('SIGKILL');
      await once(child, 'exit');
      const size = statSync(join(dataDir, 'data.mdb')).size;
      if (stage === 'copied') expect(size).toBe(before);
      else expect(size).toBeLessThan(before);
      await expectAll(dataDir, tasks);
      // The leftover work directory is cleared by the next compaction.
      const again = await runCli(['--data-dir', dataDir, 'compact']);
      expect(again.code).toBe(0);
      expect(existsSync(join(dataDir, '.compacting'))).toBe(false);
      await expectAll(dataDir, tasks);
    }, 60_000);
  }
});
