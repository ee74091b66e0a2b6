/**
 * `list()` by state, agent and labels: settled tasks come from the `listed` and `labelled`
 * indexes, merged in id order with the active ones. The same pages come out while the settled
 * records are still in the overlay (just settled) and once they are in their databases (after a
 * reopen); a retry and a prune take a task out; a data dir from schema 5 gets the indexes at open.
 */
import { join } from 'node:path';
import { open } from 'lmdb';
import { describe, expect, it } from 'vitest';
import { builtinAgent, createRuntime, type ListOptions, type Runtime, type Task } from 'troupe';
import { pastMs, scratchDirs } from '../helpers.js';

const scratch = scratchDirs();
const agents = [builtinAgent('echo'), builtinAgent('fail', { retry: { maxAttempts: 1 } }), builtinAgent('sleep')];
const LONG = 'v'.repeat(1_100);

interface World {
  done: Task[];
  failed: Task[];
  cancelled: Task[];
  running: Task;
}

/** Settled tasks of three agents in three states, interleaved, with labels, and one still running. */
async function world(rt: Runtime): Promise<World> {
  const out: World = { done: [], failed: [], cancelled: [], running: undefined as never };
  for (let n = 0; n < 4; n++) {
    out.done.push(await rt.submit({ agent: 'echo', input: n, labels: { team: n % 2 ? 'b' : 'a', ...(n === 2 ? { model: 'x', huge: LONG } : {}) } }));
    out.failed.push(await rt.submit({ agent: 'fail', input: { mode: 'fatal' }, labels: { team: 'a' } }));
    const slow = await rt.submit({ agent: 'sleep', input: { ms: 60_000 } });
    await rt.cancel(slow.id);
    out.cancelled.push(slow);
  }
  out.running = await rt.submit({ agent: 'sleep', input: { ms: 60_000 }, labels: { team: 'a' } });
  for (const task of [...out.done, ...out.failed, ...out.cancelled]) await rt.wait(task.id);
  return out;
}

/** Every page of a list, `limit` at a time, as ids. */
async function allPages(rt: Runtime, options: ListOptions, limit = 2): Promise<string[]> {
  const ids: string[] = [];
  let after: string | undefined;
  for (;;) {
    const page = await rt.list({ ...options, limit, ...(after === undefined ? {} : { after }) });
    ids.push(...page.tasks.map((t) => t.id));
    if (page.next === null) return ids;
    after = page.next;
  }
}

const ids = (tasks: Task[]) => tasks.map((t) => t.id).sort();

/** What every filter must list, in id order. */
async function expectPages(rt: Runtime, w: World): Promise<void> {
  expect(await allPages(rt, { state: 'done' })).toEqual(ids(w.done));
  expect(await allPages(rt, { state: 'failed' })).toEqual(ids(w.failed));
  expect(await allPages(rt, { state: 'cancelled' }, 3)).toEqual(ids(w.cancelled));
  expect(await allPages(rt, { agent: 'sleep' })).toEqual(ids([...w.cancelled, w.running]));
  expect(await allPages(rt, { agent: 'fail', state: 'failed' })).toEqual(ids(w.failed));
  expect(await allPages(rt, { agent: 'echo', state: 'failed' })).toEqual([]);
  expect(await allPages(rt, {}, 5)).toEqual(ids([...w.done, ...w.failed, ...w.cancelled, w.running]));
  expect(await allPages(rt, { labels: { team: 'a' } })).toEqual(ids([w.done[0]!, w.done[2]!, ...w.failed, w.running]));
  expect(await allPages(rt, { labels: { team: 'a' }, state: 'done' })).toEqual(ids([w.done[0]!, w.done[2]!]));
  expect(await allPages(rt, { labels: { team: 'a', model: 'x' } })).toEqual([w.done[2]!.id]);
  // A label too long for the index is still matched, on what a shorter one finds.
  expect(await allPages(rt, { labels: { huge: LONG, team: 'a' } })).toEqual([w.done[2]!.id]);
  expect(await allPages(rt, { labels: { team: 'c' } })).toEqual([]);
}

