/**
 * kill -9 in the middle of a prune, and of a retention sweep: each task is whole (its record,
 * every log line, its retention index entry) or gone (none of them), never half-removed, the
 * settled counts say how many are left, and a prune (or the next sweep) after the reopen
 * finishes the job.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { builtinAgent, createRuntime, type Task } from 'troupe';
import { fixtureAgent, openDataDir, scratchDirs } from '../helpers.js';

const CHILD = new URL('../../dist/test/fixtures/crash/prune-child.js', import.meta.url);
const scratch = scratchDirs();
const TASKS = 1_000;
const LINES = 3;

describe.each(['prune', 'retention'] as const)('kill -9 while removing settled tasks (%s)', (mode) => {
  it('leaves every task whole or gone, and the next pass finishes', async () => {
    const dataDir = join(scratch(), 'data');
    const rt = await createRuntime({ dataDir, logger: false, threads: 2, slotsPerThread: 8, retention: false, agents: [{ name: 'chatty', module: fixtureAgent('chatty') }] });
    const tasks: Task[] = await rt.submitMany(Array.from({ length: TASKS }, () => ({ agent: 'chatty', input: { lines: LINES } })));
    for (const task of tasks) await rt.wait(task.id);
    await rt.close();

    const child = spawn(process.execPath, [CHILD.pathname, dataDir, tasks.at(-1)!.id, mode], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    await new Promise<void>((resolve) => child.stdout.on('data', (chunk: Buffer) => /^first /m.test((out += chunk.toString())) && resolve()));
    child.kill('SIGKILL');
    await once(child, 'exit');

    const dir = await openDataDir(dataDir);
    let gone = 0;
    try {
      const read = dir.read as unknown as Record<string, { get(k: unknown): unknown; keys(o?: unknown): Iterable<unknown> }>;
      const indexed = new Set([...(read.listedStored!.keys() as Iterable<[string, string, string]>)].map((key) => key[2]));
      for (const task of tasks) {
        const lines = [...read.logs!.keys({ start: [task.id, 0, 0, 0], end: [task.id, Number.MAX_SAFE_INTEGER, 0, 0] })].length;
        const stored = read.tasks!.get(task.id) as { settledAt: number } | undefined;
        const present = stored !== undefined;
        expect(lines, `log lines of ${task.id} (${present ? 'present' : 'gone'})`).toBe(present ? LINES : 0);
        expect(indexed.has(task.id), `retention entry of ${task.id} (${present ? 'present' : 'gone'})`).toBe(present);
        if (present) expect(read.listedStored!.get(['chatty', 'done', task.id])).toBe(stored.settledAt);
        if (!present) gone++;
      }
      // The settled counts went down in the commits that removed: they say what is left.
      expect(dir.countSettled()).toEqual(gone < TASKS ? [['chatty', 'done', TASKS - gone]] : []);
    } finally {
      await dir.close(false);
    }
    expect(gone).toBeGreaterThan(0);

    const again = await createRuntime({ dataDir, logger: false, threads: 1, retention: mode === 'retention' ? { done: 0, sweepMs: 1 } : false });
    try {
      if (mode === 'prune') expect(await again.prune()).toMatchObject({ tasks: TASKS - gone, logLines: (TASKS - gone) * LINES });
      else while (again.stats().retention!.removed < TASKS - gone) await new Promise((resolve) => setTimeout(resolve, 5));
      expect((await again.list({ limit: 10 })).tasks).toEqual([]);
      if (mode === 'retention') expect(again.stats().retention!.removed).toBe(TASKS - gone);
    } finally {
      await again.close();
    }
  }, 120_000);
});

describe('kill -9 while truncating the event log', () => {
  it('leaves exactly the events after the last seq it says it removed', async () => {
    const dataDir = join(scratch(), 'data');
    const rt = await createRuntime({ dataDir, logger: false, threads: 1, retention: false, agents: [builtinAgent('echo')] });
    // One task at a time: each commit is one event log record, and the sweep removes 1,000 records per commit.
    let newest = '';
    for (let n = 0; n < 2_500; n++) newest = (await rt.wait((await rt.submit({ agent: 'echo', input: n })).id)).id;
    const before: number[] = [];
    for await (const event of rt.events()) {
      before.push(event.seq);
      if (event.type === 'task.done' && event.taskId === newest) break;
    }
    await rt.close();

    const child = spawn(process.execPath, [CHILD.pathname, dataDir, newest, 'events'], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((resolve) => child.stdout.on('data', (chunk: Buffer) => /^first/m.test(chunk.toString()) && resolve()));
    child.kill('SIGKILL');
    await once(child, 'exit');

    const dir = await openDataDir(dataDir);
    const kept = [...dir.read.events.keys()] as number[];
    await dir.close(false);
    const again = await createRuntime({ dataDir, logger: false, threads: 1, retention: false });
    try {
      expect(kept.length).toBeGreaterThan(0);
      expect(kept.length).toBeLessThan(before.length);
      // Whole commit records went, oldest first: what is left is a tail of what was there.
      expect(kept).toEqual(before.slice(before.length - kept.length));
      const removedThrough = before[before.length - kept.length - 1]!;
      // The cursor of the last removed event is the oldest one still available; one before it has expired.
      const resumed = again.events({ after: removedThrough });
      expect((await resumed.next()).value).toMatchObject({ seq: kept[0] });
      await resumed.return(undefined);
      await expect(again.events({ after: removedThrough - 1 }).next()).rejects.toMatchObject({ code: 'CURSOR_EXPIRED' });
    } finally {
      await again.close();
    }
  }, 120_000);
});
