/**
 * What a node's attempts report for the record: their log lines (`ctx.log`) and their progress
 * (`ctx.progress`), each batched per turn (turn-writer.ts): the lines its threads report in one
 * event-loop turn, of every attempt, go in one fenced statement at the end of the turn
 * (src/store/postgres/logs.ts writeLogLines), and so do the progress reports
 * (src/store/postgres/progress.ts writeProgress). One write of each is in flight at a time, so an
 * attempt's lines commit in the order it wrote them, which readers rely on (a cursor read of key
 * order has no gap), and its progress events in the order it reported them. An attempt's settle
 * waits for both ({@link LogWriter.written}), so a reader who sees its task settled sees every line
 * it wrote and its last progress.
 *
 * The threads throttle and coalesce progress (actors/attempt.ts: the latest report of a turn, at
 * most one per attempt every 100 ms), as on LMDB; each report that reaches the node is stored.
 */
import type pg from 'pg';
import type { WireLogLine } from '../../actors/wire.js';
import type { Clock } from '../clock.js';
import type { Logger } from '../log.js';
import type { LogWrite } from '../store/postgres/logs.js';
import type { ProgressWrite } from '../store/postgres/progress.js';
import type { ClaimedTask } from '../store/postgres/queue.js';
import { jsonOf, withoutNul } from '../store/postgres/transaction.js';
import type { ClusterQueue } from './options.js';
import { TurnWriter } from './turn-writer.js';

/** What the writer needs from its node. */
export interface LogWriterDeps {
  pool: pg.Pool;
  queue: Pick<ClusterQueue, 'log' | 'progress'>;
  log: Logger;
  clock: Clock;
  /** Wait before a write that failed is tried again. */
  retryMs: number;
}

/** The attempt a write is for. */
type Claimed = Pick<ClaimedTask, 'id' | 'token' | 'run' | 'attempt' | 'attemptId'>;

/** See the module comment. */
export class LogWriter {
  readonly #log: Logger;
  readonly #lines: TurnWriter<LogWrite>;
  readonly #progress: TurnWriter<ProgressWrite>;

  constructor(deps: LogWriterDeps) {
    const { pool, queue } = deps;
    this.#log = deps.log;
    this.#lines = new TurnWriter(deps, { noun: 'log lines', write: (batch) => queue.log(pool, batch) });
    this.#progress = new TurnWriter(deps, { noun: 'progress reports', write: (batch) => queue.progress(pool, batch) });
  }

  /** Queues the lines an attempt's thread reported, numbered from `seq` on; returns the next number. */
  add(claimed: Claimed, seq: number, lines: readonly WireLogLine[]): number {
    const { id: taskId, token, run, attempt, attemptId } = claimed;
    const rows = lines.map(([level, text, at, fields]) => {
      const line: LogWrite = { taskId, token, run, attempt, attemptId, seq: seq++, level, message: withoutNul(text), at };
      if (fields !== undefined) line.fields = storableFields(fields);
      return line;
    });
    this.#lines.push(attemptId, rows);
    // As the LMDB runtime does (src/tasks/attempt-writes.ts), the node's own log has them at debug.
    if (this.#log.isLevelEnabled('debug')) {
      for (const [level, text] of lines) this.#log.debug({ taskId, attemptId, agentLevel: level }, text);
    }
    return seq;
  }

  /** Queues a progress report of an attempt's agent (its thread's clock: `at`). */
  progress(claimed: Claimed, value: number, message: string | undefined, at: number): void {
    const { id: taskId, token, attemptId } = claimed;
    const report: ProgressWrite = { taskId, token, attemptId, value, at };
    if (message !== undefined) report.message = withoutNul(message);
    this.#progress.push(attemptId, [report]);
  }

  /** Resolves once every line and report of the attempt queued so far is written or dropped; undefined when none is left. */
  written(attemptId: string): Promise<void> | undefined {
    const lines = this.#lines.written(attemptId);
    const progress = this.#progress.written(attemptId);
    return lines && progress ? Promise.all([lines, progress]).then(() => undefined) : (lines ?? progress);
  }

  /** Resolves once nothing is queued or in flight. */
  async idle(): Promise<void> {
    await Promise.all([this.#lines.idle(), this.#progress.idle()]);
  }

  /**
   * Stops trying a failed write again (the node closes): what is queued is dropped, and every
   * waiter hears now, a write in flight or not, so no settle is left waiting.
   */
  abandon(): void {
    this.#lines.abandon();
    this.#progress.abandon();
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
