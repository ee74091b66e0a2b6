/**
 * vitest's global setup: finds PostgreSQL for the tests (see test/postgres.ts) once per run and
 * gives its URL to every test file as `inject('pgUrl')`, and the name of a database migrated to
 * this build's schema, which the tests' migrated scratch databases are copies of, as
 * `inject('pgTemplate')`.
 */
import type { TestProject } from 'vitest/node';
import { migrate } from '../src/store/postgres/migrations.js';
import { DEFAULT_PG_URL, migratedTemplate, reachable, startCluster } from './postgres.js';

declare module 'vitest' {
  export interface ProvidedContext {
    pgUrl: string;
    pgTemplate: string;
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const given = process.env.TROUPE_PG_URL ?? DEFAULT_PG_URL;
  const cluster = (await reachable(given)) ? undefined : await startCluster();
  const url = cluster?.url ?? given;
  const template = await migratedTemplate(url, migrate).catch(async (error: unknown) => {
    await cluster?.stop();
    throw error;
  });
  project.provide('pgUrl', url);
  project.provide('pgTemplate', template.name);
  return async () => {
    try {
      await template.drop();
    } finally {
      await cluster?.stop();
    }
  };
}
