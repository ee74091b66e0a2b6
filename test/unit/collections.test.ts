import { describe, expect, it } from 'vitest';
import { ChurnMap, ChurnSet } from '../../src/collections.js';

/** A small deterministic PRNG, so a failure replays. */
function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

describe('ChurnMap', () => {
  it('answers like a Map through random adds, overwrites and deletes, rebuilding as it goes', () => {
    const random = prng(7);
    const map = new ChurnMap<string, number>();
    const model = new Map<string, number>();
    for (let i = 0; i < 20_000; i++) {
      const key = `k${Math.floor(random() * 300)}`;
      const roll = random();
      if (roll < 0.45) {
        map.set(key, i);
        model.set(key, i);
      } else if (roll < 0.9) {
        expect(map.delete(key)).toBe(model.delete(key));
      } else {
        expect(map.get(key)).toBe(model.get(key));
        expect(map.has(key)).toBe(model.has(key));
      }
      expect(map.size).toBe(model.size);
    }
    expect([...map]).toEqual([...model]);
    expect([...map.keys()]).toEqual([...model.keys()]);
    expect([...map.values()]).toEqual([...model.values()]);
    expect([...map.entries()]).toEqual([...model.entries()]);
    expect(map.rebuilds).toBeGreaterThan(10);
  });

  it('starts a new table after as many deletes as it holds entries plus 64, keeping insertion order', () => {
    const map = new ChurnMap<number, string>();
    for (let i = 0; i < 100; i++) map.set(i, `v${i}`);
    // 100 live entries: the rebuild comes with the delete that leaves more deletes than live + 64.
    for (let i = 0; i < 82; i++) map.delete(i);
    expect(map.rebuilds).toBe(0);
    map.delete(82);
    expect(map.rebuilds).toBe(1);
    expect([...map.keys()]).toEqual(Array.from({ length: 17 }, (_, i) => 83 + i));
    // Deleting what is not there does not count.
    for (let i = 0; i < 200; i++) expect(map.delete(1_000 + i)).toBe(false);
    expect(map.rebuilds).toBe(1);
  });

  it('clear empties it', () => {
    const map = new ChurnMap<string, number>();
    map.set('a', 1).set('b', 2);
    map.clear();
    expect(map.size).toBe(0);
    expect(map.get('a')).toBeUndefined();
  });
});

describe('ChurnSet', () => {
  it('answers like a Set through random adds and deletes, rebuilding as it goes', () => {
    const random = prng(11);
    const set = new ChurnSet<number>();
    const model = new Set<number>();
    for (let i = 0; i < 20_000; i++) {
      const value = Math.floor(random() * 200);
      if (random() < 0.5) {
        set.add(value);
        model.add(value);
      } else {
        expect(set.delete(value)).toBe(model.delete(value));
      }
      expect(set.has(value)).toBe(model.has(value));
      expect(set.size).toBe(model.size);
    }
    expect([...set]).toEqual([...model]);
    expect([...set.values()]).toEqual([...model.values()]);
    expect(set.rebuilds).toBeGreaterThan(10);
    set.clear();
    expect(set.size).toBe(0);
  });
});
