/**
 * vitest's global setup: finds PostgreSQL for the tests (see test/postgres.ts) once per run and
 * gives every test file its server as `inject('pgServers')`, one per worker: the URL, and the name
 * of a database migrated to this build's schema, which the tests' migrated scratch databases are
 * copies of. A test file takes its worker's (helpers.ts `pgServer`).
 *
 * Why a server per worker: the event log is read below the server's xmin, and transaction ids
 * are the server's, not a database's. A transaction in progress in any database holds back the
 * events committed after it began, so a test file that reads the log right after a commit could
 * miss them while another file's transactions run on the same server. Each worker's files run one
 * at a time, as on a server of their own.
 */
import type { TestProject } from 'vitest/node';
import { migrate } from '../src/store/postgres/migrations.js';
import { DEFAULT_PG_URL, migratedTemplate, reachable, startCluster } from './postgres.js';
// The user libpq would log in as when the URL names none (node-postgres sends none without $USER).
import { withUser } from '../bench/pg-url.js';

/** A PostgreSQL server of the run: its URL and its migrated template database. */
export interface PgServer {
  url: string;
  template: string;
}

declare module 'vitest' {
  export interface ProvidedContext {
    pgServers: PgServer[];
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const workers = Math.max(1, project.globalConfig.maxWorkers);
  const stops: Array<() => Promise<void>> = [];
  const teardown = async () => {
    for (const stop of stops.splice(0).reverse()) {
      // A cluster left running or a template left behind is worth a line, not a failed run.
      await stop().catch((error: unknown) => console.warn(`test/postgres-setup.ts: teardown: ${(error as Error).message}`));
    }
  };
  try {
    const given = withUser(process.env.TROUPE_PG_URL ?? DEFAULT_PG_URL);
    const urls: string[] = [];
    if (await reachable(given)) urls.push(given);
    // The first worker uses the server given (when one answers); every other, a throwaway cluster.
    const started = await Promise.allSettled(Array.from({ length: workers - urls.length }, () => startCluster()));
    for (const outcome of started) {
      if (outcome.status === 'fulfilled') {
        stops.push(outcome.value.stop);
        urls.push(outcome.value.url);
      }
    }
    const failed = started.find((outcome) => outcome.status === 'rejected');
    if (failed) {
      const reason = (failed.reason as Error).message;
      throw new Error(`${reason}\n(each of vitest's ${workers} workers needs a PostgreSQL server of its own; with only the one at TROUPE_PG_URL, run vitest with --maxWorkers=1)`);
    }
    const servers: PgServer[] = [];
    for (const url of urls) {
      const template = await migratedTemplate(url, migrate);
      stops.push(template.drop);
      servers.push({ url, template: template.name });
    }
    project.provide('pgServers', servers);
  } catch (error) {
    await teardown();
    throw error;
  }
  return teardown;
}
