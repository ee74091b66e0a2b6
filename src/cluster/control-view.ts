/**
 * The cluster's freeze flag as one runtime on PostgreSQL shows it in `stats()`: read as the
 * runtime starts and after its own freeze or unfreeze, again when a commit's NOTIFY hints that the
 * controls changed (whether the runtime's feed reads events or not), and taken from
 * `runtime.frozen` / `runtime.unfrozen` while the feed reads them (before the runtime's listeners
 * hear them). Each answer is as of its `since`: an older one (a read that raced a later change)
 * is dropped.
 */
import type pg from 'pg';
import type { RuntimeEvent } from '../api/events.js';
import type { Logger } from '../log.js';
import { clusterControl, type ClusterControl } from '../store/postgres/control.js';

/** See the module comment. */
export class ControlView {
  readonly #pool: pg.Pool;
  readonly #log: Logger;
  #control: ClusterControl = { frozen: false, killed: false, since: 0 };

  constructor(pool: pg.Pool, log: Logger) {
    this.#pool = pool;
    this.#log = log;
  }

  /** The flag as last seen. */
  get current(): ClusterControl {
    return this.#control;
  }

  /** Reads the flag now. */
  async read(): Promise<void> {
    this.#set(await clusterControl(this.#pool));
  }

  /** Reads the flag soon (a hint said it changed); a failed read is logged, and the next hint or event sets it. */
  refresh(): void {
    this.read().catch((error: unknown) => this.#log.warn({ err: error }, 'reading the cluster controls failed'));
  }

  /** The feed's sink: the flag from its events. */
  readonly observe = (events: readonly RuntimeEvent[]): void => {
    for (const event of events) {
      if (event.type === 'runtime.frozen') this.#set({ frozen: true, killed: event.data.killed, reason: event.data.reason ?? 'frozen', since: event.at });
      else if (event.type === 'runtime.unfrozen') this.#set({ frozen: false, killed: false, since: event.at });
    }
  };

  #set(control: ClusterControl): void {
    if (control.since >= this.#control.since) this.#control = control;
  }
}
