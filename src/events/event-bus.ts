/**
 * Publishes committed events: typed listeners (`rt.on`) and async iterators (`rt.events()`) that
 * replay the log from LMDB and then go live, with no gap and no duplicate across the switch.
 * Events are published only after the commit that holds them, in commit order.
 */
import type { SafeDatabase } from '../store/port.js';
import { EVENT_TYPES, type EventRecord, type EventType } from '../store/records.js';
import { TroupeError } from '../errors.js';
import { EventListeners } from './listeners.js';
import { checkCallOptions } from '../options.js';
import { checkId } from '../ids.js';
import { heldUntilWoken, type Release } from '../keep-alive.js';

/** A public event: the stored record with its cursor. */
export type { RuntimeEvent, RuntimeEventMap, EventStreamOptions } from '../api/events.js';
import type { RuntimeEvent, EventStreamOptions } from '../api/events.js';

const CURSOR_WIDTH = 16;
/** Stored events a replay reads at once. */
const REPLAY_CHUNK = 256;

/** Encodes a seq as a cursor. */
export function toCursor(seq: number): string {
  return seq.toString().padStart(CURSOR_WIDTH, '0');
}

/** Decodes a cursor, or takes an event's numeric seq as it is; throws INVALID_INPUT for anything else. */
export function fromCursor(cursor: string | number): number {
  if (typeof cursor === 'number' && Number.isSafeInteger(cursor) && cursor >= 0) return cursor;
  if (typeof cursor !== 'string' || !/^\d{1,16}$/.test(cursor)) {
    throw new TroupeError('INVALID_INPUT', `invalid event cursor ${typeof cursor === 'number' ? cursor : JSON.stringify(cursor)}: pass an event's cursor or its seq`);
  }
  return Number(cursor);
}

type Listener = (event: RuntimeEvent) => void;

const KNOWN_TYPES = new Set<string>(EVENT_TYPES);
export const STREAM_OPTIONS = ['after', 'taskId', 'types', 'signal'] as const satisfies ReadonlyArray<keyof EventStreamOptions>;

/** An event type a listener or a stream may name: one of the catalogue, or `'*'` where `star`. INVALID_OPTIONS otherwise. */
export function checkType(type: unknown, where: string, star: boolean): void {
  if ((star && type === '*') || (typeof type === 'string' && KNOWN_TYPES.has(type))) return;
  throw new TroupeError('INVALID_OPTIONS', `${where}: ${typeof type === 'string' ? JSON.stringify(type) : typeof type} is not an event type (see EVENT_TYPES${star ? ", or '*'" : ''})`);
}

/** The publishing side, owned by the runtime. */
export class EventBus {
  /** `rt.on` listeners (listeners.ts). */
  readonly #listeners = new EventListeners((error, type) => this.#failed(error, type));
  readonly #observers: Array<(records: readonly EventRecord[]) => void> = [];
  #events: SafeDatabase<EventRecord, number>;
  /** The last seq retention removed from the log (0: none): an older cursor has missed events. */
  #removedThrough: () => number;
  /** Set while the store is closed for a recovery (see {@link EventBus.detach}): what a replay's read fails with. */
  #detached: Error | undefined;
  /** An event published before it was durable (see {@link EventBus.announce}), until its commit comes by. */
  #announced: EventRecord | undefined;
  readonly #streams = new Set<(event: RuntimeEvent) => void>();
  #closed = false;
  readonly #onClose = new Set<() => void>();

  readonly #hold: () => Release;
  readonly #onListenerError: (error: unknown, type: string) => void;
  #listenerErrors = 0;

  /**
   * `hold` keeps the process alive while an iteration waits for its next event (see
   * keep-alive.ts). A listener that throws is reported to `onListenerError`; it never reaches the
   * pipeline that published the event, nor the other listeners.
   */
  constructor(events: SafeDatabase<EventRecord, number>, hold: () => Release, onListenerError: (error: unknown, type: string) => void = () => undefined, removedThrough: () => number = () => 0) {
    this.#events = events;
    this.#removedThrough = removedThrough;
    this.#hold = hold;
    this.#onListenerError = onListenerError;
  }

  /** Errors thrown (or promises rejected) by listeners and observers since the bus was made. */
  get listenerErrors(): number {
    return this.#listenerErrors;
  }

