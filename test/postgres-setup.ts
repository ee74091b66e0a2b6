/**
 * vitest's global setup: finds PostgreSQL for the tests (see test/postgres.ts) once per run and
 * gives its URL to every test file as `inject('pgUrl')`.
 */
import type { TestProject } from 'vitest/node';
import { DEFAULT_PG_URL, reachable, startCluster } from './postgres.js';

declare module 'vitest' {
  export interface ProvidedContext {
    pgUrl: string;
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const given = process.env.TROUPE_PG_URL ?? DEFAULT_PG_URL;
  if (await reachable(given)) {
    project.provide('pgUrl', given);
    return async () => undefined;
  }
  const cluster = await startCluster();
  project.provide('pgUrl', cluster.url);
  return cluster.stop;
}
