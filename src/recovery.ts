/**
 * Store recovery: after a commit failed (a full disk) the store is stopped, and nothing more can be
 * made durable. Every `storeRetryMs` the runtime tries to come back: the first try stops the engine
 * on the failed store (running attempts are interrupted: their results could not be stored), then
 * each try opens the data dir again, still holding its lock. The open replays what is durable, as
 * after a crash; when it succeeds the runtime builds a new engine on it and carries on. While the
 * engine is stopped, calls that need the store reject with the failure.
 */
import type { Clock, ClockTimer } from './clock.js';
import { TroupeError } from './errors.js';
import type { Logger } from './log.js';
import type { StoreFailure } from './stats.js';
import type { Store } from './store/port.js';

/** What the recovery drives: the runtime. */
export interface RecoveryHost {
  readonly clock: Clock;
  readonly retryMs: number;
  readonly log: Logger;
  /** Whether the runtime is still running (a close ends the recovery). */
  running(): boolean;
  /** Stops the current engine, if it is not stopped already: nothing of it runs after this. */
  stopEngine(): Promise<void>;
  /** Opens the data dir again (see Store.reopen); rejects while the cause lasts. */
  reopen(): Promise<Store>;
  /**
   * Builds and starts a new engine on the store opened again; `failure` is what it recovers from.
   * It calls `back` once the new engine runs, before it writes `store.recovered`.
   */
  resume(store: Store, failure: Readonly<StoreFailure>, back: () => void): Promise<void>;
}

/** See the module comment. */
export class StoreRecovery {
  readonly #host: RecoveryHost;
  #failure: StoreFailure | null = null;
  #error: TroupeError | undefined;
  /** Set from the first try until the runtime is back: the engine is stopped. */
  #down = false;
  #timer: ClockTimer | undefined;
  #trying: Promise<void> | undefined;

  constructor(host: RecoveryHost) {
    this.#host = host;
  }

  /** Why the store stopped, while it is stopped (for `stats()`). */
  get failure(): StoreFailure | null {
    return this.#failure && { ...this.#failure };
  }

  /** The error calls that need the store reject with while the engine is stopped. */
  get down(): TroupeError | undefined {
    return this.#down ? this.#error : undefined;
  }

  /** A commit failed and the store stopped (again, if it failed after it came back): schedule a try. */
  failed(error: TroupeError): void {
    if (!this.#failure) {
      this.#failure = { message: error.message, since: this.#host.clock.now(), retries: 0 };
      this.#error = error;
    }
    this.#arm();
  }

  #arm(): void {
    if (this.#timer || !this.#host.running()) return;
    this.#timer = this.#host.clock.setTimeout(() => {
      this.#timer = undefined;
      if (this.#trying) return this.#arm();
      this.#trying = this.#try().finally(() => (this.#trying = undefined));
    }, this.#host.retryMs);
  }

  /** The runtime is back (the host calls it once the new engine runs, before it says so). */
  #back(failure: StoreFailure): void {
    if (this.#failure !== failure) return;
    this.#failure = null;
    this.#error = undefined;
    this.#down = false;
    this.#host.log.warn({ downMs: this.#host.clock.now() - failure.since, retries: failure.retries }, 'the store is back: the runtime carries on');
  }

  async #try(): Promise<void> {
    const host = this.#host;
    const failure = this.#failure;
    if (!failure || !host.running()) return;
    this.#down = true;
    failure.retries++;
    try {
      await host.stopEngine();
      if (!host.running()) return;
      const store = await host.reopen();
      if (!host.running()) {
        // Closed while it opened: the new store is let go (and the dir with it), nothing resumes.
        await store.close(false);
        return;
      }
      await host.resume(store, failure, () => this.#back(failure));
    } catch (error) {
      host.log.error({ err: error, retries: failure.retries }, `the store could not be opened again; next try in ${host.retryMs} ms`);
      // Failed again after it was back: failed() has started a new round.
      if (this.#failure !== failure) return;
      failure.lastError = error instanceof Error ? error.message : String(error);
      this.#arm();
    }
  }

  /** Ends the recovery (close): no more tries; resolves once a try under way has ended. */
  async stop(): Promise<void> {
    if (this.#timer) this.#host.clock.clearTimeout(this.#timer);
    this.#timer = undefined;
    await this.#trying;
  }
}
