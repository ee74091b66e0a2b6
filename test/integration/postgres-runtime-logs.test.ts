/**
 * `rt.logs()` across runtimes sharing one database (issue #15): lines an agent writes on one
 * runtime are read, and followed live, from another, with no gap and no duplicate, by a follow
 * started before the first line and by one started from a cursor while lines come; a reader who
 * sees a task settled, on any runtime, reads all its lines.
 */
import { describe, expect, it } from 'vitest';
import type { LogLine, Runtime } from 'troupe';
import { fixtureAgent, scratchPools } from '../helpers.js';
import { pgRuntimes } from '../pg-runtime.js';
import { readLines } from './contract.js';

// Runtimes close (pgRuntimes' hook, registered second, runs first) before their databases are dropped.
const pools = scratchPools();
const runtime = pgRuntimes();

const logging = { name: 'logging', module: fixtureAgent('logging'), retry: { maxAttempts: 2, backoff: 'fixed' as const, delayMs: 1 } };

/** Follows `id` on `rt`, and once `at` lines have come, starts a second follow after the last of them; resolves with both. */
async function followTwice(rt: Runtime, id: string, at: number): Promise<[LogLine[], LogLine[]]> {
  const first: LogLine[] = [];
  let second: Promise<LogLine[]> | undefined;
  for await (const line of rt.logs(id, { follow: true })) {
    first.push(line);
    if (first.length === at) second = readLines(rt, id, { after: line.cursor, follow: true });
  }
  return [first, await second!];
}

describe('logs on PostgreSQL across runtimes', () => {
  it('follows on one runtime the lines an agent writes on another, from before the first line and from a cursor, to the settle', async () => {
    const { url } = await pools({ migrated: false });
    const worker = await runtime(url, { agents: [logging] });
    const reader = await runtime(url);
    await worker.freeze();
    const task = await worker.submit({ agent: 'logging', input: { lines: 400, failAttempts: 1 } });
    const following = followTwice(reader, task.id, 250);
    await worker.unfreeze();
    const [first, second] = await following;
    expect(await reader.get(task.id)).toMatchObject({ state: 'done', attempts: 2 });
    const stored = await readLines(worker, task.id);
    expect(stored).toHaveLength(800);
    expect(first).toEqual(stored);
    expect(second).toEqual(stored.slice(250));
    expect(stored.map((l) => l.message)).toEqual([1, 2].flatMap((attempt) => Array.from({ length: 400 }, (_, i) => `attempt ${attempt} line ${i}`)));
  });

  it('a task settled, as another runtime sees it, has all its lines stored', async () => {
    const { url } = await pools({ migrated: false });
    const worker = await runtime(url, { agents: [logging], slotsPerThread: 4 });
    const reader = await runtime(url);
    const tasks = await worker.submitMany(Array.from({ length: 20 }, (_, n) => ({ agent: 'logging', input: { lines: 40 + n } })));
    for (const [n, task] of tasks.entries()) {
      await reader.wait(task.id);
      expect((await readLines(reader, task.id)).length, task.id).toBe(40 + n);
    }
  });
});
