/**
 * Quarantine: a record that cannot be read is moved aside. Its raw bytes go to the `quarantine`
 * database, the record is removed, a `store.quarantined` event is written and the owner is told.
 * The write is deferred to a microtask so it never nests inside the step that happened to read the
 * record; until it lands, reads skip the record.
 */
import type { Database } from 'lmdb';
import type { Key, QuarantineRecord, StepWriter } from '../port.js';
import type { BatchWriter } from './batch-writer.js';
import { DB, REMOVAL, type DbName } from './layout.js';

/** What quarantining writes with and reports to. */
export interface QuarantineDeps {
  now(): number;
  /** Told about every record moved aside. */
  report?(record: QuarantineRecord): void;
  commit(fn: (writer: StepWriter) => void): Promise<unknown>;
  /** The event log (its records are removed directly: they are not in the log's ops). */
  events: Database<unknown, number>;
  closed(): boolean;
}

/** See the module comment. */
export class Quarantine {
  readonly #deps: QuarantineDeps;
  /** Records moved aside whose removal has not landed yet: reads skip them. */
  readonly #held = new Set<string>();

  constructor(deps: QuarantineDeps) {
    this.#deps = deps;
  }

  /** Whether reads should skip this record. */
  readonly has = (name: string, key: unknown): boolean => this.#held.size > 0 && this.#held.has(keyOf(name, key));

  /** Moves a bad record of database `name` aside (once). */
  readonly add = (name: string, db: Database<unknown, any>, key: unknown, problem: string): void => {
    const id = keyOf(name, key);
    if (this.#held.has(id)) return;
    this.#held.add(id);
    let bytes: Uint8Array | undefined;
    try {
      bytes = db.getBinary(key as Key) ?? undefined;
    } catch {
      bytes = undefined;
    }
    const deps = this.#deps;
    const at = deps.now();
    const record: QuarantineRecord = { db: name, key: String(key), bytes, problem, at };
    deps.report?.(record);
    const target = name === 'events' ? undefined : DB[name as DbName];
    queueMicrotask(() => {
      if (deps.closed()) return;
      let removed: Promise<unknown> = Promise.resolve();
      deps
        .commit((w) => {
          const writer = w as BatchWriter;
          writer.raw(DB.quarantine, [name, record.key], record);
          if (target !== undefined) writer.raw(target + REMOVAL, key as Key, null);
          else removed = deps.events.remove(key as number);
          w.event('store.quarantined', { at, data: { db: name, key: record.key, problem } });
        })
        .then(() => removed)
        // Removed: reads find what is there now (nothing, or a record written to the key since).
        // Until then, or for good if the removal failed, they skip the key.
        .then(() => this.#held.delete(id))
        .catch(() => undefined);
    });
  };
}

function keyOf(name: string, key: unknown): string {
  return `${name}\u0000${Array.isArray(key) ? key.join('\u0000') : String(key)}`;
}
