/**
 * The PostgreSQL schema's migrations on a real server (test/postgres.ts): applied once, in order,
 * whoever starts first, with the others waiting on the advisory lock; a failed version leaves the
 * last whole one; a newer schema is refused. And the test setup's own throwaway cluster.
 */
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { MIGRATIONS, migrate, versionOf, type Migration } from '../../src/store/postgres/migrations.js';
import { reachable, startCluster } from '../postgres.js';
import { rejection, scratchPools } from '../helpers.js';

const pools = scratchPools();
/** A pool on a fresh, unmigrated database of the test server. */
const freshPool = async (max = 10): Promise<pg.Pool> => (await pools({ max, migrated: false })).pool;

const tables = async (pool: pg.Pool) =>
  (await pool.query<{ name: string }>("SELECT table_name AS name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1")).rows.map((r) => r.name);

describe('PostgreSQL schema migrations', () => {
  it('brings an empty database to the latest version once; a second run finds nothing to do', async () => {
    const pool = await freshPool();
    const first = await migrate(pool);
    expect(first).toEqual({ from: 0, to: MIGRATIONS.length, applied: MIGRATIONS.map((m) => m.version) });
    expect(await tables(pool)).toEqual(['troupe_agents', 'troupe_attempt_rows', 'troupe_attempts', 'troupe_control', 'troupe_event_batches', 'troupe_events', 'troupe_inbox', 'troupe_logs', 'troupe_migrations', 'troupe_nodes', 'troupe_schedules', 'troupe_tasks']);
    expect(await migrate(pool)).toEqual({ from: MIGRATIONS.length, to: MIGRATIONS.length, applied: [] });
    expect((await pool.query('SELECT count(*)::int AS n FROM troupe_migrations')).rows[0].n).toBe(MIGRATIONS.length);
  });

  it('applies each version exactly once when several nodes start at the same time', async () => {
    const pool = await freshPool(12);
    // Slow versions, so the nodes overlap: all but one wait on the advisory lock.
    const migrations: Migration[] = [
      { version: 1, name: 'one', sql: 'CREATE TABLE one (id int); SELECT pg_sleep(0.05);' },
      { version: 2, name: 'two', sql: 'CREATE TABLE two (id int); SELECT pg_sleep(0.05);' },
    ];
    const results = await Promise.all(Array.from({ length: 6 }, () => migrate(pool, migrations)));
    expect(results.flatMap((r) => r.applied).sort()).toEqual([1, 2]);
    expect(results.every((r) => r.to === 2)).toBe(true);
    expect(await tables(pool)).toEqual(['one', 'troupe_migrations', 'two']);
  });

  it('leaves the last whole version when one fails, and goes on from there once it is fixed', async () => {
    const pool = await freshPool();
    const good = { version: 1, name: 'one', sql: 'CREATE TABLE one (id int)' };
    const failed = await rejection(migrate(pool, [good, { version: 2, name: 'broken', sql: 'CREATE TABLE two (id int); SELECT no_such_function();' }]));
    expect(failed).toMatchObject({ code: 'STORE_FAILED', message: expect.stringContaining('migration 2 (broken)') });
    const client = await pool.connect();
    try {
      expect(await versionOf(client)).toBe(1);
    } finally {
      client.release();
    }
    expect(await tables(pool)).toEqual(['one', 'troupe_migrations']);
    // The lock went with the failure: the next run takes it and applies the fixed version.
    expect(await migrate(pool, [good, { version: 2, name: 'fixed', sql: 'CREATE TABLE two (id int)' }])).toMatchObject({ from: 1, to: 2, applied: [2] });
  });

  it('refuses a database a newer build migrated, and a malformed list of versions', async () => {
    const pool = await freshPool();
    await migrate(pool, [...MIGRATIONS, { version: MIGRATIONS.length + 1, name: 'future', sql: 'CREATE TABLE future (id int)' }]);
    expect(await rejection(migrate(pool))).toMatchObject({ code: 'SCHEMA_MISMATCH', message: expect.stringContaining(`version ${MIGRATIONS.length + 1}`) });
    expect(await rejection(migrate(pool, [{ version: 2, name: 'gap', sql: 'SELECT 1' }]))).toMatchObject({ code: 'INVALID_OPTIONS' });
    expect(await rejection(migrate(pool, [{ version: 1, name: '', sql: 'SELECT 1' }]))).toMatchObject({ code: 'INVALID_OPTIONS' });
  });
});

describe('the tests\' own PostgreSQL', () => {
  it('starts a throwaway cluster with initdb and pg_ctl, and stops it', async () => {
    const cluster = await startCluster();
    try {
      expect(await reachable(cluster.url)).toBe(true);
    } finally {
      await cluster.stop();
    }
    expect(await reachable(cluster.url, 500)).toBe(false);
  }, 60_000);
});
