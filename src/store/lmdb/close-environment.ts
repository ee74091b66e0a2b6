/**
 * Closing an LMDB environment for good. lmdb-js records every database it opens in a module-level
 * map (`allDbs`, keyed by the data dir's name and the database's) and never takes one out, not
 * even when its environment closes. A process that opens and closes runtimes on new data dirs (a
 * test suite, an app with a data dir per tenant) kept each one's databases reachable, with their
 * encoders and caches: measured, about 120 KB of heap per runtime, growing without end.
 */
import * as lmdb from 'lmdb';
import type { RootDatabase } from 'lmdb';

/** What lmdb-js keeps in `allDbs` (not in its typings): each open database, which holds its environment. */
type OpenDatabases = Map<string, { env?: unknown }>;

/** Closes `root` (and so every database of its environment), then lets lmdb-js forget them. */
export async function closeEnvironment(root: RootDatabase): Promise<void> {
  try {
    await root.close();
  } finally {
    forgetEnvironment(root);
  }
}

/** Takes the databases of `root`'s environment out of lmdb-js's registry of open databases. */
function forgetEnvironment(root: RootDatabase): void {
  const open = (lmdb as unknown as { allDbs?: OpenDatabases }).allDbs;
  if (!(open instanceof Map)) return;
  const env = (root as unknown as { env?: unknown }).env;
  for (const [key, db] of open) if (db === (root as unknown) || (env !== undefined && db.env === env)) open.delete(key);
}
