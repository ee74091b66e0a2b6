/**
 * `rt.logs(id, { after, follow, signal })` on PostgreSQL: the lines a task's agents wrote with
 * `ctx.log`, stored by the nodes that ran its attempts (log-writer.ts), read in key order after a
 * per-task cursor (the LMDB runtime's cursors: src/events/logs.ts). One task's lines commit in key
 * order (src/store/postgres/logs.ts), so each read after the last line read has no gap and no
 * duplicate, whichever node wrote them.
 *
 * With `follow`, it reads again until a read finds the task settled for a wait (terminal, or
 * needs attention): each read takes the task's state and its lines from one snapshot, so that read
 * holds every line the task's attempts wrote. Lines are not announced (a NOTIFY per write would
 * cost every node's writes a lock at commit for readers that are seldom there), so a follow polls:
 * {@link MIN_POLL_MS} after a read found lines, backing off to {@link MAX_POLL_MS} while none come;
 * any event of its task (an attempt started or settled, from the runtime's event feed) has it
 * read at once. It ends when `signal` aborts or the runtime closes, and
 * holds the process alive only while it waits, as `events()` does.
 */
import type pg from 'pg';
import { SETTLED_FOR_WAIT } from '../../machines/index.js';
import { TroupeError } from '../errors.js';
import { checkLogOptions, fromLogCursor, LOG_CHUNK, type LogLine, type LogOptions } from '../events/logs.js';
import { checkId } from '../ids.js';
import { holdFor, type Release } from '../keep-alive.js';
import { readLogPage } from '../store/postgres/logs.js';
import type { EventFeed } from './feed.js';

/** The first wait of a follow that found no new line. */
const MIN_POLL_MS = 25;
/** The longest wait of a follow between two reads, while no line comes. */
const MAX_POLL_MS = 500;

/** What the logs need from their runtime. */
export interface ClusterLogsDeps {
  pool: pg.Pool;
  feed: Pick<EventFeed, 'need' | 'subscribe'>;
  /** Holds the process alive while a follow waits (the runtime's KeepAlive). */
  hold(): Release;
  /** Aborts when the runtime closes: every follow ends. */
  closed: AbortSignal;
  /** CLOSED (or ILLEGAL_STATE) naming `call` unless the runtime runs. */
  assertOpen(call: string): void;
}

/** See the module comment. */
export class ClusterLogs {
  readonly #k: ClusterLogsDeps;
  /**
   * The wakes of the follows under way. The runtime's close wakes each through one listener of its
   * own: a listener per follow on the one `closed` signal would pass Node's limit of 10 (a
   * MaxListenersExceededWarning) with the 11th follow at once.
   */
  readonly #follows = new Set<() => void>();

  constructor(deps: ClusterLogsDeps) {
    this.#k = deps;
    deps.closed.addEventListener(
      'abort',
      () => {
        for (const notify of this.#follows) notify();
      },
      { once: true },
    );
  }

  /**
   * `rt.logs()`: the task's lines after `options.after`, then (with `follow`) live ones. A closed
   * runtime, a bad id or a bad option throws here, as on LMDB; an unknown task rejects the first
   * `next()` with NOT_FOUND (LMDB knows its tasks without a read, and throws here).
   */
  readonly iterate = (id: string, options?: LogOptions): AsyncGenerator<LogLine> => {
    this.#k.assertOpen('logs');
    checkId(id, 'logs: id');
    return this.#lines(id, checkLogOptions(options));
  };

  async *#lines(id: string, { after, follow, signal }: LogOptions): AsyncGenerator<LogLine> {
    let cursor = after === undefined ? undefined : fromLogCursor(after);
    let wake: (() => void) | undefined;
    // Set by an event of the task (or an abort) since the last read began: the next read is due now.
    let woken = false;
    const notify = () => {
      woken = true;
      const w = wake;
      wake = undefined;
      w?.();
    };
    let unneed: (() => void) | undefined;
    let unsubscribe: (() => void) | undefined;
    if (follow) {
      // Heard before the first read: an event of the task that commits after it wakes the follow.
      unneed = this.#k.feed.need();
      // A gap in the feed (feed.ts #overtaken) may hide the task's events: read again then too.
      unsubscribe = this.#k.feed.subscribe((events) => {
        if (events.some((event) => event.taskId === id)) notify();
      }, notify);
      signal?.addEventListener('abort', notify, { once: true });
      this.#follows.add(notify);
    }
    // As on LMDB, only a follow heeds the signal.
    const stopped = () => follow === true && (signal?.aborted === true || this.#k.closed.aborted);
    try {
      let delayMs = MIN_POLL_MS;
      for (;;) {
        woken = false;
        const page = await readLogPage(this.#k.pool, id, cursor, LOG_CHUNK);
        if (!page) throw new TroupeError('NOT_FOUND', `no task ${id}`);
        for (const line of page.lines) {
          cursor = fromLogCursor(line.cursor);
          yield line;
          if (stopped()) return;
        }
        if (page.lines.length === LOG_CHUNK) continue;
        if (!follow || SETTLED_FOR_WAIT.has(page.state) || stopped()) return;
        delayMs = page.lines.length > 0 ? MIN_POLL_MS : Math.min(MAX_POLL_MS, delayMs * 2);
        if (!woken) await this.#pause(delayMs, (resolve) => (wake = resolve), signal);
        if (stopped()) return;
      }
    } finally {
      unsubscribe?.();
      unneed?.();
      signal?.removeEventListener('abort', notify);
      this.#follows.delete(notify);
    }
  }

  /** Waits `ms`, or less if woken (`arm` is handed the wake), holding the process alive meanwhile. */
  async #pause(ms: number, arm: (resolve: () => void) => void, signal: AbortSignal | undefined): Promise<void> {
    const release = holdFor(() => this.#k.hold(), signal);
    let timer: NodeJS.Timeout | undefined;
    try {
      await new Promise<void>((resolve) => {
        arm(resolve);
        timer = setTimeout(resolve, ms);
      });
    } finally {
      clearTimeout(timer);
      release();
    }
  }
}
