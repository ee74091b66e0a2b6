/**
 * The `store` option and `TROUPE_STORE`: a PostgreSQL connection string picks the runtime on
 * PostgreSQL; anything else is INVALID_OPTIONS naming where it came from (never echoing it: it
 * may hold a password); options the PostgreSQL runtime cannot honour are refused when given.
 */
import { describe, expect, it } from 'vitest';
import { TroupeError } from '../../src/errors.js';
import { resolveOptions, type RuntimeOptions } from '../../src/options.js';

const URL = 'postgres://app:secret@127.0.0.1:5432/app';

function invalid(options: unknown, env: Record<string, string> = {}): TroupeError {
  try {
    resolveOptions(options as RuntimeOptions, env);
  } catch (error) {
    expect(error).toBeInstanceOf(TroupeError);
    expect((error as TroupeError).code).toBe('INVALID_OPTIONS');
    expect((error as TroupeError).message).not.toContain('secret');
    return error as TroupeError;
  }
  throw new Error('expected INVALID_OPTIONS');
}

describe('options.store', () => {
  it('is null (LMDB) when neither the option nor TROUPE_STORE is given', () => {
    expect(resolveOptions({}, {}).store).toBeNull();
    expect(resolveOptions({}, { TROUPE_STORE: '' }).store).toBeNull();
  });

  it('takes a postgres:// or postgresql:// connection string, and keeps it as given', () => {
    expect(resolveOptions({ store: { postgres: URL } }, {}).store).toEqual({ postgres: URL });
    expect(resolveOptions({ store: { postgres: 'postgresql://127.0.0.1/app' } }, {}).store).toEqual({ postgres: 'postgresql://127.0.0.1/app' });
    expect(Object.isFrozen(resolveOptions({ store: { postgres: URL } }, {}).store)).toBe(true);
  });

  it('refuses anything else, naming store.postgres', () => {
    expect(invalid({ store: { postgres: 5 } }).message).toMatch(/^options\.store\.postgres must be a PostgreSQL connection string/);
    expect(invalid({ store: { postgres: '' } }).message).toMatch(/^options\.store\.postgres /);
    expect(invalid({ store: { postgres: 'not a url :secret' } }).message).toMatch(/^options\.store\.postgres is not a URL/);
    expect(invalid({ store: { postgres: 'mysql://app:secret@host/app' } }).message).toBe('options.store.postgres must be a postgres:// or postgresql:// URL, not mysql:');
    expect(invalid({ store: 'postgres://x' }).message).toBe('options.store must be { postgres: connectionString }');
    expect(invalid({ store: null }).message).toBe('options.store must be { postgres: connectionString }');
    expect(invalid({ store: { postgres: URL, redis: 'x' } }).message).toBe('options.store.redis is not a store option (postgres)');
  });

  it('reads TROUPE_STORE when the option is absent; the option wins over it', () => {
    expect(resolveOptions({}, { TROUPE_STORE: URL }).store).toEqual({ postgres: URL });
    expect(resolveOptions({ store: { postgres: 'postgres://other/db' } }, { TROUPE_STORE: URL }).store).toEqual({ postgres: 'postgres://other/db' });
    expect(invalid({}, { TROUPE_STORE: 'file:///tmp/x' }).message).toBe('the environment variable TROUPE_STORE must be a postgres:// or postgresql:// URL, not file:');
  });

  it('ignores dataDir on PostgreSQL, and refuses the options it cannot honour yet when they are on', () => {
    expect(resolveOptions({ store: { postgres: URL }, dataDir: './elsewhere', threads: 2, prefetch: 0, leaseMs: 5_000 }, {})).toMatchObject({ threads: 2, prefetch: 0, leaseMs: 5_000 });
    // Off is not a request: a switch of store keeps working with these.
    expect(resolveOptions({ store: { postgres: URL }, dashboard: false, metricsPort: 0, retention: false, starvation: false, defaultBackoff: false }, {}).store).toEqual({ postgres: URL });
    // The dashboard is served on PostgreSQL, with the same options as on LMDB.
    expect(resolveOptions({ store: { postgres: URL }, dashboard: { port: 0, token: 'a-token-of-sixteen-chars' } }, {}).dashboard).toEqual(resolveOptions({ dashboard: { port: 0, token: 'a-token-of-sixteen-chars' } }, {}).dashboard);
    expect(invalid({ store: { postgres: URL }, dashboard: { port: -1 } }).message).toBe(invalid({ dashboard: { port: -1 } }).message);
    // `/metrics` is served on PostgreSQL, with the same checks as on LMDB.
    expect(resolveOptions({ store: { postgres: URL }, metricsPort: 9100 }, {}).metricsPort).toBe(9100);
    expect(invalid({ store: { postgres: URL }, metricsPort: 70_000 }).message).toBe(invalid({ metricsPort: 70_000 }).message);
    for (const [key, value] of [['starvation', {}], ['failedAttemptThreshold', 3]] as const) {
      expect(invalid({ store: { postgres: URL }, [key]: value }).message).toBe(`options.${key} is not supported with store.postgres yet (README: "Running on many machines")`);
      expect(invalid({ [key]: value }, { TROUPE_STORE: URL }).message).toContain(`options.${key} is not supported with store.postgres`);
    }
    // maxQueued holds across the cluster (store/postgres/admission.ts): checked as on LMDB, and no limit unless given.
    expect(resolveOptions({ store: { postgres: URL }, maxQueued: 10 }, {}).maxQueued).toBe(10);
    expect(resolveOptions({ store: { postgres: URL } }, {}).maxQueued).toBe(Infinity);
    expect(resolveOptions({}, {}).maxQueued).toBe(100_000);
    expect(invalid({ store: { postgres: URL }, maxQueued: 0 }).message).toBe(invalid({ maxQueued: 0 }).message);
    // A fast-failure backoff holds across the cluster (store/postgres/backoff.ts): taken, checked as on LMDB.
    expect(resolveOptions({ store: { postgres: URL }, defaultBackoff: { pauseMs: 500 } }, {}).defaultBackoff).toEqual({ failures: 3, fastFailMs: 60_000, pauseMs: 500 });
    expect(invalid({ store: { postgres: URL }, defaultBackoff: { pauseMs: 0 } }).message).toBe(invalid({ defaultBackoff: { pauseMs: 0 } }).message);
  });

  it('takes retention on PostgreSQL as on LMDB (the defaults when absent, off with false), counts included', () => {
    const lmdb = resolveOptions({}, {}).retention;
    expect(resolveOptions({ store: { postgres: URL } }, {}).retention).toEqual(lmdb);
    expect(resolveOptions({ store: { postgres: URL }, retention: false }, {}).retention).toBeNull();
    const given = { done: 1_000, failed: { ageMs: 2_000 }, dropped: { ageMs: 3_000, count: Infinity }, cancelled: { count: 0 }, sweepMs: 50, eventsMs: 4_000 };
    expect(resolveOptions({ store: { postgres: URL }, retention: given }, {}).retention).toEqual(resolveOptions({ retention: given }, {}).retention);
    expect(resolveOptions({ retention: { done: { ageMs: 1_000, count: 10 } } }, { TROUPE_STORE: URL }).retention!.rules.done).toEqual({ ageMs: 1_000, count: 10 });
    // A bad rule is refused as on LMDB.
    expect(invalid({ store: { postgres: URL }, retention: { done: { count: -1 } } }).message).toBe(invalid({ retention: { done: { count: -1 } } }).message);
  });
});
