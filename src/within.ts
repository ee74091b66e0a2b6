/**
 * Resolves when `promise` settles or `ms` have passed (wall time), whichever is first: for waits
 * that must end (a close's grace, a scrape's wait for fresh counts). Any `ms` is honoured (a long
 * timeout, actors/long-timeout.ts: a close's `timeoutMs` may exceed what `setTimeout` takes). The
 * timer is cleared either way; with `unref` it does not hold the process meanwhile. A rejection of
 * `promise` within the time is passed on.
 */
import { clearLongTimeout, setLongTimeout, type LongTimeout } from '../actors/long-timeout.js';

export async function within(ms: number, promise: Promise<unknown>, unref = false): Promise<void> {
  let timer: LongTimeout | undefined;
  try {
    await Promise.race([promise, new Promise<void>((resolve) => (timer = setLongTimeout(resolve, ms, { unref })))]);
  } finally {
    clearLongTimeout(timer);
  }
}
