/**
 * PostgreSQL for the tests: the server at TROUPE_PG_URL (default postgres://127.0.0.1:5432/test),
 * or, when none answers there, a throwaway cluster started with initdb and pg_ctl in a temp dir
 * (run as the `postgres` user when the tests run as root: initdb refuses root). No PostgreSQL test
 * ever skips: without one, the setup fails.
 */
import { execFileSync } from 'node:child_process';
import { accessSync, chmodSync, constants, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import pg from 'pg';

export const DEFAULT_PG_URL = 'postgres://127.0.0.1:5432/test';

/** Whether a server answers a query at `url` within `timeoutMs`. */
export async function reachable(url: string, timeoutMs = 2_000): Promise<boolean> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: timeoutMs });
  try {
    await client.connect();
    await client.query('SELECT 1');
    return true;
  } catch {
    return false;
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** A free TCP port on loopback. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

/** Whether `initdb` and `pg_ctl` are on the PATH, so that {@link startCluster} can start a cluster. */
export function canStartCluster(): boolean {
  const dirs = (process.env.PATH ?? '').split(delimiter).filter((dir) => dir !== '');
  const found = (binary: string) => dirs.some((dir) => {
    try {
      accessSync(join(dir, binary), constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
  return found('initdb') && found('pg_ctl');
}

/** Runs a PostgreSQL binary, as `postgres` when this process is root. */
function run(binary: string, args: string[]): void {
  const asRoot = process.getuid?.() === 0;
  execFileSync(asRoot ? 'runuser' : binary, asRoot ? ['-u', 'postgres', '--', binary, ...args] : args, { stdio: 'pipe' });
}

/** Starts a throwaway cluster with a `test` database; `stop()` stops it and removes its files. */
export async function startCluster(): Promise<{ url: string; stop: () => Promise<void> }> {
  const dir = mkdtempSync(join(tmpdir(), 'troupe-pg-'));
  // The postgres user must own its data dir and be able to reach it.
  chmodSync(dir, 0o777);
  const data = join(dir, 'data');
  const port = await freePort();
  try {
    run('initdb', ['-D', data, '-A', 'trust', '-U', 'postgres', '--no-sync']);
    run('pg_ctl', ['-D', data, '-w', '-l', join(dir, 'log'), '-o', `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off`, 'start']);
  } catch (error) {
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`could not start a PostgreSQL cluster (initdb/pg_ctl): ${(error as { stderr?: Buffer }).stderr?.toString() ?? (error as Error).message}`);
  }
  const stop = async () => {
    try {
      run('pg_ctl', ['-D', data, '-w', '-m', 'fast', 'stop']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };
  const admin = new pg.Client({ connectionString: `postgres://postgres@127.0.0.1:${port}/postgres` });
  try {
    await admin.connect();
    await admin.query('CREATE DATABASE test');
  } catch (error) {
    await stop();
    throw error;
  } finally {
    await admin.end().catch(() => undefined);
  }
  return { url: `postgres://postgres@127.0.0.1:${port}/test`, stop };
}

/**
 * A fresh database on the server at `url` for one test; `drop()` removes it. With `template` (the
 * run's migrated database, {@link migratedTemplate}), a copy of it: about 80 ms, where an empty
 * database that the test then migrates takes about 350.
 */
export async function scratchDatabase(url: string, template?: string): Promise<{ url: string; drop: () => Promise<void> }> {
  const name = `troupe_test_${process.pid}_${Math.random().toString(36).slice(2, 10)}`;
  const admin = new pg.Client({ connectionString: url });
  await admin.connect();
  try {
    await admin.query(template === undefined ? `CREATE DATABASE ${name}` : `CREATE DATABASE ${name} TEMPLATE ${template}`);
  } finally {
    await admin.end();
  }
  const scratch = new URL(url);
  scratch.pathname = `/${name}`;
  return {
    url: scratch.href,
    drop: async () => {
      const client = new pg.Client({ connectionString: url });
      await client.connect();
      try {
        await client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      } finally {
        await client.end();
      }
    },
  };
}

/**
 * The run's template database: migrated to this build's latest version once (by the global
 * setup), then copied for each test that wants a migrated database. Nothing connects to it after
 * this, as `CREATE DATABASE … TEMPLATE` requires. `drop()` removes it at the end of the run.
 */
export async function migratedTemplate(url: string, migrate: (pool: pg.Pool) => Promise<unknown>): Promise<{ name: string; drop: () => Promise<void> }> {
  const db = await scratchDatabase(url);
  const pool = new pg.Pool({ connectionString: db.url, max: 1 });
  try {
    await migrate(pool);
  } catch (error) {
    await pool.end();
    await db.drop();
    throw error;
  }
  await pool.end();
  return { name: new URL(db.url).pathname.slice(1), drop: db.drop };
}

/**
 * Drops databases `drops` removes, several at once: a drop waits for a checkpoint (about 300 ms
 * here), and drops at the same time share one.
 */
export async function dropAll(drops: ReadonlyArray<() => Promise<void>>, atOnce = 8): Promise<void> {
  for (let i = 0; i < drops.length; i += atOnce) await Promise.all(drops.slice(i, i + atOnce).map((drop) => drop()));
}
