/**
 * A cluster node's settle batches (src/cluster/settler.ts), against a fake queue: a batch the
 * server refuses for what one end holds is split until that end is alone and refused, the rest
 * settling; a batch that fails for a lost connection is tried again, whole, after the wait.
 */
import { describe, expect, it } from 'vitest';
import { Settler, type SettleOutcome } from '../../src/cluster/settler.js';
import { ManualClock } from '../../src/clock.js';
import { TroupeError } from '../../src/errors.js';
import type { AttemptEnd } from '../../src/store/postgres/settle.js';
import { capturedLog } from '../log-capture.js';

/** Lets the settle loop run until nothing it started is pending. */
const turns = async (n = 50) => {
  for (let i = 0; i < n; i++) await new Promise((resolve) => setImmediate(resolve));
};

const end = (taskId: string): AttemptEnd => ({ taskId, token: 1, exit: 'success' });

/** STORE_FAILED as settleAttempts throws it, with node-postgres's error (its SQLSTATE) as the cause. */
const storeFailed = (code: string | undefined) => new TroupeError('STORE_FAILED', 'settling attempts failed', { cause: Object.assign(new Error('server said no'), code ? { code } : {}) });

function settler(fails: (ids: string[], call: number) => Error | undefined) {
  const clock = new ManualClock();
  const batches: string[][] = [];
  const queue = {
    settle: async (_pool: unknown, ends: readonly AttemptEnd[]) => {
      const ids = ends.map((e) => e.taskId);
      batches.push(ids);
      const error = fails(ids, batches.length);
      if (error) throw error;
      return { settled: ends.map((e) => ({ taskId: e.taskId, token: e.token, state: 'done' as const })), stale: [] };
    },
  };
  const s = new Settler({} as never, queue as never, capturedLog('error').log, clock, 1_000, 1);
  const outcomes = new Map<string, SettleOutcome>();
  const add = (...ids: string[]) => ids.forEach((id) => s.add(end(id), (outcome) => outcomes.set(id, outcome)));
  return { clock, batches, outcomes, add, settler: s };
}

describe('settle batches', () => {
  it('splits a batch the server refuses for its content until the end it cannot take is alone, refuses that end, and settles the rest', async () => {
    const ids = Array.from({ length: 10 }, (_, i) => `t${i}`);
    // The server cannot take t6 (a data exception), whatever it is settled with.
    const h = settler((batch) => (batch.includes('t6') ? storeFailed('22P05') : undefined));
    h.add(...ids);
    await turns();
    expect(h.outcomes.get('t6')).toEqual({ refused: expect.objectContaining({ code: 'STORE_FAILED' }) });
    for (const id of ids.filter((id) => id !== 't6')) expect(h.outcomes.get(id)).toEqual({ state: 'done' });
    // 10 → 5 → 3 → 2 → 1 for the half that holds t6; each end settled once.
    expect(h.batches.filter((b) => b.includes('t6')).map((b) => b.length)).toEqual([10, 5, 3, 2, 1]);
    const settledIn = (id: string) => h.batches.filter((b) => !b.includes('t6') && b.includes(id)).length;
    for (const id of ids.filter((id) => id !== 't6')) expect(settledIn(id)).toBe(1);
    await h.settler.idle();
    // Once the queue drained, a batch takes every end again.
    h.add('u1', 'u2', 'u3');
    await turns();
    expect(h.batches.at(-1)).toEqual(['u1', 'u2', 'u3']);
  });

  it('tries a batch that failed for a lost connection again, whole, after the wait', async () => {
    const h = settler((_, call) => (call === 1 ? storeFailed('08006') : undefined));
    h.add('a', 'b', 'c');
    await turns();
    expect(h.batches).toEqual([['a', 'b', 'c']]);
    expect(h.outcomes.size).toBe(0);
    h.clock.advance(1_000);
    await turns();
    expect(h.batches).toEqual([['a', 'b', 'c'], ['a', 'b', 'c']]);
    expect([...h.outcomes.values()]).toEqual([{ state: 'done' }, { state: 'done' }, { state: 'done' }]);
  });

  it('tries again, whole, a batch that failed with no SQLSTATE at all (the connection was lost before an answer)', async () => {
    const h = settler((_, call) => (call === 1 ? storeFailed(undefined) : undefined));
    h.add('a', 'b');
    await turns();
    h.clock.advance(1_000);
    await turns();
    expect(h.batches).toEqual([['a', 'b'], ['a', 'b']]);
    expect(h.outcomes.get('a')).toEqual({ state: 'done' });
  });
});
