/**
 * The PostgreSQL schema's versions (issue #15: many runtimes, on many machines, on one database).
 * Whichever node starts first brings the schema up to date: `migrate()` takes a session advisory
 * lock, so nodes that start together wait for it and then find nothing left to do. Each version
 * commits in a transaction of its own with its row in `troupe_migrations`, so a node that dies
 * half-way leaves the schema at the last whole version. A database at a version this build does
 * not know (a newer build migrated it) is refused with SCHEMA_MISMATCH, as the LMDB store refuses
 * a newer data dir.
 */
import type { Pool, PoolClient } from 'pg';
import { TroupeError } from '../../errors.js';
import { MIGRATIONS_1 } from './schema-1.js';
import { MIGRATIONS_2 } from './schema-2.js';

/** One version of the schema: what takes the previous version to it. */
export interface Migration {
  version: number;
  name: string;
  sql: string;
}

/** The schema, version by version (append only: a released version never changes). */
export const MIGRATIONS: readonly Migration[] = [...MIGRATIONS_1, ...MIGRATIONS_2];

/** The advisory lock key of migrations: 'troupe' in ASCII, a constant every node agrees on. */
export const MIGRATION_LOCK = 0x74726f757065;

/** What {@link migrate} did. */
export interface MigrationResult {
  /** The version the database was at. */
  from: number;
  /** The version it is at now. */
  to: number;
  /** The versions this call applied (none when another node had, or nothing was pending). */
  applied: number[];
}

/** Brings the database's schema to the last of `migrations` (see the module comment). */
export async function migrate(pool: Pool, migrations: readonly Migration[] = MIGRATIONS): Promise<MigrationResult> {
  checkMigrations(migrations);
  const client = await pool.connect();
  let locked = false;
  try {
    await client.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK]);
    locked = true;
    await client.query('CREATE TABLE IF NOT EXISTS troupe_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())');
    const from = await versionOf(client);
    const latest = migrations.at(-1)?.version ?? 0;
    if (from > latest) throw new TroupeError('SCHEMA_MISMATCH', `the database's schema is at version ${from}, newer than this build knows (${latest}): upgrade troupe`);
    const applied: number[] = [];
    for (const migration of migrations) {
      if (migration.version <= from) continue;
      await client.query('BEGIN');
      try {
        await client.query(migration.sql);
        await client.query('INSERT INTO troupe_migrations (version, name) VALUES ($1, $2)', [migration.version, migration.name]);
        await client.query('COMMIT');
      } catch (error) {
        await client.query('ROLLBACK').catch(() => undefined);
        throw new TroupeError('STORE_FAILED', `schema migration ${migration.version} (${migration.name}) failed: ${(error as Error).message}`, { cause: error });
      }
      applied.push(migration.version);
    }
    return { from, to: Math.max(from, latest), applied };
  } finally {
    if (locked) await client.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK]).catch(() => undefined);
    client.release();
  }
}

/** The version the database's schema is at (0: none applied). */
export async function versionOf(client: Pick<PoolClient, 'query'>): Promise<number> {
  const { rows } = await client.query<{ version: number | null }>('SELECT max(version) AS version FROM troupe_migrations');
  return rows[0]?.version ?? 0;
}

/** Versions must run 1, 2, 3, … with a name and some SQL each: a gap or a repeat is a build error. */
function checkMigrations(migrations: readonly Migration[]): void {
  migrations.forEach((m, i) => {
    if (m.version !== i + 1 || !m.name || !m.sql.trim()) throw new TroupeError('INVALID_OPTIONS', `migration ${i + 1} is malformed: versions run 1, 2, 3, … with a name and SQL each`);
  });
}
