/**
 * What a batch logs (net-changes.ts) and how a batch ends (batch-writer.ts), without LMDB: a
 * record written in its own commit always leaves its marker in the log, and a batch that fails
 * with nobody waiting on it does not end the process.
 */
import { describe, expect, it } from 'vitest';
import { newBatch } from '../../src/store/lmdb/batch-writer.js';
import { DB, FINAL, PATCH } from '../../src/store/lmdb/layout.js';
import { netChanges } from '../../src/store/lmdb/net-changes.js';
import { Overlay } from '../../src/store/lmdb/overlay.js';
import { createTaskRecord, type TaskRecord } from '../../src/store/records.js';

function task(state: TaskRecord['state']): TaskRecord {
  return createTaskRecord({ id: 't1', agent: 'a', state, input: null, priority: 0, lane: 'default', instanceKey: 'a/default/x', labels: {}, timeoutMs: 0, retry: { maxAttempts: 1 } as never, runReason: 'submit', createdAt: 1 });
}

describe('netChanges', () => {
  it('logs the marker of a record written in its own commit even when the overlay holds nothing of it', () => {
    // Its earlier version was written and left the overlay; its changes may still be in the log.
    const overlay = new Overlay(DB.tasks + 1);
    const batch = newBatch(7);
    batch.ops.push(DB.tasks + FINAL, 't1', task('done'));
    netChanges(overlay, batch, 0);
    expect(batch.ops).toEqual([DB.tasks + FINAL, 't1', null]);
  });

  it('logs a later change of a record the overlay holds as a patch, and a settle of it as the marker', () => {
    const overlay = new Overlay(DB.tasks + 1);
    const first = newBatch(1);
    first.ops.push(DB.tasks, 't1', task('queued'));
    netChanges(overlay, first, 0);
    expect(first.ops[0]).toBe(DB.tasks);
    const second = newBatch(2);
    second.ops.push(DB.tasks, 't1', task('running'));
    netChanges(overlay, second, 0);
    expect(second.ops[0]).toBe(DB.tasks + PATCH);
    const third = newBatch(3);
    third.ops.push(DB.tasks + FINAL, 't1', task('done'));
    netChanges(overlay, third, 0);
    expect(third.ops).toEqual([DB.tasks + FINAL, 't1', null]);
  });
});

describe('a batch', () => {
  it('that fails with nobody waiting on it (a quiet store’s commit) leaves no unhandled rejection', async () => {
    const unhandled: unknown[] = [];
    const record = (reason: unknown) => unhandled.push(reason);
    process.on('unhandledRejection', record);
    try {
      newBatch(1, true).reject(new Error('disk full'));
      // Rejections nobody handled are reported once the microtasks have run.
      await new Promise((resolve) => setImmediate(resolve));
      await new Promise((resolve) => setImmediate(resolve));
      expect(unhandled).toEqual([]);
    } finally {
      process.off('unhandledRejection', record);
    }
  });

  it('still rejects for whoever waits on it', async () => {
    const batch = newBatch(2);
    batch.reject(new Error('disk full'));
    await expect(batch.done).rejects.toThrow('disk full');
  });
});
