import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';
import { canStartCluster } from './postgres.js';

const root = fileURLToPath(new URL('..', import.meta.url));

// Integration and crash tests import the built package (`troupe`, `troupe/agent`), so worker threads
// load agents exactly as they would from an installed package. `npm test` builds first.
export default defineConfig({
  root,
  resolve: {
    alias: [
      { find: /^troupe\/agent$/, replacement: `${root}dist/actors/agent.js` },
      { find: /^troupe\/testing$/, replacement: `${root}dist/src/testing/index.js` },
      { find: /^troupe$/, replacement: `${root}dist/src/index.js` },
    ],
  },
  test: {
    include: ['test/**/*.test.ts'],
    // PostgreSQL for the tests that need it: TROUPE_PG_URL, or a throwaway cluster (test/postgres.ts).
    globalSetup: ['test/postgres-setup.ts'],
    pool: 'forks',
    // Two files at a time: vitest's default on 2 cores is one, and the suite spends much of its
    // time waiting on child processes, threads and the disk. Each worker has a PostgreSQL server
    // of its own (test/postgres-setup.ts says why), so the second needs initdb and pg_ctl to start
    // one; without them, one file at a time on the server given.
    maxWorkers: canStartCluster() ? 2 : 1,
    testTimeout: 30_000,
    hookTimeout: 30_000,
    server: { deps: { external: [/\/dist\//] } },
  },
});
