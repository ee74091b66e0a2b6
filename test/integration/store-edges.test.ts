/**
 * Edges of the LMDB store that a runtime meets rarely and must survive: an event log emptied by
 * retention, a step whose writer throws, a damaged event record, a key written again after its
 * record was quarantined. Each goes through the store itself (openStore), as the runtime does.
 */
import { open } from 'lmdb';
import { describe, expect, it } from 'vitest';
import type { QuarantineRecord, Store } from '../../src/store/port.js';
import { openStore } from '../../src/store/lmdb/store.js';
import { rejection, scratchDirs } from '../helpers.js';

const dataDir = scratchDirs();

/** Commits one event per commit; returns their seqs. */
async function events(store: Store, n: number, at: number): Promise<number[]> {
  const seqs: number[] = [];
  for (let i = 0; i < n; i++) {
    const [event] = await store.commit((w) => void w.event('task.queued', { at, taskId: `t${i}`, data: { run: 1, agent: 'a', priority: 0 } }));
    seqs.push(event!.seq);
  }
  return seqs;
}

/** Replaces raw records of a database of a closed data dir. */
async function overwrite(path: string, db: string, records: Array<[key: number | string, bytes: number[]]>): Promise<void> {
  const env = open({ path, noSubdir: false, maxDbs: 24 });
  const raw = env.openDB({ name: db, encoding: 'binary' });
  for (const [key, bytes] of records) await raw.put(key, Buffer.from(bytes));
  await env.close();
}

describe('the store at its edges', () => {
  it('never hands out a seq again once retention has removed every event record', async () => {
    const dir = dataDir();
    let store = await openStore({ dataDir: dir });
    expect(await events(store, 3, 1_000)).toEqual([1, 2, 3]);
    expect(await store.truncateEvents(5_000, 100)).toBe(3);
    await store.close(true);
    store = await openStore({ dataDir: dir });
    try {
      expect(store.eventsRemovedThrough).toBe(3);
      expect(store.nextSeq).toBe(4);
      expect(await events(store, 1, 6_000)).toEqual([4]);
    } finally {
      await store.close(true);
    }
  });

  it('lets close() finish after a commit whose writer threw, with nothing of it written', async () => {
    const dir = dataDir();
    const store = await openStore({ dataDir: dir });
    expect(
      await rejection(
        Promise.resolve().then(() =>
          store.commit((w) => {
            w.putControl('half', 1);
            throw new Error('a step bug');
          }),
        ),
      ),
    ).toMatchObject({ message: 'a step bug' });
    await store.settled();
    await store.close(true);
    const again = await openStore({ dataDir: dir });
    try {
      expect(again.read.control.get('half')).toBeUndefined();
      expect(again.nextSeq).toBe(1);
    } finally {
      await again.close(true);
    }
  });

  it('opens a data dir whose last event record is damaged: it is quarantined, and seqs go on after its key', async () => {
    const dir = dataDir();
    let store = await openStore({ dataDir: dir });
    expect(await events(store, 3, 1_000)).toEqual([1, 2, 3]);
    await store.close(true);
    // msgpack [1, 2]: decodes, but is not a batch of events. And the first record: no msgpack at all.
    await overwrite(dir, 'eventLog', [[3, [0x92, 0x01, 0x02]], [1, [0xc1]]]);
    const quarantined: QuarantineRecord[] = [];
    store = await openStore({ dataDir: dir, onQuarantine: (record) => quarantined.push(record) });
    try {
      expect(quarantined.map((q) => [q.db, q.key])).toEqual([['events', '3']]);
      expect(store.nextSeq).toBeGreaterThanOrEqual(4);
      // A retention sweep goes past the damaged first record to the one after it.
      expect(await store.truncateEvents(5_000, 100)).toBe(1);
      expect(quarantined.map((q) => [q.db, q.key])).toEqual([['events', '3'], ['events', '1']]);
      const [next] = await events(store, 1, 6_000);
      expect(next!).toBeGreaterThanOrEqual(4);
      expect([...store.read.events.range({ start: next! })].map((e) => e.key)).toEqual([next]);
    } finally {
      await store.close(true);
    }
  });

  it('reads a record written to a key again after its bad record was quarantined', async () => {
    const dir = dataDir();
    const envelope = (n: number) => ({ schema: 1, machine: 'instance', version: 1, seq: n, bootId: 'b', snapshot: { context: { n } } });
    let store = await openStore({ dataDir: dir });
    await store.commit((w) => w.putInstance('k', envelope(1) as never));
    await store.close(true);
    // msgpack 42: decodes, but is not an instance envelope.
    await overwrite(dir, 'instances', [['k', [0x2a]]]);
    store = await openStore({ dataDir: dir });
    try {
      expect(store.read.instances.get('k')).toBeUndefined();
      // The quarantine's own commit (a microtask later) lands.
      await new Promise((resolve) => setImmediate(resolve));
      await store.settled();
      await store.commit((w) => w.putInstance('k', envelope(2) as never));
      expect(store.read.instances.get('k')).toMatchObject({ snapshot: { context: { n: 2 } } });
      // Written to its database (the store's commit at close), it still reads.
      await store.close(true);
      store = await openStore({ dataDir: dir });
      expect(store.read.instances.get('k')).toMatchObject({ snapshot: { context: { n: 2 } } });
      expect([...store.read.instances.range({})].map((e) => e.key)).toEqual(['k']);
    } finally {
      await store.close(true);
    }
  });
});
