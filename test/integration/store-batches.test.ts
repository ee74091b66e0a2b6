/**
 * Group commit on the real LMDB store: what one turn commits shares one transaction, published in
 * order with each change and event exactly once, and durable.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { openStore } from '../../src/store/lmdb/store.js';
import type { EventRecord } from '../../src/store/records.js';
import { tempDir } from '../helpers.js';

const cleanups: Array<() => void> = [];
afterEach(() => {
  for (const cleanup of cleanups.splice(0)) cleanup();
});

async function open(): Promise<{ store: Awaited<ReturnType<typeof openStore>>; batches: EventRecord[][]; dataDir: string }> {
  const dir = tempDir();
  cleanups.push(dir.cleanup);
  const batches: EventRecord[][] = [];
  const store = await openStore({ dataDir: dir.path, onCommitted: (events) => batches.push(events) });
  return { store, batches, dataDir: dir.path };
}

/** Commits `n` changes in one turn, each putting control key `k<i>` with one event. */
function commitInOneTurn(store: Awaited<ReturnType<typeof openStore>>, n: number): Promise<unknown> {
  const done: Array<Promise<unknown>> = [];
  for (let i = 0; i < n; i++) {
    done.push(
      store.commit((w) => {
        w.putControl(`k${i}`, { i });
        w.event('task.progress', { at: 1, data: { value: i } });
      }),
    );
  }
  return Promise.all(done);
}

describe('LMDB store batches', () => {
  it('commits what one turn asks for as one transaction, each change once, in order, all durable', async () => {
    const { store, batches, dataDir } = await open();
    await commitInOneTurn(store, 350);
    expect(batches).toHaveLength(1);
    const events = batches.flat();
    expect(events.map((e) => e.data?.value)).toEqual(Array.from({ length: 350 }, (_, i) => i));
    for (let i = 1; i < events.length; i++) expect(events[i]!.seq).toBe(events[i - 1]!.seq + 1);
    await store.close(true);
    const reopened = await openStore({ dataDir });
    for (let i = 0; i < 350; i++) expect(reopened.read.control.get(`k${i}`)).toEqual({ i });
    await reopened.close(true);
  });

  it('turns that commit while a transaction is in flight are committed after it, in order', async () => {
    const { store, batches } = await open();
    const first = commitInOneTurn(store, 5);
    await new Promise((resolve) => setImmediate(resolve));
    const second = store.commit((w) => w.event('task.progress', { at: 1, data: { value: 5 } }));
    await Promise.all([first, second]);
    expect(batches.flat().map((e) => e.data?.value)).toEqual([0, 1, 2, 3, 4, 5]);
    await store.close(true);
  });
});
