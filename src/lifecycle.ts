/**
 * The runtime's lifecycle, `starting → running → draining → closed`, in one place: the only
 * setter checks each change against the allowed ones and logs it, and the guards name the state a
 * refused call met.
 */
import { TroupeError } from './errors.js';
import type { Logger } from './log.js';

/** Lifecycle states of a runtime. */
export type RuntimeState = 'starting' | 'running' | 'draining' | 'closed';

/** Options of `rt.close()`. */
export interface CloseOptions {
  /** How long running attempts may take to finish before they are interrupted. @default 15_000 */
  timeoutMs?: number;
  /** Interrupt running attempts at once. @default false */
  force?: boolean;
}

const NEXT: Readonly<Record<RuntimeState, readonly RuntimeState[]>> = {
  // A start that fails drains and closes what it opened.
  starting: ['running', 'draining'],
  running: ['draining'],
  draining: ['closed'],
  closed: [],
};

/** Validates `close()` options before anything else happens; returns them with defaults. */
export function validateCloseOptions(options: unknown): Required<CloseOptions> {
  if (options === undefined) return { timeoutMs: 15_000, force: false };
  if (typeof options !== 'object' || options === null || Array.isArray(options)) throw new TroupeError('INVALID_OPTIONS', 'close: options must be an object');
  for (const key of Object.keys(options)) {
    if (key !== 'timeoutMs' && key !== 'force') throw new TroupeError('INVALID_OPTIONS', `close: ${key} is not a close option (timeoutMs, force)`);
  }
  const { timeoutMs = 15_000, force = false } = options as CloseOptions;
  if (!(Number.isSafeInteger(timeoutMs) && timeoutMs >= 0)) throw new TroupeError('INVALID_OPTIONS', 'close: timeoutMs must be a non-negative integer');
  if (typeof force !== 'boolean') throw new TroupeError('INVALID_OPTIONS', 'close: force must be a boolean');
  return { timeoutMs, force };
}

/** See the module comment. */
export class Lifecycle {
  #state: RuntimeState = 'starting';
  readonly #log: Logger;

  constructor(log: Logger) {
    this.#log = log;
  }

  get state(): RuntimeState {
    return this.#state;
  }

  /** Moves to `next`, or throws ILLEGAL_STATE for a change the lifecycle does not allow. */
  set(next: RuntimeState, details: Record<string, unknown> = {}): void {
    const from = this.#state;
    if (!NEXT[from].includes(next)) throw new TroupeError('ILLEGAL_STATE', `the runtime cannot go from ${from} to ${next}`);
    this.#state = next;
    this.#log.info({ from, to: next, ...details }, `runtime ${next}`);
  }

  /** Throws unless running: CLOSED while draining or closed, ILLEGAL_STATE while starting. */
  assertRunning(call: string): void {
    if (this.#state === 'running') return;
    if (this.#state === 'starting') throw new TroupeError('ILLEGAL_STATE', `${call}: the runtime is still starting`);
    throw new TroupeError('CLOSED', `${call}: the runtime is ${this.#state}`);
  }
}
