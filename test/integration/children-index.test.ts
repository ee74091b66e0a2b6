/**
 * The children index: `list({ parentId })` reads a parent's children from it (in submit order,
 * paged, filtered), a data dir from schema 3 gets it built at open, and prune uses it to keep a
 * parent whose child was created after the horizon.
 */
import { join } from 'node:path';
import { open } from 'lmdb';
import { describe, expect, it } from 'vitest';
import { builtinAgent, createRuntime, type Runtime, type Task } from 'troupe';
import { pastMs, scratchDirs } from '../helpers.js';

const scratch = scratchDirs();
const agents = [builtinAgent('echo'), builtinAgent('sleep')];

async function family(rt: Runtime): Promise<{ parent: Task; children: Task[]; other: Task }> {
  const parent = await rt.submit({ agent: 'echo', input: 'parent' });
  const children = await rt.submitMany(Array.from({ length: 5 }, (_, n) => ({ agent: 'echo', input: n, parentId: parent.id })));
  const other = await rt.submit({ agent: 'echo', input: 'not a child' });
  for (const task of [parent, ...children, other]) await rt.wait(task.id);
  return { parent, children, other };
}

describe('the children index', () => {
  it('lists a parent’s children in submit order, paged and filtered', async () => {
    const rt = await createRuntime({ dataDir: scratch(), logger: false, threads: 1, agents });
    try {
      const { parent, children } = await family(rt);
      const first = await rt.list({ parentId: parent.id, limit: 3 });
      expect(first.tasks.map((t) => t.id)).toEqual(children.slice(0, 3).map((t) => t.id));
      const rest = await rt.list({ parentId: parent.id, limit: 3, after: first.next! });
      expect(rest).toEqual({ tasks: [expect.objectContaining({ id: children[3]!.id }), expect.objectContaining({ id: children[4]!.id })], next: null });
      expect((await rt.list({ parentId: parent.id, state: 'failed' })).tasks).toEqual([]);
      expect((await rt.list({ parentId: children[0]!.id })).tasks).toEqual([]);
    } finally {
      await rt.close();
    }
  });

  it('is built at open (after the log replays) for a data dir from schema 3', async () => {
    const dataDir = join(scratch(), 'data');
    const rt = await createRuntime({ dataDir, logger: false, threads: 1, agents });
    const { parent, children } = await family(rt);
    await rt.close();
    // What a schema 3 build left: no index, no flag.
    const env = open({ path: dataDir, noSubdir: false, maxDbs: 24 });
    const index = env.openDB({ name: 'children', sharedStructuresKey: Symbol.for('troupe.structures') });
    await index.clearAsync();
    const meta = env.openDB({ name: 'meta', sharedStructuresKey: Symbol.for('troupe.structures') });
    await meta.put('schemaVersion', 3);
    await meta.remove('childrenIndexed');
    await env.close();

    const again = await createRuntime({ dataDir, logger: false, threads: 1, agents });
    try {
      expect((await again.list({ parentId: parent.id })).tasks.map((t) => t.id)).toEqual(children.map((t) => t.id));
    } finally {
      await again.close();
    }
  });

  it('keeps a parent from a prune while a child created after the horizon stays', async () => {
    const rt = await createRuntime({ dataDir: scratch(), logger: false, threads: 1, agents });
    try {
      const parent = await rt.submit({ agent: 'echo', input: 'parent' });
      await rt.wait(parent.id);
      const horizon = Date.now() + 1;
      await new Promise((resolve) => setTimeout(resolve, 5));
      const child = await rt.submit({ agent: 'echo', input: 'late child', parentId: parent.id });
      const childSettled = (await rt.wait(child.id)).settledAt!;
      expect(await rt.prune({ before: horizon })).toMatchObject({ tasks: 0 });
      expect((await rt.get(parent.id)).state).toBe('done');
      await pastMs(childSettled);
      expect(await rt.prune()).toMatchObject({ tasks: 2 });
      expect((await rt.list({ parentId: parent.id })).tasks).toEqual([]);
    } finally {
      await rt.close();
    }
  });
});
