/**
 * kill -9 in the middle of a prune: each task is whole (its record and every log line) or gone
 * (none of them), never half-removed, and a prune after the reopen finishes the job.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { createRuntime, type Task } from 'troupe';
import { fixtureAgent, openDataDir, scratchDirs } from '../helpers.js';

const CHILD = new URL('../../dist/test/fixtures/crash/prune-child.js', import.meta.url);
const scratch = scratchDirs();
const TASKS = 1_000;
const LINES = 3;

describe('kill -9 while pruning', () => {
  it('leaves every task whole or gone, and the next prune finishes', async () => {
    const dataDir = join(scratch(), 'data');
    const rt = await createRuntime({ dataDir, logger: false, threads: 2, slotsPerThread: 8, agents: [{ name: 'chatty', module: fixtureAgent('chatty') }] });
    const tasks: Task[] = await rt.submitMany(Array.from({ length: TASKS }, () => ({ agent: 'chatty', input: { lines: LINES } })));
    for (const task of tasks) await rt.wait(task.id);
    await rt.close();

    const child = spawn(process.execPath, [CHILD.pathname, dataDir, tasks.at(-1)!.id], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    await new Promise<void>((resolve) => child.stdout.on('data', (chunk: Buffer) => /^first /m.test((out += chunk.toString())) && resolve()));
    child.kill('SIGKILL');
    await once(child, 'exit');

    const dir = await openDataDir(dataDir);
    let gone = 0;
    try {
      const read = dir.read as unknown as Record<string, { get(k: unknown): unknown; keys(o?: unknown): Iterable<unknown> }>;
      for (const task of tasks) {
        const lines = [...read.logs!.keys({ start: [task.id, 0, 0, 0], end: [task.id, Number.MAX_SAFE_INTEGER, 0, 0] })].length;
        const present = read.tasks!.get(task.id) !== undefined;
        expect(lines, `log lines of ${task.id} (${present ? 'present' : 'gone'})`).toBe(present ? LINES : 0);
        if (!present) gone++;
      }
    } finally {
      await dir.close(false);
    }
    expect(gone).toBeGreaterThan(0);

    const again = await createRuntime({ dataDir, logger: false, threads: 1 });
    try {
      expect(await again.prune()).toMatchObject({ tasks: TASKS - gone, logLines: (TASKS - gone) * LINES });
      expect((await again.list({ limit: 10 })).tasks).toEqual([]);
    } finally {
      await again.close();
    }
  }, 120_000);
});
