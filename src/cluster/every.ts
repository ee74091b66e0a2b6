/**
 * A node's periodic work (its cron fires, its lease renewals): `run` every `everyMs` on the node's
 * clock, the next run timed from the end of the last one, so two never overlap.
 */
import type { Clock, ClockTimer } from '../clock.js';

/** See the module comment. */
export class Every {
  readonly #clock: Clock;
  readonly #everyMs: number;
  readonly #run: () => Promise<void>;
  #timer: ClockTimer | undefined;
  #running: Promise<void> | undefined;
  #stopped = false;

  /** `run` must not throw: it handles its own failures (the next run tries again). */
  constructor(clock: Clock, everyMs: number, run: () => Promise<void>) {
    this.#clock = clock;
    this.#everyMs = everyMs;
    this.#run = run;
  }

  /** Starts: `now`, with a run at once, else with a run after `everyMs`. Once only. */
  start(now: boolean): void {
    if (this.#stopped || this.#running || this.#timer !== undefined) return;
    if (now) this.#go();
    else this.#arm();
  }

  /** Runs nothing more; a run under way finishes (see {@link Every.stop}). Safe from inside a run. */
  halt(): void {
    this.#stopped = true;
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  /** Runs nothing more; resolves once a run under way is over. */
  async stop(): Promise<void> {
    this.halt();
    await this.#running;
  }

  #go(): void {
    this.#running = this.#run().finally(() => {
      this.#running = undefined;
      this.#arm();
    });
  }

  #arm(): void {
    if (this.#stopped) return;
    this.#timer = this.#clock.setTimeout(() => {
      this.#timer = undefined;
      this.#go();
    }, this.#everyMs);
  }
}
