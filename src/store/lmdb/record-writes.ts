/**
 * How the store writes records to their own databases (not the log): the values encoded before the
 * transaction, an overlay entry materialized, a direct write or removal, and the indexes kept in
 * step with the task records written: the active index, and those of settled tasks that retention
 * and `list()` read (see {@link settledIndexEntries}).
 *
 * It also keeps the count of settled tasks per agent and state, written to the meta database
 * (`settledCounts`) in the same transaction as the index entries it counts: one per `listed`
 * entry put, minus one per `listed` entry removed. Each settled version of a task is written
 * once, and its entries are removed only once written (see StepWriter.unindexSettled), so
 * neither needs a read.
 */
import { asBinary, type Database } from 'lmdb';
import { isTerminal, type TaskState } from '../../../machines/index.js';
import type { Key } from '../port.js';
import { forEachSettledIndexEntry, type ListedValue, type SettledIndex, type TaskRecord } from '../records.js';
import { arrayForBatch } from '../../allocation.js';
import { ChurnSet } from '../../collections.js';
import type { RecordEncoder } from './databases.js';
import { encodedNumber } from './codec.js';
import { DB, REMOVAL } from './layout.js';
import { REMOVED, type DirtyEntry } from './overlay.js';

/** See the module comment. Its writes run inside the store's transactions. */
export class RecordWrites {
  readonly #dbs: Array<Database<unknown, Key>>;
  /** The encoders of the positionally stored databases, by index (the ones those databases use). */
  readonly #encoders: Array<RecordEncoder | undefined>;
  /** Ids in the active index database, kept from the task records materialized (see {@link RecordWrites.materialize}). */
  readonly #activeInDb = new ChurnSet<string>();
  /** Settled tasks per agent and state, as of the last batch written. */
  readonly #counts = new Map<string, Partial<Record<TaskState, number>>>();
  #countsChanged = false;

  constructor(dbs: Array<Database<unknown, Key>>, encoders: Array<RecordEncoder | undefined>) {
    this.#dbs = dbs;
    this.#encoders = encoders;
  }

