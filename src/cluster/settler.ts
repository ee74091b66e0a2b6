/**
 * A node's settles, batched per turn: every attempt end queued in one event-loop turn goes in one
 * settleAttempts call (one transaction), at the end of the turn. Up to `inFlight` such
 * transactions run at once, each on a connection of its own, so the ends of the next turn need
 * not wait for the commit of this one; once that many are in flight, ends keep queueing and go
 * together in the next one, so under load the batches grow instead of the transactions
 * multiplying (group commit, as the LMDB pipeline does). Batches in flight together never share
 * an attempt, and settleAttempts locks rows in id order, so they cannot deadlock one another.
 *
 * A batch the server refuses for what it holds (a data exception, a constraint, a limit: never a
 * lost connection or a conflict) would fail again however often tried, and every end queued
 * behind it with it: such a batch is split in halves, each tried alone, until the end it cannot
 * take is alone and is refused, as an end the queue refuses (INVALID_INPUT) is.
 */
import type pg from 'pg';
import type { Clock, ClockTimer } from '../clock.js';
import { isTroupeError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Lease } from '../store/postgres/queue.js';
import type { AttemptEnd } from '../store/postgres/settle.js';
import type { TaskState } from '../../machines/index.js';
import type { ClusterQueue } from './options.js';

/** What became of one end: the task's new state, stale (nothing written), or refused by the queue. */
export type SettleOutcome = { state: TaskState } | { stale: true } | { refused: Error };

interface Pending {
  end: AttemptEnd;
  done: (outcome: SettleOutcome) => void;
}

/** See the module comment. */
export class Settler {
  readonly #pool: pg.Pool;
  readonly #queue: Pick<ClusterQueue, 'settle'>;
  readonly #log: Logger;
  readonly #clock: Clock;
  readonly #retryMs: number;
  readonly #inFlight: number;
  #pending: Pending[] = [];
  /** Settle transactions under way. */
  #flushing = 0;
  #scheduled = false;
  #retry: ClockTimer | undefined;
  /** The most ends a batch takes: all of them, but halved after a batch the server refused for its content, until the queue drains. */
  #cap = Number.POSITIVE_INFINITY;
  readonly #idle = new Set<() => void>();

  /**
   * `retryMs`: the wait before a batch whose transaction failed (the server or the connection) is
   * tried again; `inFlight`: how many settle transactions may run at once.
   */
  constructor(pool: pg.Pool, queue: Pick<ClusterQueue, 'settle'>, log: Logger, clock: Clock, retryMs: number, inFlight: number) {
    this.#pool = pool;
    this.#queue = queue;
    this.#log = log;
    this.#clock = clock;
    this.#retryMs = retryMs;
    this.#inFlight = inFlight;
  }

  /** Queues `end` for this turn's batch; `done` hears what became of it once its transaction is over. */
  add(end: AttemptEnd, done: (outcome: SettleOutcome) => void): void {
    this.#pending.push({ end, done });
    this.#schedule();
  }

  /** Resolves once nothing is queued or in flight. */
  idle(): Promise<void> {
    if (this.#pending.length === 0 && this.#flushing === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idle.add(resolve));
  }

  /** Stops retrying a failed batch: what is left stays unsettled (its leases run out, and a sweeper ends it). */
  abandon(): void {
    if (this.#retry !== undefined) this.#clock.clearTimeout(this.#retry);
    this.#retry = undefined;
    const left = this.#pending.splice(0);
    if (left.length > 0) this.#log.warn({ attempts: left.length }, 'closing with attempt ends that could not be settled; their leases will run out');
    for (const { done } of left) done({ refused: new Error('the node closed before this end could be settled') });
    this.#checkIdle();
  }

  #schedule(): void {
    if (this.#scheduled || this.#flushing >= this.#inFlight || this.#retry !== undefined) return;
    this.#scheduled = true;
    // After this turn's I/O callbacks: the ends that threads reported in this turn go together.
    setImmediate(() => void this.#flush().catch((error: unknown) => this.#log.error({ err: error }, 'the settle loop failed')));
  }

  async #flush(): Promise<void> {
    this.#scheduled = false;
    if (this.#pending.length === 0) return this.#checkIdle();
    const batch = this.#pending.length <= this.#cap ? this.#pending : this.#pending.slice(0, this.#cap);
    this.#pending = batch === this.#pending ? [] : this.#pending.slice(this.#cap);
    this.#flushing++;
    let failed = false;
    try {
      const { settled, stale } = await this.#queue.settle(this.#pool, batch.map((p) => p.end));
      const states = new Map(settled.map((s) => [leaseKey(s), s.state]));
      const stales = new Set(stale.map(leaseKey));
      for (const { end, done } of batch) {
        const state = states.get(leaseKey(end));
        if (state !== undefined) done({ state });
        else {
          // A sweeper took the attempt back first (its lease ran out, or this node was taken for dead).
          if (!stales.has(leaseKey(end))) this.#log.error({ taskId: end.taskId, token: end.token }, 'the settle answered nothing for an attempt end');
          this.#log.warn({ taskId: end.taskId, token: end.token, exit: end.exit }, 'stale settle dropped: the attempt is no longer current');
          done({ stale: true });
        }
      }
    } catch (error) {
      const refusedByServer = refusedForContent(error);
      if (refusedByServer && batch.length > 1) {
        // One end of the batch, or several, cannot be written: the halves go alone, at once.
        this.#cap = Math.ceil(batch.length / 2);
        this.#log.warn({ err: error, attempts: batch.length }, 'the server refused a settle batch; trying its halves alone');
        this.#pending = [...batch, ...this.#pending];
      } else if (refusedByServer || isTroupeError(error, 'INVALID_INPUT')) {
        // Never valid, however often tried: the ends are dropped (their leases run out and a
        // sweeper ends them), so one bad end cannot hold the node's settles up for good.
        this.#log.error({ err: error, attempts: batch.length }, 'the queue refused a settle batch; its attempts are left to the sweeper');
        for (const { done } of batch) done({ refused: error as Error });
      } else {
        failed = true;
        this.#log.error({ err: error, attempts: batch.length }, 'settling attempts failed; trying again');
        this.#pending = [...batch, ...this.#pending];
      }
    } finally {
      this.#flushing--;
    }
    if (failed) {
      if (this.#retry !== undefined) return;
      this.#retry = this.#clock.setTimeout(() => {
        this.#retry = undefined;
        this.#schedule();
      }, this.#retryMs);
    } else if (this.#pending.length > 0) this.#schedule();
    else this.#cap = Number.POSITIVE_INFINITY;
    this.#checkIdle();
  }

  #checkIdle(): void {
    if (this.#pending.length > 0 || this.#flushing > 0) return;
    for (const resolve of this.#idle) resolve();
    this.#idle.clear();
  }
}

/**
 * Whether the server refused a settle for what it holds, so that trying it again cannot succeed:
 * SQLSTATE classes 22 (data exception), 23 (integrity constraint), 42 (syntax or access rule), 54
 * (program limit exceeded) and 0A (feature not supported). A lost connection, a server shutting
 * down, a serialization failure or a deadlock is none of these, and is tried again.
 */
function refusedForContent(error: unknown): boolean {
  const code = ((error as { cause?: { code?: unknown } })?.cause ?? (error as { code?: unknown }))?.code;
  return typeof code === 'string' && /^(22|23|42|54|0A)/.test(code);
}

function leaseKey(lease: Lease): string {
  return `${lease.taskId}\u0000${lease.token}`;
}
