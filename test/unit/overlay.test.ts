import { describe, expect, it } from 'vitest';
import { compareKeys, Overlay, REMOVED } from '../../src/store/lmdb/overlay.js';

const policy = (batch: number, extra: Partial<Parameters<Overlay['take']>[0]> = {}) => ({ batch, coolBatches: 2, maxAgeBatches: 10, budget: 100, maxEntries: 1_000, ...extra });

describe('Overlay', () => {
  it('reads back the latest decided value, and REMOVED for a removal', () => {
    const o = new Overlay(2);
    o.set(0, 'a', { v: 1 }, 1);
    o.set(0, 'a', { v: 2 }, 2);
    o.set(1, 'a', REMOVED, 2);
    expect(o.get(0, 'a')).toEqual({ v: 2 });
    expect(o.get(1, 'a')).toBe(REMOVED);
    expect(o.get(0, 'b')).toBeUndefined();
    expect(o.size).toBe(2);
  });

  it('lists a database in key order within bounds, arrays element by element', () => {
    const o = new Overlay(1);
    for (const key of [['b', 2], ['a', 10], ['a', 9], ['c', 1]] as Array<[string, number]>) o.set(0, key, key.join(), 1);
    expect(o.entries(0, {}).map((e) => e.key)).toEqual([['a', 9], ['a', 10], ['b', 2], ['c', 1]]);
    expect(o.entries(0, { start: ['a', 10], end: ['c'] }).map((e) => e.key)).toEqual([['a', 10], ['b', 2]]);
    expect(o.entries(0, { reverse: true }).map((e) => e.key)).toEqual([['c', 1], ['b', 2], ['a', 10], ['a', 9]]);
  });

  it('materializes cold entries, keeps hot ones, and bounds the checkpoint by the oldest dirty one', () => {
    const o = new Overlay(1);
    o.set(0, 'hot', 1, 1);
    o.set(0, 'cold', 1, 2);
    o.set(0, 'hot', 2, 4);
    // At batch 5: cold (last 2) is 3 batches old, hot (last 4) only 1.
    const taken = o.take(policy(5));
    expect(taken.map((e) => e.key)).toEqual(['cold']);
    // hot became dirty in batch 1: log records from 1 on are still needed.
    expect(o.checkpoint(5)).toBe(0);
    // Taken entries stay readable until their commit lands.
    expect(o.get(0, 'cold')).toBe(1);
    o.written(taken, 5);
    expect(o.get(0, 'cold')).toBeUndefined();
    // Old enough, a hot entry goes too, and the checkpoint moves up to the batch.
    o.set(0, 'hot', 3, 11);
    const forced = o.take(policy(11));
    expect(forced.map((e) => e.key)).toEqual(['hot']);
    expect(o.checkpoint(11)).toBe(11);
  });

  it('materializes an entry that keeps changing once it has been dirty maxAgeMs, so the checkpoint moves', () => {
    const o = new Overlay(1);
    // Changed in every batch, one a millisecond: never cold.
    for (let batch = 1; batch <= 5; batch++) o.set(0, 'hot', batch, batch, 1_000 + batch);
    expect(o.take(policy(5, { now: 1_005, coolMs: 0, maxAgeMs: 10 }))).toEqual([]);
    expect(o.checkpoint(5)).toBe(0);
    o.set(0, 'hot', 6, 6, 1_011);
    // Dirty since 1_001: 10 ms old at 1_011.
    const taken = o.take(policy(6, { now: 1_011, coolMs: 0, maxAgeMs: 10 }));
    expect(taken.map((e) => e.key)).toEqual(['hot']);
    expect(o.checkpoint(6)).toBe(6);
  });

  it('an entry changed while its write is in flight stays, dirty again from that batch', () => {
    const o = new Overlay(1);
    o.set(0, 'k', 'v1', 1);
    const taken = o.take(policy(4));
    o.set(0, 'k', 'v2', 5);
    o.written(taken, 4);
    expect(o.get(0, 'k')).toBe('v2');
    expect(o.checkpoint(6)).toBe(4);
  });

  it('a failed commit puts its entries back in order', () => {
    const o = new Overlay(1);
    o.set(0, 'a', 1, 1);
    o.set(0, 'b', 1, 3);
    const taken = o.take(policy(4, { coolBatches: 0 }));
    expect(taken).toHaveLength(2);
    o.set(0, 'c', 1, 5);
    o.unwritten(taken, 4);
    expect(o.checkpoint(6)).toBe(0);
    expect(o.take(policy(9, { coolBatches: 0 })).map((e) => e.key)).toEqual(['a', 'b', 'c']);
  });

  it('stops looking at the first entry dirtied too recently to be cold: every one behind it is as recent', () => {
    const o = new Overlay(1);
    o.set(0, 'long-hot', 0, 1);
    o.set(0, 'long-hot', 1, 9);
    o.set(0, 'cold', 1, 2);
    // A busy store's tasks in flight, each first dirtied in one of the last batches.
    for (let i = 0; i < 2_000; i++) o.set(0, `t${i}`, i, i < 1_000 ? 9 : 10);
    const taken = o.take(policy(10, { budget: 5_000, maxEntries: 10_000 }));
    expect(taken.map((e) => e.key)).toEqual(['cold']);
    // long-hot (hot, first in batch 1), cold, then the first task in flight: not the 2,000 behind it.
    expect(o.scanned).toBe(3);
    // Over the cap, the scan goes on past them, oldest first.
    expect(o.take(policy(10, { budget: 5_000, maxEntries: 1_990 })).map((e) => e.key)).toEqual(['long-hot', 't0', 't1', 't2', 't3', 't4', 't5', 't6', 't7', 't8', 't9']);
  });

  it('takes a final version for its own commit while an earlier final version of the key is still being written', () => {
    const o = new Overlay(1);
    o.set(0, 'k', 'v1', 1, 0, true);
    expect(o.take(policy(1)).map((e) => e.value)).toEqual(['v1']);
    // v1's commit is in flight when v2 is decided, final too: v2 goes in batch 2's commit.
    o.set(0, 'k', 'v2', 2, 0, true);
    expect(o.take(policy(2)).map((e) => e.value)).toEqual(['v2']);
  });

  it('takes at most the budget, unless over the cap', () => {
    const o = new Overlay(1);
    for (let i = 0; i < 50; i++) o.set(0, `k${i}`, i, 1);
    expect(o.take(policy(10, { budget: 5 }))).toHaveLength(5);
    expect(o.take(policy(10, { budget: 5, maxEntries: 10, coolBatches: 100, maxAgeBatches: 100 }))).toHaveLength(35);
    expect(o.takeAll(11)).toHaveLength(10);
    expect(o.size).toBe(0);
  });
});

describe('compareKeys', () => {
  it('orders numbers, strings and arrays as LMDB does for our keys', () => {
    expect(compareKeys(2, 10)).toBeLessThan(0);
    expect(compareKeys('b', 'a')).toBeGreaterThan(0);
    expect(compareKeys(['t', 1, 2], ['t', 1, 10])).toBeLessThan(0);
    expect(compareKeys(['t', 1], ['t', 1, 0])).toBeLessThan(0);
    expect(compareKeys([5, 'x'], [5, 'x'])).toBe(0);
    expect(compareKeys(1, 'a')).toBeLessThan(0);
  });
});