describe('list() from the indexes of settled tasks', () => {
  it('pages by state, agent and labels in id order, the same before and after the records reach their databases', async () => {
    const dataDir = scratch();
    const rt = await createRuntime({ dataDir, logger: false, threads: 1, slotsPerThread: 4, agents });
    let w: World;
    try {
      w = await world(rt);
      await expectPages(rt, w);
    } finally {
      await rt.close({ force: true });
    }
    // The running task is queued again at open; everything settled is in its database now.
    const again = await createRuntime({ dataDir, logger: false, threads: 1, slotsPerThread: 4, agents });
    try {
      await expectPages(again, w);
    } finally {
      await again.close({ force: true });
    }
  });

  it('lists a task settled in a commit still in flight under its new state', async () => {
    const rt = await createRuntime({ dataDir: scratch(), logger: false, threads: 1, agents });
    try {
      const later = await rt.submit({ agent: 'echo', input: 1, delayMs: 3_600_000, labels: { team: 'a' } });
      // The cancel is decided at once; its commit lands turns later: the list reads it before.
      const cancelling = rt.cancel(later.id);
      const [cancelled, labelled, sleeping] = await Promise.all([rt.list({ state: 'cancelled' }), rt.list({ labels: { team: 'a' }, state: 'cancelled' }), rt.list({ state: 'sleeping' })]);
      expect((await cancelling).state).toBe('cancelled');
      expect(cancelled.tasks.map((t) => [t.id, t.state])).toEqual([[later.id, 'cancelled']]);
      expect(labelled.tasks.map((t) => t.id)).toEqual([later.id]);
      expect(sleeping.tasks).toEqual([]);
    } finally {
      await rt.close();
    }
  });

  it('takes a retried task out of the state it settled in, and a pruned one out of every list', async () => {
    const dataDir = scratch();
    const rt = await createRuntime({ dataDir, logger: false, threads: 1, agents });
    try {
      const failed = await rt.submit({ agent: 'fail', input: { mode: 'fatal' }, labels: { team: 'a' } });
      const done = await rt.submit({ agent: 'echo', input: 1, labels: { team: 'a' } });
      await rt.wait(failed.id);
      await rt.wait(done.id);
      await rt.retry(failed.id);
      await rt.wait(failed.id);
      // Failed again: one entry, not two.
      expect(await allPages(rt, { state: 'failed' })).toEqual([failed.id]);
      // Read in the turn the retry resolves in: no attempt of the new run can have ended yet.
      await rt.retry(failed.id);
      const [failedNow, all] = await Promise.all([rt.list({ state: 'failed' }), rt.list({ agent: 'fail' })]);
      expect(failedNow.tasks).toEqual([]);
      expect(all.tasks).toEqual([expect.objectContaining({ id: failed.id, state: expect.stringMatching(/^(queued|running)$/) })]);
      await pastMs((await rt.wait(failed.id)).settledAt!);
      expect(await rt.prune()).toMatchObject({ tasks: 2 });
      for (const options of [{}, { state: 'failed' }, { state: 'done' }, { agent: 'echo' }, { labels: { team: 'a' } }] as ListOptions[]) {
        expect((await rt.list(options)).tasks).toEqual([]);
      }
    } finally {
      await rt.close();
    }
    // Nothing of them is left in either index.
    const env = open({ path: dataDir, noSubdir: false, maxDbs: 24 });
    try {
      for (const name of ['listed', 'labelled']) expect([...env.openDB({ name, sharedStructuresKey: Symbol.for('troupe.structures') }).getKeys()]).toEqual([]);
    } finally {
      await env.close();
    }
  });

  it('is built at open for a data dir from schema 5', async () => {
    const dataDir = join(scratch(), 'data');
    const rt = await createRuntime({ dataDir, logger: false, threads: 1, agents });
    const done = await rt.submit({ agent: 'echo', input: 1, labels: { team: 'a' } });
    const failed = await rt.submit({ agent: 'fail', input: { mode: 'fatal' } });
    await rt.wait(done.id);
    await rt.wait(failed.id);
    await rt.close();
    // What a schema 5 build left: neither index, no flag.
    const env = open({ path: dataDir, noSubdir: false, maxDbs: 24 });
    for (const name of ['listed', 'labelled']) await env.openDB({ name, sharedStructuresKey: Symbol.for('troupe.structures') }).clearAsync();
    const meta = env.openDB({ name: 'meta', sharedStructuresKey: Symbol.for('troupe.structures') });
    await meta.put('schemaVersion', 5);
    await meta.remove('listedIndexed');
    await env.close();

    const again = await createRuntime({ dataDir, logger: false, threads: 1, agents });
    try {
      expect(await allPages(again, { state: 'failed' })).toEqual([failed.id]);
      expect(await allPages(again, { labels: { team: 'a' } })).toEqual([done.id]);
    } finally {
      await again.close();
    }
  });

  it('refuses a bad label filter with INVALID_INPUT, and an unknown option with INVALID_OPTIONS', async () => {
    const rt = await createRuntime({ dataDir: scratch(), logger: false, threads: 1, agents });
    try {
      for (const labels of [null, 'team=a', ['a'], { team: 1 }, new Map([['team', 'a']])]) {
        await expect(rt.list({ labels } as never)).rejects.toMatchObject({ code: 'INVALID_INPUT', message: expect.stringContaining('labels') });
      }
      await expect(rt.list({ labels: { huge: LONG } })).rejects.toMatchObject({ code: 'INVALID_INPUT', message: expect.stringContaining('indexed') });
      await expect(rt.list({ label: { team: 'a' } } as never)).rejects.toMatchObject({ code: 'INVALID_OPTIONS' });
    } finally {
      await rt.close();
    }
  });
});
