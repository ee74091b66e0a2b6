/**
 * Reading the durable log lines agents write through `ctx.log`. Lines are keyed by
 * (task, run, attempt, line), so one task's lines are one contiguous, ordered range.
 */
import type { SafeDatabase } from '../store/port.js';
import type { LogRecord } from '../store/records.js';
import { TroupeError } from '../errors.js';
import { heldUntilWoken, type Release } from '../keep-alive.js';
import { checkCallOptions } from '../options.js';

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
  /** After the stored lines, keep yielding new ones as they are committed, until the task is terminal or needs attention (or `signal` aborts, or the runtime closes). */
  follow?: boolean;
  signal?: AbortSignal;
}

/** The options `rt.logs()` takes. */
const LOG_OPTIONS = ['after', 'follow', 'signal'] as const satisfies ReadonlyArray<keyof LogOptions>;

/**
 * `rt.logs()`'s options, checked the same way on either store before anything is read:
 * INVALID_OPTIONS for options that are not a plain object, an unknown option, a `follow` that is
 * not a boolean or a `signal` that is not an AbortSignal; INVALID_INPUT for a malformed cursor.
 */
export function checkLogOptions(options: unknown): LogOptions {
  checkCallOptions(options, LOG_OPTIONS, 'logs');
  const checked = (options ?? {}) as LogOptions;
  if (checked.after !== undefined) fromLogCursor(checked.after);
  if (checked.follow !== undefined && typeof checked.follow !== 'boolean') throw new TroupeError('INVALID_OPTIONS', 'logs: follow must be a boolean');
  if (checked.signal !== undefined && !(checked.signal instanceof AbortSignal)) throw new TroupeError('INVALID_OPTIONS', 'logs: signal must be an AbortSignal');
  return checked;
}

/** Committed log lines, published per task so `rt.logs(id, { follow: true })` can go live. */
export class LogFeed {
  readonly #subscribers = new Map<string, Set<(line: LogLine) => void>>();

  /** Publishes lines whose commit has landed, in key order. */
  publish(taskId: string, lines: ReadonlyArray<{ key: LogKey; record: LogRecord }>): void {
    const subscribers = this.#subscribers.get(taskId);
    if (!subscribers) return;
    for (const { key, record } of lines) {
      const line: LogLine = { ...record, taskId, cursor: toCursor(key) };
      for (const subscriber of subscribers) subscriber(line);
    }
  }

  subscribe(taskId: string, fn: (line: LogLine) => void): () => void {
    let set = this.#subscribers.get(taskId);
    if (!set) this.#subscribers.set(taskId, (set = new Set()));
    set.add(fn);
    return () => {
      set.delete(fn);
      if (set.size === 0 && this.#subscribers.get(taskId) === set) this.#subscribers.delete(taskId);
    };
  }
}

/** What following needs besides the stored lines: the live feed and when to stop. */
export interface FollowSource {
  feed: LogFeed;
  /** Resolves when the task is terminal (and its last lines are committed), or the runtime closes. */
  ended: Promise<unknown>;
  /** Called once the follow ends for any reason, to drop what `ended` waits with. */
  release?: () => void;
  /** Keeps the process alive while the follow waits for its next line (see keep-alive.ts). */
  hold(): Release;
}

/**
 * Replays a task's stored lines, then (with `follow`) yields live ones until the task is terminal.
 * It subscribes before replaying and skips live lines at or before the last replayed cursor, so
 * there is no gap and no duplicate across the switch.
 */
export async function* followLogs(db: () => SafeDatabase<LogRecord, LogKey>, taskId: string, options: LogOptions, source: FollowSource | undefined): AsyncGenerator<LogLine> {
  if (!options.follow || !source) {
    yield* readLogs(db, taskId, options);
    return;
  }
  const buffer: LogLine[] = [];
  let wake: (() => void) | undefined;
  let ended = false;
  const notify = () => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  const unsubscribe = source.feed.subscribe(taskId, (line) => {
    buffer.push(line);
    notify();
  });
  const end = () => {
    ended = true;
    notify();
  };
  void source.ended.then(end, end);
  options.signal?.addEventListener('abort', end, { once: true });
  let last = options.after ?? '';
  try {
    for await (const line of readLogs(db, taskId, options)) {
      last = line.cursor;
      yield line;
      if (options.signal?.aborted) return;
    }
    for (;;) {
      while (buffer.length > 0) {
        const line = buffer.shift()!;
        if (line.cursor <= last) continue;
        last = line.cursor;
        yield line;
      }
      if (ended || options.signal?.aborted) return;
      await heldUntilWoken(() => source.hold(), (resolve) => (wake = resolve), options.signal);
    }
  } finally {
    unsubscribe();
    options.signal?.removeEventListener('abort', end);
    source.release?.();
  }
}

type LogKey = [string, number, number, number];

const pad = (n: number) => n.toString().padStart(10, '0');

/** The cursor of a task's line `seq` of `attempt` in `run`: fixed-width, so cursors sort as the lines do. */
export function toLogCursor(run: number, attempt: number, seq: number): string {
  return `${pad(run)}.${pad(attempt)}.${pad(seq)}`;
}

function toCursor(key: LogKey): string {
  return toLogCursor(key[1], key[2], key[3]);
}

/** The (run, attempt, seq) of a cursor from {@link toLogCursor}, or INVALID_INPUT. */
export function fromLogCursor(cursor: string): [number, number, number] {
  const match = typeof cursor === 'string' ? /^(\d{10})\.(\d{10})\.(\d{10})$/.exec(cursor) : null;
  if (!match) throw new TroupeError('INVALID_INPUT', `invalid log cursor ${JSON.stringify(cursor)}`);
  return [Number(match[1]), Number(match[2]), Number(match[3])];
}

/** Yields a task's stored lines in order. */
export async function* readLogs(db: () => SafeDatabase<LogRecord, LogKey>, taskId: string, options: LogOptions = {}): AsyncGenerator<LogLine> {
  let after = options.after;
  const end: LogKey = [taskId, Number.MAX_SAFE_INTEGER, 0, 0];
  for (;;) {
    // A chunk is read at once, from the store as it is now: no read of it stays open across a
    // yield (the store may be closed and opened again meanwhile; `db` throws while it is down).
    const start: LogKey = after === undefined ? [taskId, 0, 0, 0] : [taskId, ...fromLogCursor(after)];
    const chunk: LogLine[] = [];
    let read = 0;
    for (const { key, value } of db().range({ start, end, limit: LOG_CHUNK })) {
      read++;
      const cursor = toCursor(key);
      if (after !== undefined && cursor <= after) continue;
      chunk.push({ ...value, taskId, cursor });
    }
    for (const line of chunk) yield line;
    if (read < LOG_CHUNK) return;
    after = chunk.at(-1)?.cursor ?? after;
  }
}

/** Stored lines a read takes at once. */
export const LOG_CHUNK = 256;
