/**
 * The store's fail-stop: the first failed commit stops it for good. The steps of that batch (and of
 * any decided after it) changed memory, and later ones may build on them, so writing anything more
 * could make durable what was reported as failed, or patch a record whose base never landed.
 * Instead every later step is refused, close writes nothing, and the next open replays what is
 * durable.
 */
import { TroupeError } from '../../errors.js';

/** See the module comment. */
export class FailStop {
  /** Set by the first failed commit (see Store.failure). */
  failure: TroupeError | undefined;
  readonly #listeners: Array<(failure: TroupeError) => void> = [];

  /** Stops the store after a failed commit, and tells the listeners once. */
  fail(cause: Error): void {
    if (this.failure) return;
    this.failure = new TroupeError(
      'STORE_FAILED',
      `the store stopped after a failed commit (${cause?.message ?? String(cause)}); nothing more is written until it is opened again (the runtime retries on its own once there is room)`,
      { cause },
    );
    for (const listener of this.#listeners) {
      try {
        listener(this.failure);
      } catch {
        // The store stops whatever a listener does.
      }
    }
  }

  onFailure(listener: (failure: TroupeError) => void): void {
    this.#listeners.push(listener);
  }

  /** Why the store takes no more work (closed, or stopped), as a rejection; undefined while it does. */
  refusal(closed: boolean): Promise<never> | undefined {
    if (closed) return Promise.reject(new TroupeError('CLOSED', 'the store is closed'));
    if (this.failure) return Promise.reject(this.failure);
    return undefined;
  }
}
