/**
 * How the store writes records to their own databases (not the log): the values encoded before the
 * transaction, an overlay entry materialized, a direct write or removal, and the indexes kept in
 * step with the task records written: the active index, and those of settled tasks that retention
 * and `list()` read (see {@link settledIndexEntries}).
 */
import { asBinary, type Database } from 'lmdb';
import { isTerminal, type TaskState } from '../../../machines/index.js';
import type { Key } from '../port.js';
import { settledIndexEntries, type TaskRecord } from '../records.js';
import { ChurnSet } from '../../collections.js';
import type { RecordEncoder } from './databases.js';
import { DB, REMOVAL } from './layout.js';
import { REMOVED, type DirtyEntry } from './overlay.js';

/** See the module comment. Its writes run inside the store's transactions. */
export class RecordWrites {
  readonly #dbs: Array<Database<unknown, Key>>;
  /** The encoders of the positionally stored databases, by index (the ones those databases use). */
  readonly #encoders: Array<RecordEncoder | undefined>;
  /** Ids in the active index database, kept from the task records materialized (see {@link RecordWrites.materialize}). */
  readonly #activeInDb = new ChurnSet<string>();

  constructor(dbs: Array<Database<unknown, Key>>, encoders: Array<RecordEncoder | undefined>) {
    this.#dbs = dbs;
    this.#encoders = encoders;
  }

  /** Reads the active index as stored (on open, after a replay). */
  loadActive(): void {
    for (const id of this.#dbs[DB.active]!.getKeys()) this.#activeInDb.add(id as string);
  }

  /** A value for database `db` as its put takes it: encoded already where our own encoder writes it. */
  prepared(db: number, value: unknown): unknown {
    const encoder = this.#encoders[db];
    return encoder ? asBinary(encoder.encode(value)) : value;
  }

  /** Values of the direct ops (flat [db, key, value], see batch-writer.ts) as their puts take them; undefined for a removal. */
  preparedDirect(direct: readonly unknown[]): unknown[] {
    const values: unknown[] = [];
    for (let i = 0; i < direct.length; i += 3) values.push((direct[i] as number) >= REMOVAL ? undefined : this.prepared(direct[i] as number, direct[i + 2]));
    return values;
  }

  /** Writes the direct ops, with the values {@link RecordWrites.preparedDirect} made. */
  writeDirect(direct: readonly unknown[], values: readonly unknown[]): void {
    for (let i = 0; i < direct.length; i += 3) {
      const index = direct[i] as number;
      if (index >= REMOVAL) {
        this.#dbs[index - REMOVAL]!.remove(direct[i + 1] as Key);
        if (index - REMOVAL === DB.active) this.#activeInDb.delete(direct[i + 1] as string);
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

  /** Puts a settled task's index entries (see {@link settledIndexEntries}). */
  #indexSettled(task: TaskRecord): void {
    for (const [index, key] of settledIndexEntries(task)) this.#dbs[DB[index]]!.put(key, true);
  }

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
      this.#dbs[DB.active]!.put(id, true);
    }
  }
}

/** A stored task record, or undefined when there is none or it does not decode (a quarantined record goes without one). */
export function readable(db: Database<unknown, Key>, key: Key): TaskRecord | undefined {
  try {
    return db.get(key) as TaskRecord | undefined;
  } catch {
    return undefined;
  }
}

/**
 * The stored settled tasks counted per agent and state from the retention indexes (see
 * `settledIndexKeys`): a native count per agent and state in `settled` (about 80 ns a task), and
 * the few with a rule of their own read one by one; no task record is decoded for the rest.
 */
export function countSettled(dbs: ReadonlyArray<Database<unknown, Key>>): Array<[agent: string, state: TaskState, count: number]> {
  const out: Array<[string, TaskState, number]> = [];
  const settled = dbs[DB.settled]!;
  for (let from: Key = []; ; ) {
    let first: Key | undefined;
    for (const key of settled.getKeys({ start: from, limit: 1 })) first = key;
    if (first === undefined) break;
    const [agent, state] = first as [string, TaskState];
    out.push([agent, state, settled.getCount({ start: [agent, state], end: [agent, state, AFTER] })]);
    from = [agent, state, AFTER];
  }
  for (const [, id] of dbs[DB.expiry]!.getKeys() as Iterable<[number, string]>) {
    const task = readable(dbs[DB.tasks]!, id);
    if (task && isTerminal(task.state)) out.push([task.agent, task.state, 1]);
  }
  return out;
}

/** The greatest string key part: an upper bound after every number and id. */
const AFTER = '\uffff';
