/**
 * A node's log lines, batched per turn: the lines its threads report in one event-loop turn, of
 * every attempt, go in one fenced statement (src/store/postgres/logs.ts writeLogLines) at the end
 * of the turn. One write is in flight at a time, so an attempt's lines commit in the order it wrote
 * them, which readers rely on (a cursor read of key order has no gap); the lines that come
 * meanwhile wait, and go together in the next write. An attempt's settle waits for its lines
 * ({@link LogWriter.written}), so a reader who sees its task settled sees every line it wrote.
 *
 * A write that failed (the server, the connection) is tried again before anything queued after
 * it, after `retryMs`; a stored line is not stored twice. Lines of an attempt that is no longer
 * current are dropped by the fence, and a batch refused as malformed is dropped: both are logged.
 */
import type pg from 'pg';
import type { WireLogLine } from '../../actors/wire.js';
import type { Clock, ClockTimer } from '../clock.js';
import { isTroupeError } from '../errors.js';
import type { Logger } from '../log.js';
import type { LogWrite } from '../store/postgres/logs.js';
import type { ClaimedTask } from '../store/postgres/queue.js';
import { jsonOf, withoutNul } from '../store/postgres/transaction.js';
import type { ClusterQueue } from './options.js';

/** What the writer needs from its node. */
export interface LogWriterDeps {
  pool: pg.Pool;
  queue: Pick<ClusterQueue, 'log'>;
  log: Logger;
  clock: Clock;
  /** Wait before a write that failed is tried again. */
  retryMs: number;
}

/** Lines of one attempt not yet written (queued or in flight), and who waits for them. */
interface Unwritten {
  count: number;
  waiters: Array<() => void>;
}

/** See the module comment. */
export class LogWriter {
  readonly #k: LogWriterDeps;
  #pending: LogWrite[] = [];
  readonly #unwritten = new Map<string, Unwritten>();
  #writing = false;
  #scheduled = false;
  #retry: ClockTimer | undefined;
  readonly #idle = new Set<() => void>();

  constructor(deps: LogWriterDeps) {
    this.#k = deps;
  }

  /** Queues the lines an attempt's thread reported, numbered from `seq` on; returns the next number. */
  add(claimed: Pick<ClaimedTask, 'id' | 'token' | 'run' | 'attempt' | 'attemptId'>, seq: number, lines: readonly WireLogLine[]): number {
    const { id: taskId, token, run, attempt, attemptId } = claimed;
    for (const [level, text, at, fields] of lines) {
      const line: LogWrite = { taskId, token, run, attempt, attemptId, seq: seq++, level, message: withoutNul(text), at };
      if (fields !== undefined) line.fields = storableFields(fields);
      this.#pending.push(line);
    }
    if (lines.length > 0) {
      let unwritten = this.#unwritten.get(attemptId);
      if (!unwritten) this.#unwritten.set(attemptId, (unwritten = { count: 0, waiters: [] }));
      unwritten.count += lines.length;
      this.#schedule();
    }
    // As the LMDB runtime does (src/tasks/attempt-writes.ts), the node's own log has them at debug.
    if (this.#k.log.isLevelEnabled('debug')) {
      for (const [level, text] of lines) this.#k.log.debug({ taskId, attemptId, agentLevel: level }, text);
    }
    return seq;
  }

  /** Resolves once every line of the attempt queued so far is written or dropped; undefined when none is left. */
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
    if (left.length > 0) this.#k.log.warn({ lines: left.length }, 'closing with log lines that could not be stored');
    for (const { waiters } of this.#unwritten.values()) for (const resolve of waiters) resolve();
    this.#unwritten.clear();
    this.#checkIdle();
  }

  #schedule(): void {
    if (this.#scheduled || this.#writing || this.#retry !== undefined) return;
    this.#scheduled = true;
    // After this turn's I/O callbacks: the lines the threads reported in this turn go together.
    setImmediate(() => void this.#write());
  }

  async #write(): Promise<void> {
    this.#scheduled = false;
    if (this.#pending.length === 0) return this.#checkIdle();
    const batch = this.#pending;
    this.#pending = [];
    this.#writing = true;
    let failed = false;
    try {
      const { stale } = await this.#k.queue.log(this.#k.pool, batch);
      for (const lease of stale) this.#k.log.warn({ taskId: lease.taskId, token: lease.token }, 'stale log lines dropped: the attempt is no longer current');
    } catch (error) {
      if (isTroupeError(error, 'INVALID_INPUT')) this.#k.log.error({ err: error, lines: batch.length }, 'the store refused a batch of log lines; they are dropped');
      else {
        failed = true;
        this.#k.log.error({ err: error, lines: batch.length }, 'storing log lines failed; trying again');
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

  /** Lines written or dropped: their attempts' waiters hear it once none of theirs is left. */
  #done(lines: readonly LogWrite[]): void {
    for (const { attemptId } of lines) {
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

/**
 * `fields` as jsonb can hold them. The LMDB store keeps what a thread sends (Dates, Uint8Arrays,
 * BigInts, strings with NUL); here they are stored as JSON would write them (a Date as its ISO
 * text, a BigInt as its digits), with NUL replaced, or, failing that, as `{ unserializable }`.
 */
function storableFields(fields: Record<string, unknown>): Record<string, unknown> {
  try {
    jsonOf(fields, 'fields');
    return fields;
  } catch {
    // Below: as JSON would write them.
  }
  try {
    const copy = JSON.parse(JSON.stringify(fields, (_key, value: unknown) => (typeof value === 'bigint' ? value.toString() : typeof value === 'string' ? withoutNul(value) : value))) as Record<string, unknown>;
    jsonOf(copy, 'fields');
    return copy;
  } catch (error) {
    return { unserializable: (error as Error).message };
  }
}
