/**
 * stats() counts settled tasks from the counts the store keeps in its commits: right after a
 * reopen it reads them (not the indexes), they follow settles, retries and prunes, and a data dir
 * without them (from before they were kept) has them counted once at open.
 */
import { join } from 'node:path';
import { open } from 'lmdb';
import { describe, expect, it } from 'vitest';
import { builtinAgent, createRuntime } from 'troupe';
import { scratchDirs } from '../helpers.js';

const scratch = scratchDirs();
const agents = [builtinAgent('echo'), builtinAgent('fail', { retry: { maxAttempts: 1 } })];

/** Sets (or with undefined, removes) the stored settled counts of a closed data dir. */
async function setStoredCounts(dataDir: string, counts: unknown): Promise<void> {
  const env = open({ path: dataDir, noSubdir: false, maxDbs: 24 });
  const meta = env.openDB({ name: 'meta', sharedStructuresKey: Symbol.for('troupe.structures') });
  if (counts === undefined) await meta.remove('settledCounts');
  else await meta.put('settledCounts', counts);
  await env.close();
}

describe('the settled counts kept in the commits', () => {
  it('follow settles, retries and prunes, and are what stats() reads after a reopen', async () => {
    const dataDir = join(scratch(), 'data');
    const rt = await createRuntime({ dataDir, logger: false, threads: 1, agents, retention: false });
    const done = await rt.submitMany(Array.from({ length: 5 }, (_, n) => ({ agent: 'echo', input: n })));
    const failed = await rt.submitMany(Array.from({ length: 3 }, () => ({ agent: 'fail', input: { mode: 'fatal' } })));
    for (const task of [...done, ...failed]) await rt.wait(task.id);
    await rt.retry(failed[0]!.id);
    await rt.wait(failed[0]!.id);
    await rt.prune({ states: ['done'], before: Date.now() + 1 });
    expect(rt.stats().tasks).toMatchObject({ done: 0, failed: 3 });
    await rt.close();

    // What stats() reads after a reopen is the stored counts, not the indexes.
    await setStoredCounts(dataDir, [['fail', 'failed', 41], ['echo', 'done', 1]]);
    const again = await createRuntime({ dataDir, logger: false, threads: 1, agents, retention: false });
    try {
      expect(again.stats().tasks).toMatchObject({ done: 1, failed: 41 });
      expect(again.stats().agents.fail!.tasks).toEqual({ failed: 41 });
      // And what the next commits count on from.
      await again.wait((await again.submit({ agent: 'fail', input: { mode: 'fatal' } })).id);
    } finally {
      await again.close();
    }
    const reread = await createRuntime({ dataDir, logger: false, threads: 1, agents, retention: false });
    try {
      expect(reread.stats().tasks).toMatchObject({ done: 1, failed: 42 });
    } finally {
      await reread.close();
    }

    // Without them, they are counted from the index once, at open.
    await setStoredCounts(dataDir, undefined);
    const third = await createRuntime({ dataDir, logger: false, threads: 1, agents, retention: false });
    try {
      expect(third.stats().tasks).toMatchObject({ done: 0, failed: 4 });
      const one = await third.submit({ agent: 'echo', input: 'one more' });
      await third.wait(one.id);
      expect(third.stats().tasks).toMatchObject({ done: 1, failed: 4 });
    } finally {
      await third.close();
    }
    const fourth = await createRuntime({ dataDir, logger: false, threads: 1, agents, retention: false });
    try {
      expect(fourth.stats().tasks).toMatchObject({ done: 1, failed: 4 });
    } finally {
      await fourth.close();
    }
  });
});
