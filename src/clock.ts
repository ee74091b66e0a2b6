/**
 * The one injected clock. Everything time-based in the host (timers, backoff, timeouts, grace
 * periods) reads time and arms timeouts through it, so tests advance a {@link ManualClock} instead
 * of sleeping.
 */
import { LongTimeout, setLongTimeout } from '../actors/long-timeout.js';

/** An opaque handle returned by {@link Clock.setTimeout}. */
export type ClockTimer = { readonly __clockTimer: true } | LongTimeout | NodeJS.Timeout;

/** Time source and timeout scheduler. */
export interface Clock {
  /** Epoch milliseconds. */
  now(): number;
  /**
   * Calls `fn` once after `ms` milliseconds, however large (a monthly cron, `timeoutMs: 2**31`).
   * The timer never keeps the process alive.
   */
  setTimeout(fn: () => void, ms: number): ClockTimer;
  clearTimeout(timer: ClockTimer): void;
}

/**
 * The real clock: `Date.now()` and unref'd Node timers. Delays past Node's 2^31−1 ms limit are
 * armed in segments up to the due instant (see {@link LongTimeout}) instead of overflowing to 1 ms.
 */
export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setLongTimeout(fn, ms, { unref: true }),
  clearTimeout(timer) {
    if (timer instanceof LongTimeout) timer.clear();
    else clearTimeout(timer as NodeJS.Timeout);
  },
};

interface ManualTimer {
  readonly __clockTimer: true;
  due: number;
  seq: number;
  fn: () => void;
  cancelled: boolean;
}

/**
 * A clock that only moves when told to. Timers fire in due order, synchronously, inside
 * {@link ManualClock.advance}; a timer armed by a firing timer fires in the same advance if it is due.
 */
export class ManualClock implements Clock {
  #now: number;
  #seq = 0;
  #timers: ManualTimer[] = [];

  constructor(startMs = Date.UTC(2026, 0, 1)) {
    this.#now = startMs;
  }

  now(): number {
    return this.#now;
  }

  setTimeout(fn: () => void, ms: number): ClockTimer {
    // No 32-bit limit here, but NaN must not become a due time: it would poison #now on advance().
    const timer: ManualTimer = { __clockTimer: true, due: this.#now + (ms > 0 ? ms : 0), seq: this.#seq++, fn, cancelled: false };
    this.#timers.push(timer);
    return timer;
  }

  clearTimeout(timer: ClockTimer): void {
    const manual = timer as ManualTimer;
    manual.cancelled = true;
    this.#timers = this.#timers.filter((t) => t !== manual);
  }

  /** Number of armed, unfired timers. */
  get pending(): number {
    return this.#timers.length;
  }

  /** Moves time forward by `ms`, firing every timer that falls due on the way, in order. */
  advance(ms: number): void {
    if (!(ms >= 0)) throw new RangeError(`ManualClock.advance: ms must be >= 0 (got ${ms})`);
    const target = this.#now + ms;
    for (;;) {
      const next = this.#earliest();
      if (!next || next.due > target) break;
      this.#timers = this.#timers.filter((t) => t !== next);
      this.#now = Math.max(this.#now, next.due);
      next.fn();
    }
    this.#now = target;
  }

  /** Moves time to an absolute instant (never backwards). */
  set(ms: number): void {
    this.advance(Math.max(0, ms - this.#now));
  }

  #earliest(): ManualTimer | undefined {
    let best: ManualTimer | undefined;
    for (const t of this.#timers) {
      if (!best || t.due < best.due || (t.due === best.due && t.seq < best.seq)) best = t;
    }
    return best;
  }
}
