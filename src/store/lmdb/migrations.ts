/**
 * The schema version of an LMDB data dir, and the migrations that bring an older one up to it. A
 * migration runs at open, inside one synchronous transaction.
 */
import type { RootDatabase } from 'lmdb';
import type { Key } from '../port.js';
import { databaseEncoder, eventBatchEncoder } from './codec.js';
import { migrateEventsToBatches } from './event-log.js';
import { CODECS, DATABASES, encoded, STRUCTURES } from './layout.js';

/** The schema this build reads and writes. Bump it with a migration in {@link MIGRATIONS}. */
export const SCHEMA_VERSION = 2;

/** Upgrades from version n to n+1, run at open inside one synchronous transaction. */
export const MIGRATIONS: Record<number, (root: RootDatabase) => void> = {
  // 1 → 2: events move from one record each to one record per batch; tasks, attempts and runs
  // are stored positionally (codec.ts) instead of as msgpack maps with shared structures.
  1: (root) => {
    migrateEventsToBatches(root.openDB({ name: 'events', sharedStructuresKey: STRUCTURES }), root.openDB(encoded('eventLog', eventBatchEncoder)));
    for (const [index, codec] of CODECS) {
      const name = DATABASES[index]!;
      const old = root.openDB<unknown, Key>({ name, sharedStructuresKey: STRUCTURES });
      const neu = root.openDB<unknown, Key>(encoded(name, databaseEncoder(codec)));
      for (const { key, value } of old.getRange()) neu.putSync(key, codec.normalize(value as never));
    }
  },
};

