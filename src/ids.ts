/**
 * Time-ordered ids (ULID layout: 48-bit millisecond time + 80 random bits, Crockford base32).
 * Ids minted in the same millisecond increment the random part, so ids from one generator always
 * sort in mint order, which is what makes task ids usable as FIFO keys and list cursors.
 */
import { randomFillSync } from 'node:crypto';

const ALPHABET = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';

/** Makes a monotonic id generator over the given clock. */
export function createIdGenerator(now: () => number): () => string {
  let lastTime = -1;
  const random = new Uint8Array(16); // 16 base32 digits of 5 bits (only the low 5 bits are used)
  return function nextId(): string {
    let time = now();
    if (time <= lastTime) {
      time = lastTime;
      increment(random);
    } else {
      lastTime = time;
      randomFillSync(random);
      for (let i = 0; i < random.length; i++) random[i] &= 31;
      random[0] &= 15; // leave headroom so increments within one millisecond never overflow
    }
    let out = '';
    for (let i = 9; i >= 0; i--) out += ALPHABET[Math.floor(time / 32 ** i) % 32];
    for (let i = 0; i < random.length; i++) out += ALPHABET[random[i]];
    return out;
  };
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
