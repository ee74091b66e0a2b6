/**
 * The replay at open, on a real LMDB environment: each key gets the version its log ops end on,
 * read newest first (a put, a put patched, a version the database had with the patches after it,
 * a removal, a key whose latest op says its database has it), and the active index follows.
 */
import { open, type RootDatabase } from 'lmdb';
import { describe, expect, it } from 'vitest';
import { openDatabases } from '../../src/store/lmdb/databases.js';
import { DB, FINAL, PATCH, REMOVAL } from '../../src/store/lmdb/layout.js';
import { taskCodec } from '../../src/store/lmdb/codec.js';
import { replayLog } from '../../src/store/lmdb/replay.js';
import { createTaskRecord, type TaskRecord } from '../../src/store/records.js';
import { scratchDirs } from '../helpers.js';

const scratch = scratchDirs();

function task(id: string, state: TaskRecord['state'] = 'queued'): TaskRecord {
  return createTaskRecord({ id, agent: 'a', state, input: null, priority: 0, lane: 'default', instanceKey: 'a/default/x', labels: {}, timeoutMs: 0, retry: { maxAttempts: 1 } as never, runReason: 'submit', createdAt: 1 });
}
const put = (t: TaskRecord) => [DB.tasks, t.id, t];
const patch = (before: TaskRecord, after: TaskRecord) => [DB.tasks + PATCH, after.id, taskCodec.diff(before, after)];
const final = (id: string) => [DB.tasks + FINAL, id, null];
const removal = (id: string) => [DB.tasks + REMOVAL, id, null];

describe('replayLog', () => {
  it('writes each key the version its ops end on, and the active index with it', async () => {
    const root: RootDatabase = open({ path: scratch(), noSubdir: false, maxDbs: 24 });
    try {
      const d = openDatabases(root);
      const meta = root.openDB<unknown, string>({ name: 'meta', sharedStructuresKey: Symbol.for('troupe.structures') });
      const tasks = d.dbs[DB.tasks]!;
      // Before the checkpoint: t3 and t4 are in their database, t3 running, t4 as the settle wrote it.
      const t3 = { ...task('t3'), state: 'running' as const, attempts: 1 };
      const t4done = { ...task('t4', 'done'), settledAt: 5 };
      await tasks.put('t3', t3);
      await tasks.put('t4', { ...t4done, updatedAt: 99 });
      await meta.put('checkpoint', 4);
      const t1 = task('t1');
      const t1running = { ...t1, state: 'running' as const, attempts: 1 };
      const t2 = task('t2');
      const t2running = { ...t2, state: 'running' as const };
      const t2done = { ...t2running, state: 'done' as const, settledAt: 9 };
      const t3done = { ...t3, state: 'failed' as const, settledAt: 7 };
      const t5 = task('t5');
      await d.log.put(4, { ops: [...put(task('old'))] });
      await d.log.put(5, { ops: [...put(t1), ...put(t2), ...put(t5)] });
      await d.log.put(6, { ops: [...patch(t1, t1running), ...patch(t2, t2running), ...patch(t3, t3done)] });
      // t2 settles: its database has it (final); t4's final record was written, and then patched.
      await d.log.put(7, { ops: [...final('t2'), ...final('t4'), ...removal('t5')] });
      await d.log.put(8, { ops: [...patch(t4done, { ...t4done, updatedAt: 100 }), ...patch(t1running, { ...t1running, attempts: 2 })] });
      await tasks.put('t2', t2done);

      expect(replayLog(root, d.dbs, d.log, meta)).toBe(8);

      // Its two patches, oldest first.
      expect(tasks.get('t1')).toEqual({ ...t1running, attempts: 2 });
      expect(tasks.get('t2')).toEqual(t2done);
      expect(tasks.get('t3')).toEqual(t3done);
      expect(tasks.get('t4')).toEqual({ ...t4done, updatedAt: 100 });
      expect(tasks.get('t5')).toBeUndefined();
      expect(tasks.get('old')).toBeUndefined();
      expect([...d.dbs[DB.active]!.getKeys()]).toEqual(['t1']);
      expect([...d.log.getKeys()]).toEqual([]);
      expect(meta.get('checkpoint')).toBe(8);
    } finally {
      await root.close();
    }
  });
});
