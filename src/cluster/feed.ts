/**
 * The cluster's event log as one runtime on PostgreSQL sees it: one follower per runtime
 * (followEvents: LISTEN/NOTIFY wakes, a poll backs them up, its connection comes back after a
 * break), started at the end of the log as the runtime opens, feeds every committed event, in log
 * order and each once, to the runtime's waits, `rt.on` listeners and live `rt.events()`
 * iterations. An iteration replays the log from its cursor with readEvents first: it subscribes to
 * the feed before it reads, and skips what the feed brings at or before the last event it read,
 * so the switch from replay to live has no gap and no duplicate.
 *
 * It reads the log only while someone needs it (a pending wait, an `on` listener, a live
 * iteration: {@link EventFeed.need}), and for a second after: every claim and settle of every
 * node appends events, and a runtime that decoded them all for no one cost the cluster a read per
 * node of every event (measured: a quarter of the throughput of three runtime nodes). While no one
 * needs it, the follower only moves its cursor to the end of the log at each poll, so a consumer
 * that comes is fed from no later than it came (it reads after it registered its need; see
 * followEvents for why that order holds), and the NOTIFY payloads' hints (a task queued, the
 * controls changed) reach the runtime either way.
 */
import type pg from 'pg';
import type { EventStreamOptions, EventType, RuntimeEvent } from '../api/events.js';
import { isTroupeError, TroupeError } from '../errors.js';
import { checkType, STREAM_OPTIONS } from '../events/event-bus.js';
import { EventListeners } from '../events/listeners.js';
import { checkId } from '../ids.js';
import { heldUntilWoken, type Release } from '../keep-alive.js';
import type { Logger } from '../log.js';
import { checkCallOptions } from '../options.js';
import { cursorExpired, followEvents, parseCursor, readEvents, type StoredEvent } from '../store/postgres/events.js';
import { checkEventCursor, checkEventSeq, eventsRemovedThrough } from '../store/postgres/retention.js';
import { cursorOfSeq, tailCursor } from '../store/postgres/tasks.js';

type Listener = (event: RuntimeEvent) => void;
type Sink = (events: readonly RuntimeEvent[]) => void;
/** Told that retention removed the events through `removed` before the feed read them: what was fed skips them. */
type Gap = (removed: string) => void;

/** Events a replay reads at once. */
const REPLAY_PAGE = 500;
/** The follower's poll, for commits whose NOTIFY came before they were below the read watermark. */
const POLL_MS = 200;
/** Wait before following again after the follower failed (the database went away). */
const RESTART_MS = 500;
/** How long the feed keeps reading after the last need went (a wait after each submit needs it again at once). */
const LINGER_MS = 1_000;

/** What the feed needs from its runtime. */
export interface FeedDeps {
  pool: pg.Pool;
  connectionString: string;
  log: Logger;
  /** Holds the process alive while an iteration waits for its next event. */
  hold(): Release;
  /** Hears each NOTIFY's hints (src/store/postgres/events.ts HINTS), whether the feed reads or not. */
  hinted(hints: readonly string[]): void;
}

/** See the module comment. */
export class EventFeed {
  readonly #k: FeedDeps;
  readonly #sinks = new Set<Sink>();
  readonly #gaps = new Set<Gap>();
  readonly #listeners = new EventListeners((error, type) => this.#failed(error, type));
  readonly #stop = new AbortController();
  readonly #onClose = new Set<() => void>();
  #following: Promise<void> | undefined;
  /** Needs held (waits, iterations) besides the `on` listeners. */
  #needs = 0;
  /** When the last need went (performance.now()); the feed reads for LINGER_MS after. */
  #unneededAt = -Infinity;
  #nudge: (() => void) | undefined;
  /** Errors thrown by listeners so far. */
  listenerErrors = 0;

  constructor(deps: FeedDeps) {
    this.#k = deps;
  }

  /** Starts following at the end of the log as it is now. */
  async start(): Promise<void> {
    const from = await tailCursor(this.#k.pool);
    this.#following = this.#follow(from);
  }

  /**
   * Has the feed read the log until the returned release is called (idempotent). A consumer calls
   * it before it reads what the feed's events must follow on (a task's row, a replay).
   */
  need(): () => void {
    this.#needs++;
    this.#nudge?.();
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#needs--;
      this.#unneeded();
    };
  }

  #unneeded(): void {
    if (this.#needs === 0 && this.#listeners.size === 0) this.#unneededAt = performance.now();
  }

