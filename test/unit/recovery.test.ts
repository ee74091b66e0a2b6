/**
 * The store recovery's schedule on a manual clock, with a host that records what it was asked:
 * the engine is stopped once, the data dir is opened again every `retryMs` until it opens, and the
 * runtime is back (calls pass again) once the host says so; a close ends the tries.
 */
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/clock.js';
import { TroupeError } from '../../src/errors.js';
import { StoreRecovery, type RecoveryHost } from '../../src/recovery.js';
import type { Store } from '../../src/store/port.js';

/** A host whose reopen fails `failing` times, then succeeds; every call is recorded in `calls`. */
function host(clock: ManualClock, failing: number) {
  const calls: string[] = [];
  let running = true;
  const fake: RecoveryHost = {
    clock,
    retryMs: 1_000,
    log: pino({ level: 'silent' }),
    running: () => running,
    stopEngine: async () => void calls.push('stop'),
    reopen: async () => {
      calls.push('reopen');
      if (failing-- > 0) throw new TroupeError('STORE_FAILED', 'still full');
      return {} as Store;
    },
    resume: async (_store, failure, back) => {
      calls.push(`resume after ${failure.retries}`);
      back();
    },
  };
  return { fake, calls, close: () => (running = false) };
}

const failure = new TroupeError('STORE_FAILED', 'the store stopped after a failed commit (ENOSPC)');

/** Lets the recovery's promise chain run (its host's calls are all resolved promises). */
const settle = () => new Promise<void>((resolve) => setImmediate(resolve));

describe('store recovery', () => {
  it('stops the engine once, tries every retryMs until the store opens, then is back', async () => {
    const clock = new ManualClock();
    const { fake, calls } = host(clock, 2);
    const recovery = new StoreRecovery(fake);
    expect(recovery.failure).toBeNull();
    recovery.failed(failure);
    expect(recovery.failure).toMatchObject({ message: failure.message, since: clock.now(), retries: 0 });
    // Calls still pass until the first try stops the engine.
    expect(recovery.down).toBeUndefined();
    await settle();
    expect(calls).toEqual([]);

    clock.advance(1_000);
    await settle();
    expect(calls).toEqual(['stop', 'reopen']);
    expect(recovery.down).toBe(failure);
    expect(recovery.failure).toMatchObject({ retries: 1, lastError: 'still full' });

    clock.advance(999);
    await settle();
    expect(calls).toHaveLength(2);
    clock.advance(1);
    await settle();
    expect(calls).toEqual(['stop', 'reopen', 'stop', 'reopen']);
    expect(recovery.failure?.retries).toBe(2);

    clock.advance(1_000);
    await settle();
    expect(calls.slice(4)).toEqual(['stop', 'reopen', 'resume after 3']);
    expect(recovery.failure).toBeNull();
    expect(recovery.down).toBeUndefined();
    expect(clock.pending).toBe(0);
  });

  it('starts over when the store fails again after it came back', async () => {
    const clock = new ManualClock();
    const { fake, calls } = host(clock, 0);
    const recovery = new StoreRecovery(fake);
    recovery.failed(failure);
    clock.advance(1_000);
    await settle();
    expect(recovery.failure).toBeNull();
    const again = new TroupeError('STORE_FAILED', 'full again');
    recovery.failed(again);
    expect(recovery.failure).toMatchObject({ message: 'full again', retries: 0 });
    clock.advance(1_000);
    await settle();
    expect(calls.filter((c) => c === 'reopen')).toHaveLength(2);
    expect(recovery.failure).toBeNull();
  });

  it('tries nothing more once the runtime closes', async () => {
    const clock = new ManualClock();
    const { fake, calls, close } = host(clock, 100);
    const recovery = new StoreRecovery(fake);
    recovery.failed(failure);
    clock.advance(1_000);
    await settle();
    expect(calls).toEqual(['stop', 'reopen']);
    close();
    await recovery.stop();
    expect(clock.pending).toBe(0);
    clock.advance(10_000);
    await settle();
    expect(calls).toEqual(['stop', 'reopen']);
  });
});
