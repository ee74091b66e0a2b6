/**
 * The overlay of records changed since they were last written to their databases. A commit writes
 * one log record holding its changes; the records themselves reach their databases later, a
 * bounded number per commit, once they have cooled down (see `take`). So a task submitted, started
 * and settled within a few commits is materialized once, not three times. Reads look here first.
 *
 * Entries are kept in the order they became dirty. The oldest entry's batch bounds the checkpoint:
 * every log record before it holds only changes that are already materialized, and can go.
 */
import type { Key, RangeOptions } from '../port.js';
import { arrayForBatch } from '../../allocation.js';
import { ChurnMap, ChurnSet } from '../../collections.js';

/** What a removed record reads as until its removal is materialized. */
export const REMOVED: unique symbol = Symbol('removed');

/**
 * A record changed since it was last materialized. A class, so that entries are made by a
 * constructor and not an object literal: V8 never pretenures them (see `createTaskRecord` in
 * records.ts). A task's entry lives about as long as the task is in flight.
 */
export class DirtyEntry {
  readonly db: number;
  readonly key: Key;
  /** {@link keyString} of the key, kept to drop the entry without building it again. */
  readonly id: string;
  value: unknown;
  /** The batch in which it became dirty (since it was last materialized), and when (epoch ms). */
  first: number;
  firstAt: number;
  /** The batch of its latest change, and when it was made (epoch ms). */
  last: number;
  lastAt: number;
  /** Set while its materialization is in flight: the batch that writes it. */
  writing: number | undefined;
  /** Written in the commit of its latest change, cool or not (see StepWriter.putTask `final`). */
  final: boolean;
  /** The position of its latest change in its batch's ops, and its value before that batch. */
  op: number;
  before: unknown;

  constructor(db: number, key: Key, id: string, value: unknown, batch: number, at: number, final: boolean, op: number) {
    this.db = db;
    this.key = key;
    this.id = id;
    this.value = value;
    this.first = batch;
    this.firstAt = at;
    this.last = batch;
    this.lastAt = at;
    this.writing = undefined;
    this.final = final;
    this.op = op;
    this.before = undefined;
  }
}

/** When {@link Overlay.take} materializes an entry. */
export interface TakePolicy {
  /** The batch being flushed. */
  batch: number;
  /** An entry untouched for this many batches and this long is cold: materialize it. */
  coolBatches: number;
  coolMs?: number;
  /** Now, for `coolMs` (epoch ms). */
  now?: number;
  /**
   * An entry dirty for this many batches, or this long, is materialized even while hot, so the log
   * can be truncated: what a reopen after a crash replays stays a few seconds' worth.
   */
  maxAgeBatches: number;
  maxAgeMs?: number;
  /** Most entries to materialize in one commit, unless the overlay is over `maxEntries`. */
  budget: number;
  /** Past this many entries, materialize the oldest ones until back under, whatever their temperature. */
  maxEntries: number;
}

/** See the module comment. */
export class Overlay {
  readonly #byDb: Array<ChurnMap<string, DirtyEntry>>;
  /** Dirty entries not being written, oldest `first` first. */
  readonly #order = new ChurnSet<DirtyEntry>();
  /** Entries marked final since the last take. */
  #finals: DirtyEntry[] = [];

  constructor(databases: number) {
    this.#byDb = Array.from({ length: databases }, () => new ChurnMap<string, DirtyEntry>());
  }

  /** Counts the changes to what the overlay holds: a reader may keep what it derived from it until this moves. */
  version = 0;

  /** How many dirty entries the last {@link Overlay.take} looked at (for tests: the scan is bounded). */
  scanned = 0;

  /** Entries still to materialize. */
  get size(): number {
    return this.#order.size;
  }

  /** After {@link Overlay.set}: the position of the key's earlier change in the same batch (-1: none). */
  priorOp = -1;
  /** After {@link Overlay.set}: the key's value before this batch. */
  before: unknown = undefined;
  /** After {@link Overlay.set}: the key's entry. */
  entry: DirtyEntry | undefined = undefined;

  /**
   * Records a change decided in `batch` (at position `op` of its ops), at `at` (epoch ms). Leaves
   * in {@link Overlay.priorOp} and {@link Overlay.before} what the caller
   * needs to log only the batch's net change of the key.
   */
  set(db: number, key: Key, value: unknown, batch: number, at = 0, final = false, op = -1): void {
    const map = this.#byDb[db]!;
    const id = keyString(key);
    const entry = map.get(id);
    this.version++;
    if (!entry) {
      const created = new DirtyEntry(db, key, id, value, batch, at, final, op);
      map.set(id, created);
      this.entry = created;
      this.#order.add(created);
      if (final) this.#finals.push(created);
      this.priorOp = -1;
      this.before = undefined;
      return;
    }
    if (entry.last === batch) {
      this.priorOp = entry.op;
    } else {
      this.priorOp = -1;
      entry.before = entry.value;
    }
    this.before = entry.before;
    this.entry = entry;
    entry.op = op;
    entry.value = value;
    entry.last = batch;
    entry.lastAt = at;
    // A final version goes in its own batch's commit: unless one already waits there, also when
    // an earlier final version's write is still in flight (its commit writes that one, not this).
    if (final && (!entry.final || entry.writing !== undefined)) this.#finals.push(entry);
    entry.final = final;
    if (entry.writing !== undefined) {
      // Changed again while its materialization was in flight: dirty anew.
      entry.writing = undefined;
      entry.first = batch;
      entry.firstAt = at;
      this.#order.add(entry);
    }
  }

