/**
 * Fail-stop: the first commit that fails stops the store. Here the failure is a value the encoder
 * cannot write, which fails its batch before the transaction (the full-disk crash test makes the
 * same happen with ENOSPC where it may mount a tmpfs): everything after is refused, close writes
 * nothing, and the reopened store holds exactly what was committed before.
 */
import { copyFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { openStore } from '../../src/store/lmdb/store.js';
import type { Store } from '../../src/store/port.js';
import { tempDir } from '../helpers.js';

const cleanups: Array<() => void> = [];
afterEach(() => {
  for (const cleanup of cleanups.splice(0)) cleanup();
});

/** A data dir for one test, removed after it. */
function dataDir(): string {
  const dir = tempDir();
  cleanups.push(dir.cleanup);
  return dir.path;
}

/** Opens the store in `dir`, runs `check` on it, and closes it (clean) whatever happens. */
async function withStore(dir: string, check: (store: Store) => Promise<void> | void): Promise<void> {
  const store = await openStore({ dataDir: dir });
  try {
    await check(store);
  } finally {
    await store.close(true);
  }
}

/** Empties data.mdb until the returned function puts it back: an open meanwhile is STORE_CORRUPT. */
function unreadable(dir: string): () => void {
  const file = join(dir, 'data.mdb');
  copyFileSync(file, `${file}.aside`);
  writeFileSync(file, '');
  return () => renameSync(`${file}.aside`, file);
}

describe('a store whose commit failed', () => {
  it('refuses everything after, writes nothing at close, and reopens with what was durable', async () => {
    const dir = dataDir();
    const store = await openStore({ dataDir: dir });
    const heard: string[] = [];
    store.onFailure((failure) => heard.push(failure.code));
    await store.commit((w) => w.putControl('before', 1));
    // In the same turn: one good change, and one the encoder cannot write: the batch fails whole.
    const good = store.commit((w) => w.putControl('same-batch', 2));
    const bad = store.commit((w) => w.putControl('bad', { big: 2n ** 70n }));
    await expect(bad).rejects.toMatchObject({ code: 'STORE_FAILED' });
    await expect(good).rejects.toMatchObject({ code: 'STORE_FAILED' });
    expect(store.failure).toMatchObject({ code: 'STORE_FAILED', message: expect.stringContaining('the store stopped after a failed commit') });
    expect(heard).toEqual(['STORE_FAILED']);
    // Refused at once, and nothing of it is kept.
    await expect(store.commit((w) => w.putControl('after', 3))).rejects.toBe(store.failure);
    await store.close(true);
    await withStore(dir, async (reopened) => {
      expect(reopened.read.control.get('before')).toBe(1);
      for (const key of ['same-batch', 'bad', 'after']) expect(reopened.read.control.get(key), key).toBeUndefined();
      // Not marked clean: the failed store's close wrote nothing.
      expect(reopened.previousShutdownClean).toBe(false);
      await reopened.commit((w) => w.putControl('again', 4));
      expect(reopened.read.control.get('again')).toBe(4);
    });
  });

  it('writes nothing of a batch issued after one that failed, though it was already on its way', async () => {
    const dir = dataDir();
    const store = await openStore({ dataDir: dir });
    await store.commit((w) => w.putControl('before', 1));
    // Three batches in three turns, each issued while the one before is still committing: the
    // middle one cannot be written, the last would have landed on its own.
    const turn = () => new Promise<void>((resolve) => setImmediate(resolve));
    const first = store.commit((w) => w.putControl('first', 1));
    await turn();
    const bad = store.commit((w) => w.putControl('bad', { big: 2n ** 70n }));
    await turn();
    const last = store.commit((w) => w.putControl('last', 3));
    const outcomes = await Promise.allSettled([first, bad, last]);
    expect(outcomes.map((o) => o.status)).toEqual(['fulfilled', 'rejected', 'rejected']);
    expect((outcomes[2] as PromiseRejectedResult).reason).toMatchObject({ code: 'STORE_FAILED' });
    await store.close(true);
    await withStore(dir, async (reopened) => {
      expect(reopened.read.control.get('first')).toBe(1);
      expect(reopened.read.control.get('last')).toBeUndefined();
      // The chain goes on from what is durable.
      await reopened.commit((w) => w.putControl('again', 4));
      expect(reopened.read.control.get('again')).toBe(4);
    });
    await withStore(dir, (third) => {
      expect(third.read.control.get('again')).toBe(4);
    });
  });

  it('opens its data dir again without letting go of it, as often as it takes', async () => {
    const dir = dataDir();
    const store = await openStore({ dataDir: dir });
    await store.commit((w) => w.putControl('before', 1));
    await expect(store.commit((w) => w.putControl('bad', { big: 2n ** 70n }))).rejects.toMatchObject({ code: 'STORE_FAILED' });
    // A reopen that fails (here the file is unreadable for a moment) leaves the dir locked.
    const restore = unreadable(dir);
    await expect(store.reopen()).rejects.toMatchObject({ code: 'STORE_CORRUPT' });
    await expect(openStore({ dataDir: dir })).rejects.toMatchObject({ code: 'DATA_DIR_LOCKED' });
    restore();
    const reopened = await store.reopen();
    try {
      await expect(openStore({ dataDir: dir })).rejects.toMatchObject({ code: 'DATA_DIR_LOCKED' });
      expect(reopened.failure).toBeUndefined();
      expect(reopened.read.control.get('before')).toBe(1);
      expect(reopened.read.control.get('bad')).toBeUndefined();
      // The old store has nothing more to give: its lock went to the new one.
      await expect(store.reopen()).rejects.toMatchObject({ code: 'CLOSED' });
      await store.close(true);
      await expect(openStore({ dataDir: dir })).rejects.toMatchObject({ code: 'DATA_DIR_LOCKED' });
    } finally {
      await reopened.close(true);
    }
    // Closed for good: the dir is free.
    await withStore(dir, () => undefined);
  });

  it('lets go of the dir at close after a reopen that failed', async () => {
    const dir = dataDir();
    const store = await openStore({ dataDir: dir });
    await expect(store.commit((w) => w.putControl('bad', { big: 2n ** 70n }))).rejects.toMatchObject({ code: 'STORE_FAILED' });
    const restore = unreadable(dir);
    await expect(store.reopen()).rejects.toMatchObject({ code: 'STORE_CORRUPT' });
    await store.close(false);
    restore();
    await withStore(dir, () => undefined);
  });
});
