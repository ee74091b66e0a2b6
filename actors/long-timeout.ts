/**
 * Timeouts longer than Node allows. `setTimeout` keeps its delay in a signed 32-bit integer:
 * anything over 2^31−1 ms (24.8 days) becomes 1 ms, with a `TimeoutOverflowWarning`, so a monthly
 * cron or a `timeoutMs: 2**31` would fire at once, and a caller that re-arms would busy-loop. A long
 * timeout arms at most {@link MAX_TIMEOUT_MS} at a time and re-arms until its due instant, measured
 * on `Date.now()` from when it was set, so each re-arm corrects the drift of the one before. It lives
 * in `actors/` because worker threads need it too; the host's clock uses it as well.
 */

/** The longest delay Node's `setTimeout` honours: 2^31−1 ms. */
export const MAX_TIMEOUT_MS = 2 ** 31 - 1;

/** Options of {@link setLongTimeout}. */
export interface LongTimeoutOptions {
  /** Let the process exit while the timeout is pending (every segment is unref'd). @default false */
  unref?: boolean;
}

/** A pending long timeout; {@link LongTimeout.clear} cancels whichever segment is armed. */
export class LongTimeout {
  readonly #fn: () => void;
  readonly #due: number;
  readonly #unref: boolean;
  #segment: NodeJS.Timeout | undefined;

  constructor(fn: () => void, ms: number, options: LongTimeoutOptions = {}) {
    // NaN and negatives fire as soon as possible; Infinity never does.
    const delay = ms > 0 ? ms : 0;
    this.#fn = fn;
    this.#due = Date.now() + delay;
    this.#unref = options.unref === true;
    this.#arm(delay);
  }

  /** Cancels the timeout; a no-op once it has fired or been cleared. */
  clear(): void {
    if (this.#segment) clearTimeout(this.#segment);
    this.#segment = undefined;
  }

  #arm(delay: number): void {
    const last = delay <= MAX_TIMEOUT_MS;
    const segment = last ? setTimeout(this.#fn, delay) : setTimeout(this.#rearm, MAX_TIMEOUT_MS);
    if (this.#unref) segment.unref();
    this.#segment = segment;
  }

  readonly #rearm = (): void => {
    this.#arm(Math.max(0, this.#due - Date.now()));
  };
}

/** Like `setTimeout(fn, ms)`, for any `ms`: delays over {@link MAX_TIMEOUT_MS} are armed in segments. */
export function setLongTimeout(fn: () => void, ms: number, options?: LongTimeoutOptions): LongTimeout {
  return new LongTimeout(fn, ms, options);
}

/** Like `clearTimeout`, for a {@link LongTimeout} (or none). */
export function clearLongTimeout(timeout: LongTimeout | undefined): void {
  timeout?.clear();
}
