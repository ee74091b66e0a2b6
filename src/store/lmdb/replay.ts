/**
 * Opening a store replays the log records after the checkpoint: a previous run died with their
 * changes not yet materialized. Each key's final value is folded first (a patch needs the version
 * before it), then written once, in one transaction with the log's truncation. The index of active
 * tasks follows each replayed task record, as it does when a record is materialized.
 */
import type { Database, RootDatabase } from 'lmdb';
import { isTerminal } from '../../../machines/index.js';
import type { Key } from '../port.js';
import type { TaskRecord } from '../records.js';
import { CODECS, DB, FINAL, PATCH, REMOVAL, type LogEntry } from './layout.js';
import { keyString, REMOVED } from './overlay.js';

/** A replayed key whose latest version its database already has. */
const SKIP = Symbol('skip');

/** Replays the log after the checkpoint; returns the last log record applied (the new checkpoint). */
export function replayLog(root: RootDatabase, dbs: ReadonlyArray<Database<unknown, Key>>, log: Database<LogEntry, number>, meta: Database<unknown, string>): number {
  const checkpoint = (meta.get('checkpoint') as number | undefined) ?? 0;
  let last = checkpoint;
  const finals = new Map<string, { db: number; key: Key; value: unknown }>();
  for (const { key, value } of log.getRange({ start: checkpoint + 1 })) {
    const ops = value.ops;
    for (let i = 0; i < ops.length; i += 3) {
      const index = ops[i] as number;
      const k = ops[i + 1] as Key;
      const db = index % REMOVAL;
      const id = `${db}\u0000${keyString(k)}`;
      if (index >= FINAL) {
        // The database has the latest version: whatever came before it in the log is stale.
        finals.set(id, { db: index - FINAL, key: k, value: SKIP });
      } else if (index >= PATCH) {
        const known = finals.get(id)?.value;
        const base = known === undefined || known === SKIP ? dbs[index - PATCH]!.get(k) : known;
        finals.set(id, { db: index - PATCH, key: k, value: CODECS.get(index - PATCH)!.patch(base, ops[i + 2] as unknown[]) });
      } else finals.set(id, { db, key: k, value: index >= REMOVAL ? REMOVED : ops[i + 2] });
    }
    last = key;
  }
  // A replayed task is in the active index exactly while it is not terminal. (A removed task's
  // retention entry went in its removal's own commit, not through the log.)
  for (const { db, key, value } of [...finals.values()]) {
    if (db !== DB.tasks || value === SKIP) continue;
    const active = value !== REMOVED && value !== undefined && !isTerminal((value as TaskRecord).state);
    finals.set(`${DB.active}\u0000${keyString(key)}`, { db: DB.active, key, value: active ? true : REMOVED });
  }
  root.transactionSync(() => {
    for (const { db, key, value } of finals.values()) {
      if (value === SKIP) continue;
      if (value === REMOVED || value === undefined) dbs[db]!.removeSync(key);
      else dbs[db]!.putSync(key, value);
    }
    for (const k of log.getKeys({ end: last + 1 })) log.removeSync(k);
    meta.putSync('checkpoint', last);
  });
  return last;
}
