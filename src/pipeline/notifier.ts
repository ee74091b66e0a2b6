/**
 * The internal notifier: how the runtime's parts learn that a task settled (after the commit that
 * settled it) or that an attempt ended (as the dispatcher lets it go). These are internal news,
 * never sent through the public event bus, so a listener a user adds or removes cannot change what
 * the runtime does. A listener that throws is reported and the others still run.
 */

/** Told that a task reached a terminal state, once its commit is durable. */
export type SettledListener = (taskId: string) => void;
/** Told that an attempt ended (settled, abandoned or stale), before its settle is decided. */
export type AttemptEndedListener = (taskId: string, attemptId: string) => void;

/** See the module comment. */
export class Notifier {
  readonly #settled: SettledListener[] = [];
  readonly #ended: AttemptEndedListener[] = [];
  readonly #onError: (error: unknown, what: string) => void;

  /** `onError` hears about a listener that threw. */
  constructor(onError: (error: unknown, what: string) => void = () => undefined) {
    this.#onError = onError;
  }

  onSettled(listener: SettledListener): void {
    this.#settled.push(listener);
  }

  /** A task settled and its commit is durable. */
  settled(taskId: string): void {
    for (const listener of this.#settled) {
      try {
        listener(taskId);
      } catch (error) {
        this.#onError(error, 'settled');
      }
    }
  }

  onAttemptEnded(listener: AttemptEndedListener): void {
    this.#ended.push(listener);
  }

  /** An attempt ended. */
  attemptEnded(taskId: string, attemptId: string): void {
    for (const listener of this.#ended) {
      try {
        listener(taskId, attemptId);
      } catch (error) {
        this.#onError(error, 'attemptEnded');
      }
    }
  }
}