  /** Whether the follower reads events now. */
  #reading(): boolean {
    return this.#needs > 0 || this.#listeners.size > 0 || performance.now() - this.#unneededAt < LINGER_MS;
  }

  /**
   * Hears every batch of committed events, in order, while the feed reads (see {@link need}), and
   * `gap` hears when retention overtook the feed (see {@link #overtaken}). Returns the unsubscribe.
   */
  subscribe(sink: Sink, gap?: Gap): () => void {
    this.#sinks.add(sink);
    if (gap) this.#gaps.add(gap);
    return () => {
      this.#sinks.delete(sink);
      if (gap) this.#gaps.delete(gap);
    };
  }

  on(type: EventType | '*', listener: Listener): () => void {
    const unsubscribe = this.#listeners.on(type, listener);
    this.#nudge?.();
    return unsubscribe;
  }

  off(type: EventType | '*', listener: Listener): void {
    if (this.#listeners.off(type, listener)) this.#unneeded();
  }

  /** Stops following and ends every live iteration. */
  async close(): Promise<void> {
    this.#stop.abort();
    for (const end of this.#onClose) end();
    await this.#following;
  }

  /** Follows from `cursor` until closed, again after a failure, from the last event delivered. */
  async #follow(cursor: string): Promise<void> {
    const signal = this.#stop.signal;
    while (!signal.aborted) {
      try {
        const options = {
          after: cursor,
          pollMs: POLL_MS,
          signal,
          reading: () => this.#reading(),
          onNotify: (payload: string) => {
            if (payload !== '') this.#k.hinted(payload.split(','));
          },
          skipped: (end: string) => (cursor = end),
          nudge: (nudge: () => void) => (this.#nudge = nudge),
          // The runtime's KeepAlive holds the process, not the follower (src/keep-alive.ts).
          keepsProcessAlive: false,
        };
        await followEvents(this.#k.pool, this.#k.connectionString, options, (stored) => {
          cursor = stored[stored.length - 1]!.cursor;
          this.#deliver(stored.map(eventOf));
        });
      } catch (error) {
        if (signal.aborted) return;
        if (isTroupeError(error, 'CURSOR_EXPIRED')) {
          const removed = await this.#overtaken(cursor);
          if (removed !== undefined) {
            cursor = removed;
            continue;
          }
        } else this.#k.log.warn({ err: error }, 'following the event log failed; following again');
        await new Promise((resolve) => setTimeout(resolve, RESTART_MS).unref());
      }
    }
  }

  /**
   * Retention removed events past the follower's `cursor` before it read them (it was behind, and
   * the log's removal point moved past it): they are gone. Every gap subscriber hears it (a live
   * iteration behind the removal ends with CURSOR_EXPIRED, as a replay the removal overtakes does;
   * waits read their tasks again), `on` listeners cannot: they miss them, and it is logged.
   * Resolves with where to follow on (the removal point), or undefined when it could not be read.
   */
  async #overtaken(cursor: string): Promise<string | undefined> {
    let removed: string;
    try {
      removed = (await eventsRemovedThrough(this.#k.pool)).cursor;
    } catch (error) {
      this.#k.log.warn({ err: error }, 'reading how far the event log was removed failed; following again');
      return undefined;
    }
    this.#k.log.error({ cursor, removed, listeners: this.#listeners.size }, 'retention removed events this runtime had not read yet: live events() iterations behind them end with CURSOR_EXPIRED, on() listeners miss them');
    for (const gap of this.#gaps) gap(removed);
    return removed > cursor ? removed : cursor;
  }

  #deliver(events: RuntimeEvent[]): void {
    for (const sink of this.#sinks) sink(events);
    if (this.#listeners.size > 0) for (const event of events) this.#listeners.deliver(event);
  }

  #failed(error: unknown, type: string): void {
    this.listenerErrors++;
    this.#k.log.error({ err: error, type }, 'an event listener threw');
  }

  /**
   * `rt.events()`: replays the log after `after` (a cursor, or an event's numeric seq), then
   * yields live events, until `signal` aborts or the runtime closes. Bad options reject the first
   * `next()`, as the LMDB runtime's do; a cursor from before what retention removed rejects with
   * CURSOR_EXPIRED, as does a replay the removal overtakes (src/store/postgres/retention.ts), and
   * a live iteration whose events it removed before the feed read them (see #overtaken).
   */
  async *iterate(options: EventStreamOptions = {}): AsyncGenerator<RuntimeEvent> {
    checkCallOptions(options, STREAM_OPTIONS, 'events');
    const { after, taskId, types, signal } = options;
    if (after !== undefined && typeof after !== 'string' && !(typeof after === 'number' && Number.isSafeInteger(after) && after >= 0)) {
      throw new TroupeError('INVALID_INPUT', `invalid event cursor ${JSON.stringify(after)}: pass an event's cursor or its seq`);
    }
    if (typeof after === 'string') parseCursor(after);
    if (taskId !== undefined) checkId(taskId, 'events: taskId');
    if (types !== undefined) {
      if (!Array.isArray(types)) throw new TroupeError('INVALID_OPTIONS', 'events: types must be an array of event types');
      for (const type of types) checkType(type, 'events: types', false);
    }
    if (signal !== undefined && !(signal instanceof AbortSignal)) throw new TroupeError('INVALID_OPTIONS', 'events: signal must be an AbortSignal');
    const typeSet = types ? new Set<string>(types) : undefined;
    const wanted = (e: RuntimeEvent) => (!taskId || e.taskId === taskId) && (!typeSet || typeSet.has(e.type));
    const buffer: RuntimeEvent[] = [];
    let wake: (() => void) | undefined;
    let ended = this.#stop.signal.aborted;
    let last = '';
    /** How far retention removed events the feed had not read (see #overtaken); undefined: no such gap. */
    let gap: string | undefined;
    /** Whether that gap is after `last`, and before `next` (the next event to yield; undefined: any next). */
    const overtaken = (next?: string): boolean => gap !== undefined && last < gap && (next === undefined || next > gap);
    const notify = () => {
      const w = wake;
      wake = undefined;
      w?.();
    };
    const end = () => {
      ended = true;
      notify();
    };
    // Subscribed, and the feed reading, before the replay reads: whatever commits meanwhile is in the buffer.
    const unneed = this.need();
    const unsubscribe = this.subscribe(
      (events) => {
        buffer.push(...events);
        notify();
      },
      (removed) => {
        if (gap === undefined || removed > gap) gap = removed;
        notify();
      },
    );
    this.#onClose.add(end);
    signal?.addEventListener('abort', end, { once: true });
    try {
      if (signal?.aborted || ended) return;
      last = typeof after === 'number' ? await this.#cursorOfSeq(after) : (after ?? '');
      for (;;) {
        const from = last;
        // A replay from the oldest event kept starts after any removal before its first read.
        if (from === '' && after === undefined) gap = undefined;
        const page = await readEvents(this.#k.pool, from, REPLAY_PAGE);
        // Retention may have removed events after `from` (before this read, or before an earlier
        // page's): read after the page, the removal point says whether this read had a gap.
        if (from !== '' || after !== undefined) await checkEventCursor(this.#k.pool, from);
        for (const stored of page) {
          if (ended) return;
          last = stored.cursor;
          const event = eventOf(stored);
          if (wanted(event)) yield event;
        }
        // Only an empty page is the end: a page is short when its first batch also held events
        // up to the cursor (it is chosen by whole batches), with more batches after it.
        if (page.length === 0) break;
      }
      for (;;) {
        while (buffer.length > 0) {
          const event = buffer.shift()!;
          if (event.cursor <= last) continue;
          // The events before the gap are yielded; none after it, and never in silence.
          if (overtaken(event.cursor)) throw cursorExpired(last, gap!);
          last = event.cursor;
          if (wanted(event)) yield event;
          if (ended) return;
        }
        if (ended) return;
        if (overtaken()) throw cursorExpired(last, gap!);
        await heldUntilWoken(() => this.#k.hold(), (resolve) => (wake = resolve), signal);
      }
    } finally {
      unsubscribe();
      unneed();
      this.#onClose.delete(end);
      signal?.removeEventListener('abort', end);
    }
  }

  /** The cursor of the event numbered `seq`: CURSOR_EXPIRED when retention removed it, INVALID_INPUT when no event had it. */
  async #cursorOfSeq(seq: number): Promise<string> {
    try {
      return await cursorOfSeq(this.#k.pool, seq);
    } catch (error) {
      if (isTroupeError(error, 'INVALID_INPUT')) await checkEventSeq(this.#k.pool, seq);
      throw error;
    }
  }
}

/** A stored event as the public API gives it: its payload is its type's in the catalogue (every transition appends it through eventOf). */
function eventOf(stored: StoredEvent): RuntimeEvent {
  const event = { seq: stored.seq, at: stored.at, type: stored.type, data: stored.data ?? {}, cursor: stored.cursor } as RuntimeEvent;
  if (stored.taskId !== undefined) event.taskId = stored.taskId;
  if (stored.attemptId !== undefined) event.attemptId = stored.attemptId;
  return event;
}
