/**
 * What keeps the Node process alive for a runtime. An open runtime holds the event loop like a
 * listening `net.Server` does, until `close()`; `unref()` / `ref()` give that up or take it back.
 * Independently, every pending `wait()`, and every `events()` or `logs({ follow })` iteration that
 * waits for the next item, holds the loop while it is pending, so a script never exits with such a
 * promise unsettled (Node's exit code 13), even on an unref'd runtime.
 *
 * The runtime's own timers stay unref'd; one interval handle here is the only thing that holds.
 */

/** Releases one hold; calling it again does nothing. */
export type Release = () => void;

/**
 * The signals of iterations that never hold the loop: the dashboard's streams, so that a page left
 * open does not keep an unref'd runtime's process alive (a page is not a pending promise of the
 * user's). Internal: a user's iteration always holds.
 */
const unheld = new WeakSet<AbortSignal>();

/** An abort whose signal's iterations never hold the loop (see `unheld`): a dashboard stream's. */
export function unheldAbort(): AbortController {
  const stop = new AbortController();
  unheld.add(stop.signal);
  return stop;
}

/** `hold`, unless `signal` is one whose iterations never hold (then a release that does nothing). */
export function holdFor(hold: () => Release, signal: AbortSignal | undefined): Release {
  return signal !== undefined && unheld.has(signal) ? noRelease : hold();
}

const noRelease: Release = () => undefined;

/**
 * Waits, holding the loop (unless `signal` is unheld), until the caller's `wake` is called: how a
 * follow iteration (events, log lines) waits for its next item. `arm` receives the function that
 * ends the wait.
 */
export async function heldUntilWoken(hold: () => Release, arm: (wake: () => void) => void, signal?: AbortSignal): Promise<void> {
  const release = holdFor(hold, signal);
  try {
    await new Promise<void>((resolve) => arm(resolve));
  } finally {
    release();
  }
}

/** See the module comment. */
export class KeepAlive {
  #handle: NodeJS.Timeout | undefined;
  /** Whether the runtime itself holds the loop (`ref()`, the default) while open. */
  #refd = true;
  #open = false;
  #holds = 0;

  /** Holds the loop until the returned function is called. */
  hold(): Release {
    this.add();
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.drop();
    };
  }

  /** Holds the loop while `work` runs: a call its caller awaits (close, kill) that nothing else holds. */
  async during<T>(work: () => Promise<T>): Promise<T> {
    const release = this.hold();
    try {
      return await work();
    } finally {
      release();
    }
  }

  /** Holds the loop once more (a caller that releases exactly once, with {@link KeepAlive.drop}). */
  add(): void {
    if (this.#holds++ === 0) this.#update();
  }

  /** Releases one hold taken with {@link KeepAlive.add}. */
  drop(): void {
    if (--this.#holds === 0) this.#update();
  }

  /** The open runtime holds the loop (the default). */
  ref(): void {
    this.#refd = true;
    this.#update();
  }

  /** The open runtime alone no longer holds the loop; pending waits still do. */
  unref(): void {
    this.#refd = false;
    this.#update();
  }

  /** The runtime is running: from now on it holds the loop while ref'd. */
  open(): void {
    this.#open = true;
    this.#update();
  }

  /** The runtime closed: only holds still pending keep the loop (they end as the close rejects them). */
  close(): void {
    this.#open = false;
    this.#update();
  }

  /** Whether the loop is held right now. */
  get holding(): boolean {
    return this.#handle !== undefined;
  }

  #update(): void {
    const want = (this.#open && this.#refd) || this.#holds > 0;
    if (want && !this.#handle) {
      // The longest interval Node accepts; it never needs to fire, only to exist.
      this.#handle = setInterval(noop, 2 ** 31 - 1);
    } else if (!want && this.#handle) {
      clearInterval(this.#handle);
      this.#handle = undefined;
    }
  }
}

function noop(): void {}
