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
