/**
 * How many attempts the dispatcher starts (and a cluster node claims, src/cluster/node.ts) ahead
 * of free slots. A start commit (a node's claim) takes milliseconds;
 * an attempt of a fast agent, microseconds. Starting the next attempts while the slots are busy
 * (their threads queue them) keeps the slots fed: enough to cover several start-commit latencies
 * of work for fast agents, none for slow ones, whose prefetched attempts would only sit idle as
 * "running" (and a crash counts every started attempt against its budget).
 */

/** Weight of the newest sample in the moving averages. */
const EWMA = 0.1;
/** How many start-commit latencies of work the window covers: refills are issued in bursts and land together. */
const AHEAD_FACTOR = 4;

/** See the module comment. */
export class StartAhead {
  readonly #slots: number;
  readonly #max: number;
  /** Moving average (ms) of how long a start commit takes. */
  #startMs = 1;
  /** Moving average (ms) of how long an attempt executes; NaN until one ended: nothing starts ahead without evidence that attempts are fast. */
  #execMs = Number.NaN;

  /** `slots`: threads × slotsPerThread; `max`: the `prefetch` option (the runtime's, or the node's). */
  constructor(slots: number, max: number) {
    this.#slots = slots;
    this.#max = max;
  }

  /** Attempts to start beyond the free slots now. */
  get window(): number {
    if (Number.isNaN(this.#execMs)) return 0;
    return Math.min(this.#max, Math.floor((AHEAD_FACTOR * this.#slots * this.#startMs) / Math.max(this.#execMs, 0.01)));
  }

  /** The averages (ms) that size the window. */
  get averages(): { startMs: number; execMs: number } {
    return { startMs: this.#startMs, execMs: this.#execMs };
  }

  /** A start commit took `ms`. */
  started(ms: number): void {
    this.#startMs += EWMA * (ms - this.#startMs);
  }

  /** An attempt executed for `ms` (0: it ran and ended within one turn of its thread). The first sample sets the average. */
  executed(ms: number): void {
    this.#execMs = Number.isNaN(this.#execMs) ? ms : this.#execMs + EWMA * (ms - this.#execMs);
  }
}
