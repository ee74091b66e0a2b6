/**
 * The FIFO of pending `Governor.reserve()` calls.
 *
 * Waiters sit in an intrusive ring (deque.ts), so an abort unlinks its waiter in O(1) wherever it
 * is. The governor calls {@link Waiters.serve} after anything that may have made an entry eligible,
 * only when {@link Waiters.size} is non-zero, so a governor nobody waits on pays one counter check.
 */
import { ringPush, ringUnlink, type Ring, type RingNode } from './deque.js';

interface Waiter<T> extends RingNode<Waiter<T>> {
  readonly resolve: (value: T) => void;
  readonly signal: AbortSignal | undefined;
  /** Set while the waiter listens on its signal; removed once it is served. */
  readonly onAbort: (() => void) | undefined;
}

/** See the module comment. */
export class Waiters<T> {
  readonly #ring: Ring<Waiter<T>> = { head: null, tail: null, size: 0 };

  /** Waiters pending. */
  get size(): number { return this.#ring.size; }

  /**
   * Joins the back of the queue. The promise resolves with the value {@link Waiters.serve} hands
   * this waiter, or rejects with the signal's reason once it aborts (at once if it already has); an
   * aborted waiter leaves the queue and is never handed anything.
   */
  wait(signal?: AbortSignal): Promise<T> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    return new Promise<T>((resolve, reject) => {
      const onAbort = signal
        ? () => {
            ringUnlink(this.#ring, waiter);
            reject(signal.reason);
          }
        : undefined;
      const waiter: Waiter<T> = { resolve, signal, onAbort, prev: null, next: null };
      if (signal && onAbort) signal.addEventListener('abort', onAbort, { once: true });
      ringPush(this.#ring, waiter);
    });
  }

  /**
   * Hands values from `take` to the waiters, oldest first, until `take` returns undefined or no
   * waiter is left. `take` is only called for a waiter that is there to receive its value, so
   * nothing taken is dropped; it must not make a waiter leave (e.g. by aborting its signal).
   */
  serve(take: () => T | undefined): void {
    for (let waiter = this.#ring.head; waiter; waiter = this.#ring.head) {
      const value = take();
      if (value === undefined) return;
      ringUnlink(this.#ring, waiter);
      if (waiter.onAbort) waiter.signal?.removeEventListener('abort', waiter.onAbort);
      waiter.resolve(value);
    }
  }
}
