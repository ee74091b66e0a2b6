/**
 * A node's cron: it calls fireDue once when the node starts and then every `everyMs`, so each tick
 * of the cluster's schedules fires while any node lives. Every node runs one; fireDue's row lock
 * and compare-and-swap (src/store/postgres/schedules.ts) make exactly one of them fire each tick,
 * whichever calls first after it falls due. A tick is late by at most about `everyMs` plus a fire's
 * transaction. The tasks a fire submits are claimed like any other; the node wakes its own claimer
 * so it need not wait for its poll.
 */
import type pg from 'pg';
import type { Clock } from '../clock.js';
import { isTroupeError } from '../errors.js';
import type { Logger } from '../log.js';
import type { FireResult } from '../store/postgres/schedule-fire.js';
import { Every } from './every.js';
import type { ClusterQueue } from './options.js';

/** What a firer needs from its node. */
export interface FirerDeps {
  pool: pg.Pool;
  queue: Pick<ClusterQueue, 'fire'>;
  /** The node's id in the cluster. */
  node: string;
  everyMs: number;
  clock: Clock;
  log: Logger;
  /** A fire submitted tasks. */
  fired(result: FireResult): void;
  /** The cluster refused the fire: this node is no longer a member (found dead, or it left). */
  refused(error: Error): void;
}

/** See the module comment. */
export class Firer {
  readonly #k: FirerDeps;
  readonly #every: Every;

  constructor(deps: FirerDeps) {
    this.#k = deps;
    this.#every = new Every(deps.clock, deps.everyMs, () => this.#fire());
  }

  /** Fires what is due now, then every `everyMs`. */
  start(): void {
    this.#every.start(true);
  }

  /** Fires nothing more; resolves once a fire under way is over. */
  stop(): Promise<void> {
    return this.#every.stop();
  }

  async #fire(): Promise<void> {
    try {
      const result = await this.#k.queue.fire(this.#k.pool, this.#k.node);
      if (result.unusable.length > 0) this.#k.log.warn({ unusable: result.unusable }, 'schedules whose cron no longer compiles were not fired');
      if (result.fired.length > 0) this.#k.fired(result);
    } catch (error) {
      if (isTroupeError(error, 'ILLEGAL_STATE')) {
        this.#every.halt();
        this.#k.refused(error);
        return;
      }
      // The next tick tries again: a tick left due fires then.
      this.#k.log.error({ err: error }, 'firing schedules failed; trying again');
    }
  }
}
