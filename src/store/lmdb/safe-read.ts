/**
 * Reads that survive bad data. A record that fails to decode, or decodes to something that is not
 * the record it should be, is quarantined: its raw bytes move to the `quarantine` database, the
 * record is removed, a `store.quarantined` event is written and a line is logged. The read returns
 * undefined (or skips the entry) and the runtime keeps serving everything else.
 */
import type { Database, Key } from 'lmdb';
import type { RangeOptions, SafeDatabase } from '../port.js';
import { TASK_STATES } from '../../../machines/index.js';
import { TroupeError } from '../../errors.js';

/** Called once per bad record, with what is known about it. */
export type Quarantine = (database: string, db: Database<unknown, any>, key: unknown, problem: string) => void;

/** Wraps a database; `valid` tells a decoded record from garbage. */
export function safeDatabase<V, K extends Key>(name: string, db: Database<V, K>, valid: (value: unknown) => boolean, quarantine: Quarantine, isQuarantined: (name: string, key: unknown) => boolean): SafeDatabase<V, K> {
  const get = (key: K): V | undefined => {
    if (isQuarantined(name, key)) return undefined;
    let value: V | undefined;
    try {
      value = db.get(key);
    } catch (error) {
      quarantine(name, db as Database<unknown, any>, key, `does not decode: ${(error as Error).message}`);
      return undefined;
    }
    if (value === undefined) return undefined;
    if (!valid(value)) {
      quarantine(name, db as Database<unknown, any>, key, 'decodes to something that is not a valid record');
      return undefined;
    }
    return value;
  };
  /**
   * The keys in range; a damaged page that LMDB reports (rather than crashing on) is STORE_CORRUPT,
   * not a raw lmdb error. A reader that stops early ends the iterator too: left open, it would keep
   * its read transaction, and LMDB reuses no page freed after that snapshot (the file only grows).
   */
  function* keysOf(options: RangeOptions): Generator<K> {
    const iterator = db.getKeys(options as never)[Symbol.iterator]();
    let done = false;
    try {
      for (;;) {
        let next: IteratorResult<K>;
        try {
          next = iterator.next() as IteratorResult<K>;
        } catch (error) {
          throw damaged(name, error);
        }
        if (next.done) {
          done = true;
          return;
        }
        yield next.value;
      }
    } finally {
      if (!done) iterator.return?.();
    }
  }
  return {
    get,
    *range(options: RangeOptions = {}) {
      for (const key of keysOf(options)) {
        const value = get(key);
        if (value !== undefined) yield { key, value };
      }
    },
    *keys(options: RangeOptions = {}) {
      for (const key of keysOf(options)) if (!isQuarantined(name, key)) yield key;
    },
    has: (key) => {
      if (isQuarantined(name, key)) return false;
      try {
        return db.doesExist(key);
      } catch (error) {
        throw damaged(name, error);
      }
    },
  };
}

function damaged(name: string, error: unknown): TroupeError {
  return new TroupeError('STORE_CORRUPT', `reading the ${name} database failed: ${(error as Error)?.message ?? String(error)} (the data file is damaged)`, { cause: error });
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const states = new Set<string>(TASK_STATES);

/** Minimal shape checks per database: enough to never hand garbage to the engine. */
export const VALIDATORS = {
  tasks: (v: unknown) => isObject(v) && typeof v.id === 'string' && states.has(v.state as string) && typeof v.instanceKey === 'string' && typeof v.runs === 'number',
  attempts: (v: unknown) => isObject(v) && typeof v.taskId === 'string' && typeof v.run === 'number' && typeof v.attempt === 'number',
  runs: (v: unknown) => isObject(v) && typeof v.taskId === 'string' && typeof v.run === 'number',
  events: (v: unknown) => isObject(v) && typeof v.seq === 'number' && typeof v.type === 'string',
  timers: (v: unknown) => isObject(v) && typeof v.id === 'string' && typeof v.due === 'number' && typeof v.taskId === 'string',
  instances: (v: unknown) => isObject(v) && isObject(v.snapshot) && isObject((v.snapshot as Record<string, unknown>).context),
  logs: (v: unknown) => isObject(v) && typeof v.message === 'string',
  idempotency: (v: unknown) => typeof v === 'string',
  schedules: (v: unknown) => isObject(v) && typeof v.id === 'string' && typeof v.cron === 'string' && typeof v.nextRunAt === 'number' && isObject(v.task),
} as const;