  /** Reads the active index as stored (on open, after a replay). */
  loadActive(): void {
    for (const id of this.#dbs[DB.active]!.getKeys()) this.#activeInDb.add(id as string);
  }

  /**
   * Takes the settled counts as stored (on open), or for a data dir written before they were
   * kept, counts them from the `listed` index, to be stored by the next {@link RecordWrites.writeCounts}.
   */
  loadCounts(meta: Database<unknown, string>): void {
    const stored = storedCounts(meta);
    this.#counts.clear();
    for (const [agent, state, n] of stored ?? countListed(this.#dbs)) this.#count(agent, state, n);
    this.#countsChanged = stored === undefined;
  }

  /** Writes the settled counts to the meta database if this transaction changed them (last, inside it). */
  writeCounts(meta: Database<unknown, string>): void {
    if (!this.#countsChanged) return;
    this.#countsChanged = false;
    const out: Array<[string, TaskState, number]> = [];
    for (const [agent, counts] of this.#counts) {
      for (const state in counts) if (counts[state as TaskState]! !== 0) out.push([agent, state as TaskState, counts[state as TaskState]!]);
    }
    meta.put(COUNTS, out);
  }

  #count(agent: string, state: TaskState, by: number): void {
    let counts = this.#counts.get(agent);
    if (!counts) this.#counts.set(agent, (counts = {}));
    counts[state] = (counts[state] ?? 0) + by;
    this.#countsChanged = true;
  }

  /** A value for database `db` as its put takes it: encoded already where our own encoder writes it. */
  prepared(db: number, value: unknown): unknown {
    const encoder = this.#encoders[db];
    return encoder ? asBinary(encoder.encode(value)) : value;
  }

  /** Values of the direct ops (flat [db, key, value], see batch-writer.ts) as their puts take them; undefined for a removal. */
  preparedDirect(direct: readonly unknown[]): unknown[] {
    const values = arrayForBatch<unknown>();
    for (let i = 0; i < direct.length; i += 3) values.push((direct[i] as number) >= REMOVAL ? undefined : this.prepared(direct[i] as number, direct[i + 2]));
    return values;
  }

  /** Writes the direct ops, with the values {@link RecordWrites.preparedDirect} made. */
  writeDirect(direct: readonly unknown[], values: readonly unknown[]): void {
    for (let i = 0; i < direct.length; i += 3) {
      const index = direct[i] as number;
      if (index >= REMOVAL) {
        const key = direct[i + 1] as Key;
        if (index - REMOVAL === DB.listed) this.#count((key as string[])[0]!, (key as TaskState[])[1]!, -1);
        this.#dbs[index - REMOVAL]!.remove(key);
        if (index - REMOVAL === DB.active) this.#activeInDb.delete(key as string);
      } else this.#dbs[index]!.put(direct[i + 1] as Key, values[i / 3]);
    }
  }

  /** Values of overlay entries as their puts take them. */
  preparedEntries(entries: readonly DirtyEntry[]): unknown[] {
    return entries.map((entry) => (entry.value === REMOVED ? REMOVED : this.prepared(entry.db, entry.value)));
  }

  /** Writes an overlay entry (its value as {@link RecordWrites.prepared} made it) to its database. */
  materialize(entry: DirtyEntry, value: unknown): void {
    const db = this.#dbs[entry.db]!;
    // A record created and removed while in the overlay never reached its database: nothing to do.
    // (The read sees every earlier materialization: an entry cools for more batches than may be
    // in flight, so any earlier write of this key has landed.)
    // A removed task's retention entry went in the commit of its removal (the prune step's).
    if (entry.value === REMOVED) {
      if (db.doesExist(entry.key)) db.remove(entry.key);
    } else db.put(entry.key, value);
    if (entry.db === DB.tasks) {
      const task = entry.value === REMOVED ? undefined : (entry.value as TaskRecord);
      this.#indexActive(entry.key as string, task);
      if (task !== undefined && isTerminal(task.state)) this.#indexSettled(task);
    }
  }

  /** Puts a settled task's index entries (see {@link settledIndexEntries}), and counts it. */
  #indexSettled(task: TaskRecord): void {
    forEachSettledIndexEntry(task, this.#putIndexEntry);
  }

  readonly #putIndexEntry = (index: SettledIndex, key: Key, value: ListedValue | true): void => {
    this.#dbs[DB[index]]!.put(key, value === true ? TRUE : value === false ? FALSE : asBinary(encodedNumber(value)));
    if (index === 'listed') this.#count((key as string[])[0]!, (key as TaskState[])[1]!, 1);
  };

  /**
   * Keeps the active index in step with a task record written to its database: the id is there
   * exactly while the record is not terminal. Tasks that settle before they are materialized
   * never enter it (a replay derives it for the log's tasks in the same way).
   */
  #indexActive(id: string, task: TaskRecord | undefined): void {
    if (task === undefined || isTerminal(task.state)) {
      if (this.#activeInDb.delete(id)) this.#dbs[DB.active]!.remove(id);
    } else if (!this.#activeInDb.has(id)) {
      this.#activeInDb.add(id);
      this.#dbs[DB.active]!.put(id, TRUE);
    }
  }
}

/** `true` as the index databases store it (msgpack), encoded once: their values say nothing more. */
const TRUE = asBinary(Buffer.from([0xc3]));
const FALSE = asBinary(Buffer.from([0xc2]));

/** The meta key of the settled counts. */
const COUNTS = 'settledCounts';

/**
 * The settled counts as the database holds them now, per agent and state: as of the last commit
 * that landed, with the index entries they count. Undefined for a data dir written before they
 * were kept (see {@link countListed}).
 */
export function storedCounts(meta: Database<unknown, string>): Array<[agent: string, state: TaskState, count: number]> | undefined {
  return meta.get(COUNTS) as Array<[string, TaskState, number]> | undefined;
}

/** The settled tasks counted from the `listed` index, per agent and state (once per data dir: about 280 ns a task). */
export function countListed(dbs: ReadonlyArray<Database<unknown, Key>>): Array<[agent: string, state: TaskState, count: number]> {
  const out: Array<[string, TaskState, number]> = [];
  const listed = dbs[DB.listed]!;
  for (let from: Key = []; ; ) {
    let first: Key | undefined;
    for (const key of listed.getKeys({ start: from, limit: 1 })) first = key;
    if (first === undefined) break;
    const [agent, state] = first as [string, TaskState];
    out.push([agent, state, listed.getCount({ start: [agent, state], end: [agent, state, AFTER] })]);
    from = [agent, state, AFTER];
  }
  return out;
}

/** The greatest string key part: an upper bound after every number and id. */
const AFTER = '\uffff';
