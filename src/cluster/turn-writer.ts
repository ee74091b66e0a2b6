/**
 * Writes of a node's attempts batched per turn (log lines, progress: log-writer.ts): what the
 * threads report in one event-loop turn, of every attempt, goes in one fenced statement at the end
 * of the turn. One write is in flight at a time, so an attempt's writes commit in the order it
 * made them; what comes meanwhile waits, and goes together in the next write. An attempt's waiters
 * ({@link TurnWriter.written}) hear once everything of it queued so far is written or dropped.
 *
 * A write that failed (the server, the connection) is tried again before anything queued after
 * it, after `retryMs`. Rows of an attempt that is no longer current are dropped by the fence, and
 * a batch refused as malformed is dropped: both are logged.
 */
import type { Clock, ClockTimer } from '../clock.js';
import { isTroupeError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Lease } from '../store/postgres/checks.js';

/** What a writer needs from its node. */
export interface TurnWriterDeps {
  log: Logger;
  clock: Clock;
  /** Wait before a write that failed is tried again. */
  retryMs: number;
}

/** How a writer stores a batch, and what its log calls the rows (`log lines`, `progress reports`). */
export interface TurnWriterStore<T> {
  noun: string;
  /** One fenced statement; resolves with the attempts found stale (none of their rows stored). */
  write(batch: T[]): Promise<{ stale: Lease[] }>;
}

/** Rows of one attempt not yet written (queued or in flight), and who waits for them. */
interface Unwritten {
  count: number;
  waiters: Array<() => void>;
}

/** See the module comment. */
export class TurnWriter<T extends { attemptId: string }> {
  readonly #k: TurnWriterDeps;
  readonly #store: TurnWriterStore<T>;
  #pending: T[] = [];
  readonly #unwritten = new Map<string, Unwritten>();
  #writing = false;
  #scheduled = false;
  #retry: ClockTimer | undefined;
  readonly #idle = new Set<() => void>();

  constructor(deps: TurnWriterDeps, store: TurnWriterStore<T>) {
    this.#k = deps;
    this.#store = store;
  }

  /** Queues an attempt's rows for the end of this turn's write. */
  push(attemptId: string, rows: readonly T[]): void {
    if (rows.length === 0) return;
    this.#pending.push(...rows);
    let unwritten = this.#unwritten.get(attemptId);
    if (!unwritten) this.#unwritten.set(attemptId, (unwritten = { count: 0, waiters: [] }));
    unwritten.count += rows.length;
    this.#schedule();
  }

  /** Resolves once every row of the attempt queued so far is written or dropped; undefined when none is left. */
  written(attemptId: string): Promise<void> | undefined {
    const unwritten = this.#unwritten.get(attemptId);
    return unwritten && new Promise((resolve) => unwritten.waiters.push(resolve));
  }

  /** Resolves once nothing is queued or in flight. */
  idle(): Promise<void> {
    if (this.#pending.length === 0 && !this.#writing) return Promise.resolve();
    return new Promise((resolve) => this.#idle.add(resolve));
  }

  /**
   * Stops trying a failed write again (the node closes): what is queued is dropped, and every
   * waiter hears now, a write in flight or not, so no settle is left waiting.
   */
  abandon(): void {
    if (this.#retry !== undefined) this.#k.clock.clearTimeout(this.#retry);
    this.#retry = undefined;
    const left = this.#pending.splice(0);
    if (left.length > 0) this.#k.log.warn({ count: left.length }, `closing with ${this.#store.noun} that could not be stored`);
    for (const { waiters } of this.#unwritten.values()) for (const resolve of waiters) resolve();
    this.#unwritten.clear();
    this.#checkIdle();
  }

  #schedule(): void {
    if (this.#scheduled || this.#writing || this.#retry !== undefined) return;
    this.#scheduled = true;
    // After this turn's I/O callbacks: the rows the threads reported in this turn go together.
    setImmediate(() => void this.#write());
  }

  async #write(): Promise<void> {
    this.#scheduled = false;
    if (this.#pending.length === 0) return this.#checkIdle();
    const batch = this.#pending;
    this.#pending = [];
    this.#writing = true;
    const { noun } = this.#store;
    let failed = false;
    try {
      const { stale } = await this.#store.write(batch);
      for (const lease of stale) this.#k.log.warn({ taskId: lease.taskId, token: lease.token }, `stale ${noun} dropped: the attempt is no longer current`);
    } catch (error) {
      if (isTroupeError(error, 'INVALID_INPUT')) this.#k.log.error({ err: error, count: batch.length }, `the store refused a batch of ${noun}; they are dropped`);
      else {
        failed = true;
        this.#k.log.error({ err: error, count: batch.length }, `storing ${noun} failed; trying again`);
        this.#pending = [...batch, ...this.#pending];
      }
    } finally {
      this.#writing = false;
    }
    if (failed) {
      this.#retry = this.#k.clock.setTimeout(() => {
        this.#retry = undefined;
        this.#schedule();
      }, this.#k.retryMs);
    } else {
      this.#done(batch);
      if (this.#pending.length > 0) this.#schedule();
    }
    this.#checkIdle();
  }

  /** Rows written or dropped: their attempts' waiters hear it once none of theirs is left. */
  #done(rows: readonly T[]): void {
    for (const { attemptId } of rows) {
      const unwritten = this.#unwritten.get(attemptId);
      if (!unwritten || --unwritten.count > 0) continue;
      this.#unwritten.delete(attemptId);
      for (const resolve of unwritten.waiters) resolve();
    }
  }

  #checkIdle(): void {
    if (this.#pending.length > 0 || this.#writing) return;
    for (const resolve of this.#idle) resolve();
    this.#idle.clear();
  }
}
