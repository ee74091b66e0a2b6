/**
 * Reading the durable log lines agents write through `ctx.log`. Lines are keyed by
 * (task, run, attempt, line), so one task's lines are one contiguous, ordered range.
 */
import type { SafeDatabase } from '../store/safe-read.js';
import type { LogRecord } from '../store/records.js';
import { TroupeError } from '../errors.js';

/** A stored log line with its position. */
export interface LogLine extends LogRecord {
  taskId: string;
  /** Opaque, sortable position of the line within its task; pass it as `after` to resume. */
  cursor: string;
}

/** Options of `rt.logs()`. */
export interface LogOptions {
  /** Only lines after this cursor. */
  after?: string;
}

type LogKey = [string, number, number, number];

const pad = (n: number) => n.toString().padStart(10, '0');

function toCursor(key: LogKey): string {
  return `${pad(key[1])}.${pad(key[2])}.${pad(key[3])}`;
}

function fromCursor(cursor: string): [number, number, number] {
  const match = typeof cursor === 'string' ? /^(\d{10})\.(\d{10})\.(\d{10})$/.exec(cursor) : null;
  if (!match) throw new TroupeError('INVALID_INPUT', `invalid log cursor ${JSON.stringify(cursor)}`);
  return [Number(match[1]), Number(match[2]), Number(match[3])];
}

/** Yields a task's stored lines in order. */
export async function* readLogs(db: SafeDatabase<LogRecord, LogKey>, taskId: string, options: LogOptions = {}): AsyncGenerator<LogLine> {
  const start: LogKey = options.after === undefined ? [taskId, 0, 0, 0] : [taskId, ...fromCursor(options.after)];
  for (const { key, value } of db.range({ start, end: [taskId, Number.MAX_SAFE_INTEGER, 0, 0] })) {
    const cursor = toCursor(key);
    if (options.after !== undefined && cursor <= options.after) continue;
    yield { ...value, taskId, cursor };
  }
}
