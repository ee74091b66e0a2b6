import type { Database } from 'lmdb';
import { describe, expect, it } from 'vitest';
import { safeDatabase } from '../../src/store/lmdb/safe-read.js';

/** A database whose cursor fails after `good` keys, as LMDB does on a damaged page it detects (MDB_CORRUPTED). */
function damagedAfter(good: number): Database<unknown, string> {
  const fail = () => Object.assign(new Error('MDB_CORRUPTED: Located page was wrong type'), { code: -30796 });
  return {
    getKeys: () => ({
      *[Symbol.iterator]() {
        for (let i = 0; i < good; i++) yield `k${i}`;
        throw fail();
      },
    }),
    get: (key: string) => ({ key }),
    doesExist: () => {
      throw fail();
    },
  } as unknown as Database<unknown, string>;
}

describe('safeDatabase over a damaged file', () => {
  it('turns a read LMDB reports as damaged into STORE_CORRUPT, after the keys it could read', () => {
    const db = safeDatabase('tasks', damagedAfter(2), () => true, () => undefined, () => false);
    const seen: string[] = [];
    expect(() => {
      for (const key of db.keys()) seen.push(key);
    }).toThrow(expect.objectContaining({ name: 'TroupeError', code: 'STORE_CORRUPT', message: expect.stringContaining('reading the tasks database failed: MDB_CORRUPTED') }));
    expect(seen).toEqual(['k0', 'k1']);
    expect(() => [...db.range()]).toThrow(expect.objectContaining({ code: 'STORE_CORRUPT' }));
    expect(() => db.has('k0')).toThrow(expect.objectContaining({ code: 'STORE_CORRUPT' }));
  });
});

describe('safeDatabase over a real LMDB', () => {
  it('ends the LMDB iterator when a reader stops early, so no read transaction is left pinning old pages', async () => {
    const { mkdtempSync, rmSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const { open } = await import('lmdb');
    const dir = mkdtempSync(join(tmpdir(), 'troupe-safe-read-'));
    const env = open({ path: dir });
    try {
      const raw = env.openDB<number, string>({ name: 'x' });
      for (let i = 0; i < 10; i++) await raw.put(`k${i}`, i);
      const db = safeDatabase('x', raw, () => true, () => undefined, () => false);
      for (const _key of db.keys()) break;
      for (const _entry of db.range({ start: 'k3' })) break;
      // Later commits: a reader left open would keep its older transaction id in the reader table.
      for (let i = 0; i < 3; i++) await raw.put('tick', i);
      const last = (env.getStats() as { lastTxnId: number }).lastTxnId;
      const pinned = env
        .readerList()
        .split('\n')
        .map((line) => line.trim().split(/\s+/))
        .filter((cols) => cols[0] === String(process.pid) && /^\d+$/.test(cols[2] ?? ''))
        .map((cols) => Number(cols[2]));
      expect(pinned.filter((txn) => txn < last - 1)).toEqual([]);
    } finally {
      await env.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
