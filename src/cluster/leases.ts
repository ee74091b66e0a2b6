/**
 * A node's lease renewals: every `everyMs` (about a third of the lease), one renewLeases call (one
 * statement) for all the leases the node still stands behind. What to renew, and what to do with a
 * lease the cluster has taken back, is the node's: see node-attempts.ts.
 */
import type pg from 'pg';
import type { Clock } from '../clock.js';
import type { Logger } from '../log.js';
import type { Lease } from '../store/postgres/queue.js';
import { Every } from './every.js';
import type { ClusterQueue } from './options.js';

/** What a lease keeper needs from its node. */
export interface LeaseKeeperDeps {
  pool: pg.Pool;
  queue: Pick<ClusterQueue, 'renew'>;
  leaseMs: number;
  everyMs: number;
  clock: Clock;
  log: Logger;
  /** The leases to renew now (called once per tick). */
  due(): Lease[];
  /** Leases whose attempt is no longer current: a sweeper took it back. */
  lost(leases: Lease[]): void;
  /** Leases renewed whose task a user asked to cancel (the backstop of the cancel's NOTIFY). */
  cancels(leases: Array<Lease & { reason: string }>): void;
  /** Called at each tick with leases to renew: the node's backstop of a kill's NOTIFY (node-kill.ts). */
  renewing?(): void;
  /** Leases renewed whose task has had inputs delivered (the backstop of an input's NOTIFY). */
  inputs?(leases: Array<Lease & { delivered: number }>): void;
}

/** See the module comment. */
export class LeaseKeeper {
  readonly #k: LeaseKeeperDeps;
  readonly #every: Every;

  constructor(deps: LeaseKeeperDeps) {
    this.#k = deps;
    this.#every = new Every(deps.clock, deps.everyMs, () => this.#renew());
  }

  /** Renews every `everyMs`, the first after `everyMs`. */
  start(): void {
    this.#every.start(false);
  }

  /** Renews nothing more; resolves once a renewal under way is over. */
  stop(): Promise<void> {
    return this.#every.stop();
  }

  async #renew(): Promise<void> {
    try {
      const leases = this.#k.due();
      if (leases.length === 0) return;
      this.#k.renewing?.();
      const { lost, cancels, inputs } = await this.#k.queue.renew(this.#k.pool, leases, this.#k.leaseMs);
      if (lost.length > 0) this.#k.lost(lost);
      // A fake queue of the tests may leave cancels out.
      if (cancels?.length) this.#k.cancels(cancels);
      if (inputs?.length) this.#k.inputs?.(inputs);
    } catch (error) {
      // The next tick tries again; a lease has two more ticks before it runs out.
      this.#k.log.error({ err: error }, 'renewing leases failed');
    }
  }
}
