/**
 * The settled counts the store keeps in its commits, on a real store: one per settled version
 * written (its `listed` entry), one less per entry removed; a retry decided in the batch that
 * settled the task removes nothing, since that settled version is never written; stored in the
 * meta database with the entries, and counted from the index once for a data dir that has none.
 */
import { open } from 'lmdb';
import { describe, expect, it } from 'vitest';
import { openStore } from '../../src/store/lmdb/store.js';
import type { Store } from '../../src/store/port.js';
import { createTaskRecord, type TaskRecord } from '../../src/store/records.js';
import { scratchDirs } from '../helpers.js';

const scratch = scratchDirs();

function task(id: string, agent: string, state: TaskRecord['state']): TaskRecord {
  const record = createTaskRecord({ id, agent, state, input: null, priority: 0, lane: 'default', instanceKey: `${agent}/default/x`, labels: {}, timeoutMs: 0, retry: { maxAttempts: 1 } as never, runReason: 'submit', createdAt: 1 });
  return state === 'done' || state === 'failed' || state === 'dropped' || state === 'cancelled' ? { ...record, settledAt: 2 } : record;
}
const settle = (store: Store, t: TaskRecord) => store.commit((w) => w.putTask(t, true));
const retry = (store: Store, settled: TaskRecord) =>
  store.commit((w) => {
    w.putTask({ ...settled, state: 'queued', settledAt: undefined });
    w.unindexSettled(settled);
  });
const listed = (store: Store) => [...store.read.listed.keys()];

describe('the settled counts', () => {
  it('count each settled version written, and a retry or prune of one written; a retry in the settle’s own batch touches neither', async () => {
    const dataDir = scratch();
    const store = await openStore({ dataDir });
    try {
      const a1 = task('a1', 'a', 'done');
      const a2 = task('a2', 'a', 'done');
      const b1 = task('b1', 'b', 'failed');
      // One turn: three settle, and one of them is retried before its batch is flushed.
      await Promise.all([settle(store, a1), settle(store, a2), settle(store, b1), retry(store, a2)]);
      expect(store.countSettled()).toEqual([['a', 'done', 1], ['b', 'failed', 1]]);
      expect(listed(store)).toEqual([['a', 'done', 'a1'], ['b', 'failed', 'b1']]);
      // Retried in a later batch (its settle written): its entry goes, and the count with it.
      await retry(store, b1);
      expect(store.countSettled()).toEqual([['a', 'done', 1]]);
      // Settled again, as done this time.
      await settle(store, { ...b1, state: 'done' });
      expect(store.countSettled()).toEqual([['a', 'done', 1], ['b', 'done', 1]]);
      // Pruned.
      await store.commit((w) => {
        w.remove('tasks', 'a1');
        w.unindexSettled(a1);
      });
      expect(store.countSettled()).toEqual([['b', 'done', 1]]);
      expect(listed(store)).toEqual([['b', 'done', 'b1']]);
    } finally {
      await store.close(true);
    }
  });

  it('are counted from the listed index for a data dir that has none, and stored at open', async () => {
    const dataDir = scratch();
    const first = await openStore({ dataDir });
    for (const id of ['x1', 'x2', 'x3']) await settle(first, task(id, 'x', 'cancelled'));
    await first.close(true);
    const env = open({ path: dataDir, noSubdir: false, maxDbs: 24 });
    await env.openDB({ name: 'meta', sharedStructuresKey: Symbol.for('troupe.structures') }).remove('settledCounts');
    await env.close();
    const again = await openStore({ dataDir });
    try {
      expect(again.countSettled()).toEqual([['x', 'cancelled', 3]]);
    } finally {
      await again.close(true);
    }
  });
});
