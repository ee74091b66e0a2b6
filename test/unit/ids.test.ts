import { describe, expect, it } from 'vitest';
import { createIdGenerator } from '../../src/ids.js';

const CROCKFORD = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
const ID = /^[0-9A-HJKMNP-TV-Z]{26}$/;

/** Decodes the 10-character time prefix back to epoch milliseconds. */
function timeOf(id: string): number {
  let time = 0;
  for (const char of id.slice(0, 10)) time = time * 32 + CROCKFORD.indexOf(char);
  return time;
}

function isStrictlyAscending(ids: string[]): boolean {
  return ids.every((id, i) => i === 0 || ids[i - 1]! < id);
}

describe('createIdGenerator', () => {
  it('mints 26-character Crockford base32 ids without I, L, O or U', () => {
    const next = createIdGenerator(() => Date.UTC(2026, 0, 1));
    for (let i = 0; i < 1_000; i++) {
      const id = next();
      expect(id).toHaveLength(26);
      expect(id).toMatch(ID);
    }
  });

  it('encodes the clock time in the first 10 characters', () => {
    for (const t of [0, 1, 31, 32, Date.UTC(2026, 0, 1), 2 ** 48 - 1]) {
      const id = createIdGenerator(() => t)();
      expect(timeOf(id)).toBe(t);
    }
    expect(createIdGenerator(() => 0)().slice(0, 10)).toBe('0000000000');
    expect(createIdGenerator(() => 2 ** 48 - 1)().slice(0, 10)).toBe('7ZZZZZZZZZ');
  });

  it('mints at a time it is given, without reading the clock, and stays in mint order', () => {
    let reads = 0;
    const next = createIdGenerator(() => {
      reads++;
      return 5_000;
    });
    const a = next(7_000);
    expect(timeOf(a)).toBe(7_000);
    expect(reads).toBe(0);
    // An earlier time than the last id's keeps the order: it mints at the last time, incremented.
    const b = next(6_000);
    expect(timeOf(b)).toBe(7_000);
    expect(b > a).toBe(true);
    expect(timeOf(next())).toBe(7_000);
    expect(reads).toBe(1);
  });

  it('sorts in mint order within one millisecond', () => {
    const next = createIdGenerator(() => 1_700_000_000_000);
    const ids = Array.from({ length: 10_000 }, () => next());
    expect(isStrictlyAscending(ids)).toBe(true);
    expect(new Set(ids).size).toBe(ids.length);
    expect(ids.every((id) => timeOf(id) === 1_700_000_000_000)).toBe(true);
  });

  it('changes only the random part within one millisecond, by one step', () => {
    const next = createIdGenerator(() => 5);
    const a = next();
    const b = next();
    expect(b.slice(0, 10)).toBe(a.slice(0, 10));
    // The last random digit advances by one (with carry), so the two ids are adjacent.
    const value = (id: string) => [...id.slice(10)].reduce((n, c) => n * 32n + BigInt(CROCKFORD.indexOf(c)), 0n);
    expect(value(b) - value(a)).toBe(1n);
  });

  it('sorts by time across milliseconds, whatever the random part', () => {
    let now = 1_000;
    const next = createIdGenerator(() => now);
    const ids: string[] = [];
    for (let ms = 0; ms < 200; ms++) {
      for (let i = 0; i < 5; i++) ids.push(next());
      now += 1;
    }
    expect(isStrictlyAscending(ids)).toBe(true);
    expect(timeOf(ids[0]!)).toBe(1_000);
    expect(timeOf(ids.at(-1)!)).toBe(1_199);
  });

  it('orders ids of different milliseconds by their time prefix even across generators', () => {
    const earlier = createIdGenerator(() => 1_000);
    const later = createIdGenerator(() => 1_001);
    for (let i = 0; i < 100; i++) expect(earlier() < later()).toBe(true);
  });

  it('stays monotonic when the clock goes backwards', () => {
    let now = 10_000;
    const next = createIdGenerator(() => now);
    const first = next();
    now = 9_000;
    const second = next();
    now = 10_000;
    const third = next();
    now = 10_001;
    const fourth = next();
    expect(isStrictlyAscending([first, second, third, fourth])).toBe(true);
    expect(timeOf(second)).toBe(10_000);
    expect(timeOf(third)).toBe(10_000);
    expect(timeOf(fourth)).toBe(10_001);
  });

  it('starts each millisecond with fresh randomness, leaving headroom in the first random digit', () => {
    let now = 0;
    const next = createIdGenerator(() => now++);
    const randomParts = Array.from({ length: 200 }, () => next().slice(10));
    expect(new Set(randomParts).size).toBe(200);
    // The first random digit is masked to 4 bits (0..F) so same-millisecond increments never overflow.
    expect(randomParts.every((r) => CROCKFORD.indexOf(r[0]!) < 16)).toBe(true);
  });

  it('gives independent generators different random parts', () => {
    const a = createIdGenerator(() => 7)();
    const b = createIdGenerator(() => 7)();
    expect(a.slice(0, 10)).toBe(b.slice(0, 10));
    expect(a.slice(10)).not.toBe(b.slice(10));
  });
});
