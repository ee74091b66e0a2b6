/**
 * The settled counts the store keeps in its commits (record-writes.ts), on a real LMDB environment:
 * one per `listed` entry written, minus one per one removed that exists, whether it is in the
 * database already or in a batch that has not landed; stored in the meta database with them, and
 * counted from the index once for a data dir that has none.
 */
import { open, type RootDatabase } from 'lmdb';
import { describe, expect, it } from 'vitest';
import { openDatabases } from '../../src/store/lmdb/databases.js';
import { DB, REMOVAL } from '../../src/store/lmdb/layout.js';
import { RecordWrites, storedCounts } from '../../src/store/lmdb/record-writes.js';
import type { DirtyEntry } from '../../src/store/lmdb/overlay.js';
import { createTaskRecord, type TaskRecord } from '../../src/store/records.js';
import { scratchDirs } from '../helpers.js';

const scratch = scratchDirs();

function settled(id: string, agent: string, state: TaskRecord['state']): TaskRecord {
  const record = createTaskRecord({ id, agent, state, input: null, priority: 0, lane: 'default', instanceKey: `${agent}/default/x`, labels: {}, timeoutMs: 0, retry: { maxAttempts: 1 } as never, runReason: 'submit', createdAt: 1 });
  return { ...record, settledAt: 2 };
}

function setup(dir: string) {
  const root: RootDatabase = open({ path: dir, noSubdir: false, maxDbs: 24 });
  const d = openDatabases(root);
  const meta = root.openDB<unknown, string>({ name: 'meta', sharedStructuresKey: Symbol.for('troupe.structures') });
  const records = new RecordWrites(d.dbs, d.encoders);
  records.loadCounts(meta);
  /** One batch's transaction, issued now and landing later (as the store's are). */
  const batch = (no: number, write: () => void) => {
    records.batch = no;
    return root.transaction(() => {
      write();
      records.writeCounts(meta);
    });
  };
  const materialize = (task: TaskRecord) => {
    const entry = { db: DB.tasks, key: task.id, value: task } as DirtyEntry;
    records.materialize(entry, records.prepared(DB.tasks, task));
  };
  const unlist = (task: TaskRecord) => records.writeDirect([DB.listed + REMOVAL, [task.agent, task.state, task.id], null], [undefined]);
  return { root, meta, records, batch, materialize, unlist };
}

describe('the settled counts', () => {
  it('count each settled task once, and a removal only of an entry that is there, landed or not', async () => {
    const { root, meta, records, batch, materialize, unlist } = setup(scratch());
    try {
      const a1 = settled('a1', 'a', 'done');
      const a2 = settled('a2', 'a', 'done');
      const b1 = settled('b1', 'b', 'failed');
      // Batch 1 settles three; batch 2, issued before 1 lands, retries one of them and removes one never written.
      const first = batch(1, () => {
        materialize(a1);
        materialize(a2);
        materialize(b1);
      });
      const second = batch(2, () => {
        unlist(a2);
        unlist(settled('zz', 'a', 'done'));
      });
      await Promise.all([first, second]);
      records.landed(2);
      expect(storedCounts(meta)).toEqual([['a', 'done', 1], ['b', 'failed', 1]]);
      // Written again (as a close could): still one.
      await batch(3, () => materialize(a1));
      records.landed(3);
      expect(storedCounts(meta)).toEqual([['a', 'done', 1], ['b', 'failed', 1]]);
      // Removed from the database after it landed; removed twice: once.
      await batch(4, () => {
        unlist(b1);
        unlist(b1);
      });
      records.landed(4);
      expect(storedCounts(meta)).toEqual([['a', 'done', 1]]);
    } finally {
      await root.close();
    }
  });

  it('are counted from the listed index for a data dir that has none, and stored with the next write', async () => {
    const dir = scratch();
    const first = setup(dir);
    for (const id of ['x1', 'x2', 'x3']) await first.batch(1, () => first.materialize(settled(id, 'x', 'cancelled')));
    await first.meta.remove('settledCounts');
    await first.root.close();
    const again = setup(dir);
    try {
      expect(storedCounts(again.meta)).toBeUndefined();
      await again.batch(2, () => undefined);
      expect(storedCounts(again.meta)).toEqual([['x', 'cancelled', 3]]);
    } finally {
      await again.root.close();
    }
  });
});
