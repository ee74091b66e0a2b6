/**
 * Helpers of the tests of the runtime on PostgreSQL: runtimes made with the built package's
 * `createRuntime({ store: { postgres } })` (their threads load the built worker and agents), each
 * closed after its test. Call at a test file's top level after `scratchPools()`, so the runtimes
 * close before their databases are dropped.
 */
import { afterEach } from 'vitest';
import { createRuntime, type Runtime, type RuntimeOptions } from 'troupe';

/** A factory of runtimes on the database at a URL, closed (force) after each test. */
export function pgRuntimes(): (url: string, options?: Omit<RuntimeOptions, 'store'>) => Promise<Runtime> {
  const runtimes: Runtime[] = [];
  afterEach(async () => {
    for (const rt of runtimes.splice(0)) await rt.close({ timeoutMs: 1_000, force: true }).catch(() => undefined);
  });
  return async (url, options = {}) => {
    const rt = await createRuntime({ threads: 1, slotsPerThread: 2, logger: false, ...options, store: { postgres: url } });
    runtimes.push(rt);
    return rt;
  };
}

/** The error `fn` throws (fails if it throws nothing). */
export function thrown(fn: () => unknown): { code?: string; message: string } {
  try {
    fn();
  } catch (error) {
    return error as { code?: string; message: string };
  }
  throw new Error('expected a throw');
}