  #failed(error: unknown, type: string): void {
    this.#listenerErrors++;
    try {
      this.#onListenerError(error, type);
    } catch {
      // Reporting must not fail the publish either.
    }
  }

  /**
   * The store is about to close for a recovery: until {@link EventBus.attach}, a replay that needs
   * the log fails with `error` (live events go on as before).
   */
  detach(error: Error): void {
    this.#detached = error;
  }

  /** Reads the event log from this database from now on (the store was opened again). */
  attach(events: SafeDatabase<EventRecord, number>, removedThrough: () => number): void {
    this.#events = events;
    this.#removedThrough = removedThrough;
    this.#detached = undefined;
  }

  /**
   * Up to {@link REPLAY_CHUNK} stored events after `after`, read at once: a replay never holds a
   * read of the log open across a `yield` (the store may be closed and opened again meanwhile).
   */
  #storedAfter(after: number): EventRecord[] {
    if (this.#detached) throw this.#detached;
    const chunk: EventRecord[] = [];
    for (const { value } of this.#events.range({ start: after + 1, limit: REPLAY_CHUNK })) chunk.push(value);
    return chunk;
  }

  /**
   * Publishes an event to listeners and live iterations before it is durable: `store.failed`,
   * which only the next commit after the store recovers can write. It carries the seq that commit
   * is expected to give it; the first committed event of its type after it is its durable copy,
   * and is not published again.
   */
  announce(record: EventRecord): void {
    this.#announced = record;
    this.#deliver([record]);
  }

  /** Publishes events that have just been committed. */
  publish(records: readonly EventRecord[]): void {
    if (this.#announced !== undefined) records = this.#unannounced(records);
    for (const observe of this.#observers) this.#observeSafely(observe, records);
    this.#deliver(records);
  }

  /** The records less the durable copy of the announced one (published already), which is let go once seen. */
  #unannounced(records: readonly EventRecord[]): readonly EventRecord[] {
    const { type } = this.#announced!;
    const at = records.findIndex((record) => record.type === type);
    if (at < 0) return records;
    this.#announced = undefined;
    return records.filter((_, i) => i !== at);
  }

  #deliver(records: readonly EventRecord[]): void {
    if (this.#streams.size === 0 && this.#listeners.size === 0) return;
    for (const record of records) {
      const event = record as RuntimeEvent;
      event.cursor = toCursor(record.seq);
      for (const stream of this.#streams) stream(event);
      this.#listeners.deliver(event);
    }
  }

  /**
   * The runtime's own consumers (metrics): they get each committed batch's records as they are,
   * with no cursor, so a runtime nobody listens to builds none.
   */
  observe(observer: (records: readonly EventRecord[]) => void): void {
    this.#observers.push(observer);
  }

  #observeSafely(observe: (records: readonly EventRecord[]) => void, records: readonly EventRecord[]): void {
    try {
      observe(records);
    } catch (error) {
      this.#failed(error, 'observer');
    }
  }

  on(type: EventType | '*', listener: Listener): () => void {
    return this.#listeners.on(type, listener);
  }

  off(type: EventType | '*', listener: Listener): void {
    this.#listeners.off(type, listener);
  }

  /**
   * The seq of the last stored event before `at` (epoch ms), found by bisection over the log (a
   * few dozen reads), or 0. Events are stamped in seq order with the time their step decided at,
   * so everything after it happened at `at` or later, give or take a clock step back: callers
   * ask for a minute earlier than they need.
   */
  #lastBefore(at: number): number {
    const firstFrom = (seq: number): EventRecord | undefined => {
      for (const { value } of this.#events.range({ start: seq, limit: 1 })) return value;
      return undefined;
    };
    let lo = firstFrom(0);
    if (!lo || lo.at >= at) return 0;
    // Invariant: the event at lo.seq happened before `at`; none at or after `high` did. Galloping
    // up first finds `high` without reading the log's end (a reverse read walks all of it).
    let high: number | undefined;
    for (let step = 1; high === undefined; step *= 2) {
      const probe = firstFrom(lo.seq + step);
      if (probe === undefined) high = lo.seq + step;
      else if (probe.at < at) lo = probe;
      else high = probe.seq;
    }
    while (high - lo.seq > 1) {
      const probe = firstFrom(Math.floor((lo.seq + high) / 2));
      if (probe === undefined || probe.seq >= high) {
        high = Math.floor((lo.seq + high) / 2);
      } else if (probe.at < at) lo = probe;
      else high = probe.seq;
    }
    return lo.seq;
  }

  /** CURSOR_EXPIRED when events after seq `last` were removed: the reader would miss them. */
  #checkCursor(last: number): void {
    const removed = this.#removedThrough();
    if (last >= removed) return;
    throw new TroupeError('CURSOR_EXPIRED', `events: cursor ${toCursor(last)} is older than what the event log keeps (retention removed the events through seq ${removed}); the oldest cursor still available is ${toCursor(removed)}, or omit after to read from the oldest event kept`);
  }

  /** Ends every live iteration (runtime close). */
  close(): void {
    this.#closed = true;
    for (const end of this.#onClose) end();
  }

  /**
   * Replays from the log after `options.after`, then yields live events until aborted or closed.
   * Bad options reject the first `next()`, as any error of an async generator does.
   */
  async *iterate(options: EventStreamOptions = {}, start?: { seq: number } | { at: number }): AsyncGenerator<RuntimeEvent> {
    checkCallOptions(options, STREAM_OPTIONS, 'events');
    if (options.after !== undefined) fromCursor(options.after);
    if (options.taskId !== undefined) checkId(options.taskId, 'events: taskId');
    if (options.types !== undefined) {
      if (!Array.isArray(options.types)) throw new TroupeError('INVALID_OPTIONS', 'events: types must be an array of event types');
      for (const type of options.types) checkType(type, 'events: types', false);
    }
    if (options.signal !== undefined && !(options.signal instanceof AbortSignal)) throw new TroupeError('INVALID_OPTIONS', 'events: signal must be an AbortSignal');
    let last = options.after === undefined ? 0 : fromCursor(options.after);
    if (options.after !== undefined) this.#checkCursor(last);
    // One task's replay starts at its first event, or after the last one before its creation,
    // not at the log's start.
    if (start !== undefined) {
      const from = 'seq' in start ? start.seq - 1 : this.#lastBefore(start.at);
      if (from > last && from >= this.#removedThrough()) last = from;
    }
    const types = options.types ? new Set<string>(options.types) : undefined;
    const wanted = (e: Pick<EventRecord, 'taskId' | 'type'>) => (!options.taskId || e.taskId === options.taskId) && (!types || types.has(e.type));
    const buffer: RuntimeEvent[] = [];
    let wake: (() => void) | undefined;
    // Closed: the store is not read any more, but the committed events already buffered are
    // yielded. Aborted: nothing more is yielded.
    let closed = this.#closed;
    let aborted = false;
    const notify = () => {
      const w = wake;
      wake = undefined;
      w?.();
    };
    // Only what it will yield is kept: a reader that falls behind holds none of the rest.
    const listener = (event: RuntimeEvent) => {
      if (!wanted(event)) return;
      buffer.push(event);
      notify();
    };
    const close = () => {
      closed = true;
      notify();
    };
    const abort = () => {
      aborted = true;
      notify();
    };
    // Subscribe before replaying so nothing committed during the replay is missed.
    this.#streams.add(listener);
    this.#onClose.add(close);
    options.signal?.addEventListener('abort', abort, { once: true });
    try {
      if (options.signal?.aborted) return;
      for (;;) {
        if (aborted) return;
        // The store is closed: the buffer goes on from here if it holds the next event; if not,
        // the replay ends at its cursor (taken up from there on the next open).
        if (closed) {
          if (buffer.length > 0 && buffer[0]!.seq <= last + 1) break;
          return;
        }
        const chunk = this.#storedAfter(last);
        // Retention may have removed events this replay had not reached yet.
        if (last > 0 || options.after !== undefined) this.#checkCursor(last);
        for (const value of chunk) {
          if (aborted) return;
          last = value.seq;
          // A stored record's payload is as its type's in the catalogue: every event was emitted through it.
          if (wanted(value)) yield { ...value, cursor: toCursor(value.seq) } as RuntimeEvent;
        }
        if (chunk.length < REPLAY_CHUNK) break;
      }
      for (;;) {
        while (buffer.length > 0) {
          if (aborted) return;
          const event = buffer.shift()!;
          if (event.seq <= last) continue;
          last = event.seq;
          yield event;
        }
        if (closed || aborted) return;
        await heldUntilWoken(() => this.#hold(), (resolve) => (wake = resolve), options.signal);
      }
    } finally {
      this.#streams.delete(listener);
      this.#onClose.delete(close);
      options.signal?.removeEventListener('abort', abort);
    }
  }
}
