/**
 * Time-ordered ids (ULID layout: 48-bit millisecond time + 80 random bits, Crockford base32).
 * Ids minted in the same millisecond increment the random part, so ids from one generator always
 * sort in mint order, which is what makes task ids usable as FIFO keys and list cursors.
 */
import { randomFillSync } from 'node:crypto';
import { TroupeError } from './errors.js';
import { wellFormed } from '../actors/wire.js';

const ALPHABET = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
const CODES = Array.from(ALPHABET, (c) => c.charCodeAt(0));

/** Makes a monotonic id generator over the given clock. */
export function createIdGenerator(now: () => number): (at?: number) => string {
  let lastTime = -1;
  const random = new Uint8Array(16); // 16 base32 digits of 5 bits (only the low 5 bits are used)
  // Random bytes are drawn 4 KiB at a time: a call into the CSPRNG per millisecond was measurable.
  const pool = new Uint8Array(4096);
  let used = pool.length;
  // The id's character codes: the time part is written once per millisecond. The string is made
  // in one call (concatenating 26 characters would allocate a rope of 26 strings per id).
  const codes = new Array<number>(26).fill(0);
  /** `at`: the time to mint at, when the caller has read the clock already (epoch ms). */
  return function nextId(at?: number): string {
    let time = at ?? now();
    if (time <= lastTime) {
      time = lastTime;
      increment(random);
    } else {
      lastTime = time;
      if (used + random.length > pool.length) {
        randomFillSync(pool);
        used = 0;
      }
      for (let i = 0; i < random.length; i++) random[i] = pool[used++]! & 31;
      random[0] &= 15; // leave headroom so increments within one millisecond never overflow
      for (let i = 9; i >= 0; i--) codes[9 - i] = CODES[Math.floor(time / 32 ** i) % 32]!;
    }
    for (let i = 0; i < random.length; i++) codes[10 + i] = CODES[random[i]!]!;
    return String.fromCharCode.apply(null, codes);
  };
}

/**
 * The time part of the ids minted at `time` (epoch ms): the first 10 characters. Every id minted
 * at or before `time` sorts before `idTimePrefix(time) + '\uffff'`.
 */
export function idTimePrefix(time: number): string {
  let prefix = '';
  for (let i = 9; i >= 0; i--) prefix += ALPHABET[Math.floor(time / 32 ** i) % 32];
  return prefix;
}

function increment(digits: Uint8Array): void {
  for (let i = digits.length - 1; i >= 0; i--) {
    if (digits[i] < 31) {
      digits[i]++;
      return;
    }
    digits[i] = 0;
  }
}

/** Most characters of an id or key the API takes: LMDB keys are at most 1,978 bytes. */
export const MAX_ID = 512;

/** `value` as an id for `where`, or INVALID_INPUT (an id that cannot exist is bad input, not NOT_FOUND). */
export function checkId(value: unknown, where: string): string {
  if (typeof value !== 'string' || value.length === 0 || value.length > MAX_ID) {
    throw new TroupeError('INVALID_INPUT', `${where} must be a non-empty string of at most ${MAX_ID} characters`);
  }
  return checkText(value, where);
}

/**
 * `value` as text the API stores as given (an id, a key, a reason), or INVALID_INPUT: a string,
 * with no lone UTF-16 surrogate, which both stores would keep as U+FFFD (so two keys that differ
 * only there would be one key once stored).
 */
export function checkText(value: unknown, where: string): string {
  if (typeof value !== 'string') throw new TroupeError('INVALID_INPUT', `${where} must be a string`);
  if (!wellFormed(value)) throw new TroupeError('INVALID_INPUT', `${where} holds a lone UTF-16 surrogate (half of a pair), which is not Unicode text`);
  return value;
}
