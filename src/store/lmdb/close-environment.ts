/**
 * Closing an LMDB environment for good. lmdb-js records every database it opens in a module-level
 * map (`allDbs`, keyed by the data dir's name and the database's) and never takes one out, not
 * even when its environment closes. A process that opens and closes runtimes on new data dirs (a
 * test suite, an app with a data dir per tenant) kept each one's databases reachable, with their
 * encoders and caches: measured, about 120 KB of heap per runtime, growing without end.
 */
import { createRequire } from 'node:module';
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

/** Takes the databases of `root`'s environment out of lmdb-js's registries of open databases. */
function forgetEnvironment(root: RootDatabase): void {
  const env = (root as unknown as { env?: unknown }).env;
  for (const open of registries()) {
    for (const [key, db] of open) if (db === (root as unknown) || (env !== undefined && db.env === env)) open.delete(key);
  }
}

/**
 * lmdb-js's registries: this module's, and the CommonJS build's when the app loaded that too
 * (then lmdb-js opens every environment through the build loaded first, so its map holds them).
 * The CommonJS build is only looked up, never loaded here.
 */
function registries(): OpenDatabases[] {
  const found: OpenDatabases[] = [];
  const esm = (lmdb as unknown as { allDbs?: unknown }).allDbs;
  if (esm instanceof Map) found.push(esm as OpenDatabases);
  try {
    const require = createRequire(import.meta.url);
    const cjs = (require.cache[require.resolve('lmdb')]?.exports as { allDbs?: unknown } | undefined)?.allDbs;
    if (cjs instanceof Map && cjs !== esm) found.push(cjs as OpenDatabases);
  } catch {
    // No CommonJS build to find: this module's registry is the only one.
  }
  return found;
}
