/**
 * Reads of the LMDB backend: a database merged with what is decided but not in it yet. That is the
 * overlay (records changed since they were last materialized) and, for write-once records written
 * in their own commit, the batches not landed yet. The active index is not in the overlay at all:
 * it follows the task records, so its pending part is read off the overlay's tasks.
 */
import { isTerminal } from '../../../machines/index.js';
import type { Database as LmdbDatabase, Key as LmdbKey } from 'lmdb';
import type { Key, RangeOptions, SafeDatabase, SafeReads } from '../port.js';
import type { EventRecord } from '../records.js';
import { eventReads } from './event-log.js';
import { DB, type DbName } from './layout.js';
import type { Quarantine } from './quarantine.js';
import { safeDatabase, VALIDATORS } from './safe-read.js';
import { settledIndexEntries, type TaskRecord } from '../records.js';
import { compareKeys, keyString, REMOVED, type Overlay } from './overlay.js';

/** A decided value not yet in its database: a record, or REMOVED. */
interface Pending {
  key: Key;
  value: unknown;
}

/** Batches whose commit has not landed, oldest first; each holds its direct writes as flat [db, key, value] ops. */
export type Unlanded = ReadonlyArray<{ readonly direct: readonly unknown[] }>;

/** What one database's reads merge over it. */
export interface Decided {
  /** The value decided for a key (REMOVED: removed), or undefined when nothing is pending for it. */
  get(key: Key): unknown;
  /** Pending entries within the bounds, in key order (or reversed). */
  entries(options: RangeOptions): Pending[];
}

/** What the overlay holds for database `db`. */
export function overlayOf(overlay: Overlay, db: number): Decided {
  return { get: (key) => overlay.get(db, key), entries: (options) => overlay.entries(db, options) };
}

/**
 * Write-once records of database `db` whose commit has not landed, found in the batches
 * themselves: nothing is indexed when they are written (attempts are read back only by a rebuild,
 * when none is pending), so a read scans the few batches in flight.
 */
export function pendingOf(batches: () => Unlanded, db: number): Decided {
  const all = (): Pending[] => {
    const found = new Map<string, Pending>();
    for (const { direct } of batches()) {
      for (let i = 0; i < direct.length; i += 3) if (direct[i] === db) found.set(keyString(direct[i + 1] as Key), { key: direct[i + 1] as Key, value: direct[i + 2] });
    }
    return [...found.values()];
  };
  return {
    get: (key) => {
      let value: unknown;
      for (const { direct } of batches()) {
        for (let i = 0; i < direct.length; i += 3) if (direct[i] === db && compareKeys(direct[i + 1] as Key, key) === 0) value = direct[i + 2];
      }
      return value;
    },
    entries: (options) => inBounds(all(), options),
  };
}

/** The active index as the overlay's tasks say it is: present while not terminal. */
export function activeOf(overlay: Overlay, tasksDb: number): Decided {
  const activity = (value: unknown) => (value === undefined ? undefined : value === REMOVED || isTerminal((value as TaskRecord).state) ? REMOVED : true);
  return {
    get: (key) => activity(overlay.get(tasksDb, key)),
    entries: (options) => overlay.entries(tasksDb, options).map(({ key, value }) => ({ key, value: activity(value) })),
  };
}

/**
 * A list() index of settled tasks (`listed` or `labelled`) as the overlay's tasks say it is: a task
 * settled but not materialized yet is found under the keys its record will be indexed by, and one
 * the overlay holds in another state (retried, removed) under none. The overlay's settled tasks are
 * read once per change of the overlay, not per range: a list() reads several.
 */
export function settledListOf(overlay: Overlay, tasksDb: number, index: 'listed' | 'labelled'): Decided {
  let seen = -1;
  let sorted: Pending[] = [];
  const entriesOf = (value: unknown): Pending[] =>
    value === undefined || value === REMOVED ? [] : settledIndexEntries(value as TaskRecord).flatMap(([name, key, own]) => (name === index ? [{ key, value: own }] : []));
  const all = (): Pending[] => {
    if (seen === overlay.version) return sorted;
    seen = overlay.version;
    sorted = [];
    for (const { value } of overlay.entries(tasksDb, {})) sorted.push(...entriesOf(value));
    sorted.sort((a, b) => compareKeys(a.key, b.key));
    return sorted;
  };
  return {
    get(key) {
      const value = overlay.get(tasksDb, (key as string[])[2]!);
      if (value === undefined) return undefined;
      return entriesOf(value).find((own) => compareKeys(own.key, key) === 0)?.value ?? REMOVED;
    },
    entries(options) {
      const entries = all();
      const from = options.start === undefined ? 0 : firstAtOrAfter(entries, options.start);
      const to = options.end === undefined ? entries.length : firstAtOrAfter(entries, options.end);
      const out = entries.slice(from, Math.max(from, to));
      return options.reverse ? out.reverse() : out;
    },
  };
}