  /** The value of a dirty record: `REMOVED`, a value, or undefined when the overlay does not hold it. */
  get(db: number, key: Key): unknown {
    return this.#byDb[db]!.get(keyString(key))?.value;
  }

  /** Whether the key's entry is a final version (see `set`) not taken for a commit yet: decided in the batch being gathered. */
  unwrittenFinal(db: number, key: Key): boolean {
    const entry = this.#byDb[db]!.get(keyString(key));
    return entry !== undefined && entry.final && entry.writing === undefined;
  }

  /** Dirty entries of a database within the bounds, in key order (or reversed). */
  entries(db: number, options: RangeOptions): DirtyEntry[] {
    const map = this.#byDb[db]!;
    if (map.size === 0) return [];
    const { start, end } = options;
    const out: DirtyEntry[] = [];
    for (const entry of map.values()) {
      if (start !== undefined && compareKeys(entry.key, start) < 0) continue;
      if (end !== undefined && compareKeys(entry.key, end) >= 0) continue;
      out.push(entry);
    }
    out.sort((a, b) => compareKeys(a.key, b.key));
    if (options.reverse) out.reverse();
    return out;
  }

  /**
   * The entries to materialize in the commit of `policy.batch`, oldest first: cold ones, ones dirty
   * for too long, and any needed to bring the overlay back under its cap. They stay readable
   * until {@link Overlay.written} says their commit landed.
   */
  take(policy: TakePolicy): DirtyEntry[] {
    const taken = arrayForBatch<DirtyEntry>();
    // Final ones go in this commit, whatever the budget (they were left out of the log).
    for (const entry of this.#finals) if (entry.final && entry.writing === undefined && this.#order.has(entry)) taken.push(entry);
    this.#finals = arrayForBatch();
    for (const entry of taken) this.#order.delete(entry);
    // Bounded scan: the head is where cold entries are; hot ones further back wait for a later commit.
    let scan = 2 * policy.budget + 64;
    let visited = 0;
    for (const entry of this.#order) {
      visited++;
      const over = this.#order.size - taken.length > policy.maxEntries;
      if (!over && (taken.length >= policy.budget || scan-- <= 0)) break;
      const cold = entry.last <= policy.batch - policy.coolBatches && entry.lastAt <= (policy.now ?? 0) - (policy.coolMs ?? 0);
      const old = entry.first <= policy.batch - policy.maxAgeBatches || entry.firstAt <= (policy.now ?? 0) - (policy.maxAgeMs ?? Number.POSITIVE_INFINITY);
      if (!(cold || old || over)) {
        // The order is by `first`: a hot entry at the head holds the checkpoint back, so only
        // cold ones behind it may go; once it is old enough it goes too. An entry first dirtied
        // within the last `coolBatches` cannot be cold, and neither can any entry behind it, nor
        // old when it is not: the scan ends there (in a busy store, every task in flight).
        if (entry.first > policy.batch - policy.coolBatches) break;
        continue;
      }
      taken.push(entry);
    }
    for (const entry of taken) {
      this.#order.delete(entry);
      entry.writing = policy.batch;
    }
    this.scanned = visited;
    return taken;
  }

  /** The commit of `batch` landed: drop what it materialized, unless changed since. */
  written(entries: readonly DirtyEntry[], batch: number): void {
    for (const entry of entries) {
      if (entry.writing !== batch) continue;
      this.#byDb[entry.db]!.delete(entry.id);
      this.version++;
    }
  }

  /** The commit of `batch` failed: its entries are dirty again (the order by `first` is rebuilt). */
  unwritten(entries: readonly DirtyEntry[], batch: number): void {
    const back = entries.filter((entry) => entry.writing === batch);
    if (back.length === 0) return;
    for (const entry of back) entry.writing = undefined;
    const all = [...this.#order, ...back].sort((a, b) => a.first - b.first);
    this.#order.clear();
    for (const entry of all) this.#order.add(entry);
  }

  /**
   * The last batch whose log record is no longer needed: every change in it and before it is
   * materialized (or being materialized in `batch`'s commit).
   */
  checkpoint(batch: number): number {
    let oldest = batch + 1;
    for (const entry of this.#order) {
      oldest = entry.first;
      break;
    }
    return oldest - 1;
  }

  /** Every dirty entry, for a final materialization at close. */
  takeAll(batch: number): DirtyEntry[] {
    return this.take({ batch, coolBatches: 0, maxAgeBatches: 0, budget: Number.POSITIVE_INFINITY, maxEntries: 0 });
  }
}

/** A map key for a store key. Keys of one database share a shape, so this only has to be unique per shape. */
export function keyString(key: Key): string {
  if (typeof key === 'string') return key;
  if (typeof key === 'number') return String(key);
  return key.join('\u0000');
}

/**
 * Orders keys as LMDB does for the shapes Troupe uses: numbers numerically, strings by code unit
 * (LMDB compares UTF-8 bytes; the two agree for the ASCII ids and names used as keys), arrays
 * element by element, numbers before strings.
 */
export function compareKeys(a: Key, b: Key): number {
  if (Array.isArray(a) && Array.isArray(b)) {
    const n = Math.min(a.length, b.length);
    for (let i = 0; i < n; i++) {
      const c = compareKeys(a[i] as string | number, b[i] as string | number);
      if (c !== 0) return c;
    }
    return a.length - b.length;
  }
  if (typeof a === 'number' && typeof b === 'number') return a - b;
  if (typeof a === 'string' && typeof b === 'string') return a < b ? -1 : a > b ? 1 : 0;
  return typeof a === 'number' ? -1 : 1;
}