/** The first position in sorted `entries` whose key is at or after `key`. */
function firstAtOrAfter(entries: readonly Pending[], key: Key): number {
  let lo = 0;
  let hi = entries.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (compareKeys(entries[mid]!.key, key) < 0) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function inBounds(entries: Pending[], options: RangeOptions): Pending[] {
  const { start, end } = options;
  const out = entries.filter(({ key }) => (start === undefined || compareKeys(key, start) >= 0) && (end === undefined || compareKeys(key, end) < 0));
  out.sort((a, b) => compareKeys(a.key, b.key));
  if (options.reverse) out.reverse();
  return out;
}

/** Reads of one database through what is decided: the decided value first, then the database. */
export function mergedReads<V, K extends Key>(decided: Decided, base: SafeDatabase<V, K>): SafeDatabase<V, K> {
  const get = (key: K): V | undefined => {
    const value = decided.get(key);
    if (value === undefined) return base.get(key);
    return value === REMOVED ? undefined : (value as V);
  };
  function* merged(options: RangeOptions = {}): Generator<{ key: K; value: V | typeof REMOVED }> {
    const dirty = decided.entries(options);
    const sign = options.reverse ? -1 : 1;
    let limit = options.limit ?? Number.POSITIVE_INFINITY;
    let i = 0;
    const emit = function* (key: K, value: V | typeof REMOVED) {
      if (value === REMOVED) return;
      limit--;
      yield { key, value };
    };
    const { limit: _ignored, ...bounds } = options;
    for (const { key, value } of base.range(bounds)) {
      if (limit <= 0) return;
      while (i < dirty.length && sign * compareKeys(dirty[i]!.key, key) < 0) {
        const entry = dirty[i++]!;
        yield* emit(entry.key as K, entry.value as V | typeof REMOVED);
        if (limit <= 0) return;
      }
      if (i < dirty.length && compareKeys(dirty[i]!.key, key) === 0) {
        const entry = dirty[i++]!;
        yield* emit(entry.key as K, entry.value as V | typeof REMOVED);
        continue;
      }
      yield* emit(key, value);
    }
    while (i < dirty.length && limit > 0) {
      const entry = dirty[i++]!;
      yield* emit(entry.key as K, entry.value as V | typeof REMOVED);
    }
  }
  return {
    get,
    range: (options) => merged(options) as Iterable<{ key: K; value: V }>,
    *keys(options) {
      for (const { key } of merged(options)) yield key;
    },
    has: (key) => {
      const value = decided.get(key);
      return value === undefined ? base.has(key) : value !== REMOVED;
    },
  };
}

/** What {@link storeReads} reads through. */
export interface ReadSources {
  dbs: ReadonlyArray<LmdbDatabase<unknown, LmdbKey>>;
  events: LmdbDatabase<EventRecord[], number>;
  overlay: Overlay;
  /** The batches whose write-once records are not in their databases yet. */
  gathered: () => Unlanded;
  quarantine: Quarantine;
}

/** Indexes the store writes as records reach their databases: nothing of them is pending anywhere else. */
const NOTHING_DECIDED: Decided = { get: () => undefined, entries: () => [] };

/** The store's reads: each database through what is decided, with bad records quarantined. */
export function storeReads({ dbs, events, overlay, gathered, quarantine }: ReadSources): SafeReads {
  const { add, has } = quarantine;
  const safe = <V, K extends Key>(name: DbName, validate: ((value: unknown) => boolean) | undefined, decided: Decided = overlayOf(overlay, DB[name])) =>
    mergedReads<V, K>(decided, safeDatabase(name, dbs[DB[name]] as unknown as LmdbDatabase<V, K>, validate ?? (() => true), add, has));
  return {
    tasks: safe('tasks', VALIDATORS.tasks),
    active: safe('active', undefined, activeOf(overlay, DB.tasks)),
    attempts: safe('attempts', VALIDATORS.attempts, pendingOf(gathered, DB.attempts)),
    runs: safe('runs', VALIDATORS.runs, pendingOf(gathered, DB.runs)),
    events: eventReads(events, add, has),
    timers: safe('timers', VALIDATORS.timers),
    instances: safe('instances', VALIDATORS.instances),
    logs: safe('logs', VALIDATORS.logs),
    idempotency: safe('idempotency', VALIDATORS.idempotency),
    inbox: safe('inbox', undefined),
    schedules: safe('schedules', VALIDATORS.schedules),
    control: safe('control', undefined),
    children: safe('children', undefined),
    expiry: safe('expiry', undefined, NOTHING_DECIDED),
    listed: safe('listed', undefined, settledListOf(overlay, DB.tasks, 'listed')),
    labelled: safe('labelled', undefined, settledListOf(overlay, DB.tasks, 'labelled')),
    listedStored: safe('listed', undefined, NOTHING_DECIDED),
  };
}
