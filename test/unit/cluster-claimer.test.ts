/**
 * A cluster node's claim loop (src/cluster/claimer.ts), against fake claim and look verbs that
 * answer when told, on a clock the test moves: a wake claims at once; a poll looks first and
 * claims only when the look finds a due task; a wake during a poll's look is not lost; a look that
 * fails lets the claim try; a look that finds the node removed stops the loop and says so.
 */
import { describe, expect, it } from 'vitest';
import { Claimer } from '../../src/cluster/claimer.js';
import { ManualClock } from '../../src/clock.js';
import { TroupeError } from '../../src/errors.js';
import type { ClaimedTask } from '../../src/store/postgres/queue.js';
import { capturedLog } from '../log-capture.js';

/** Lets a turn pass: started calls reach the fakes, answered ones finish. */
const turn = () => new Promise((resolve) => setImmediate(resolve));

const task = (id: string) => ({ id }) as ClaimedTask;

function claimer({ free = 4 } = {}) {
  const clock = new ManualClock();
  const claims: Array<{ agent: string; n: number; answer(tasks?: ClaimedTask[]): void }> = [];
  const looks: Array<{ agents: readonly string[]; answer(runnable: boolean): void; fail(error: Error): void }> = [];
  const accepted: string[] = [];
  const refused: Error[] = [];
  const { log } = capturedLog('error');
  const queue = {
    claim: (_pool: unknown, _node: string, agent: string, n: number) => new Promise<ClaimedTask[]>((resolve) => claims.push({ agent, n, answer: (tasks = []) => resolve(tasks) })),
    runnable: (_pool: unknown, _node: string, agents: readonly string[]) => new Promise<boolean>((resolve, reject) => looks.push({ agents, answer: resolve, fail: reject })),
  };
  const c = new Claimer({
    pool: {} as never,
    queue: queue as never,
    node: '00000000-0000-4000-8000-000000000001',
    agents: () => ['a'],
    leaseMs: 30_000,
    pollMs: 250,
    clock,
    log,
    free: () => free - accepted.length,
    accept: (tasks) => accepted.push(...tasks.map((t) => t.id)),
    refused: (error) => refused.push(error),
  });
  /** A wake whose claim finds nothing, then the poll's timer: its look is under way. */
  const toFirstLook = async () => {
    c.wake();
    await turn();
    claims[0]!.answer([]);
    await turn();
    clock.advance(250);
    await turn();
  };
  return { c, clock, claims, looks, accepted, refused, toFirstLook };
}

describe('the claim loop', () => {
  it('claims at once on a wake, then polls with a look and claims only when the look finds a task', async () => {
    const { c, clock, claims, looks, accepted } = claimer();
    c.wake();
    await turn();
    expect(looks).toHaveLength(0);
    expect(claims.map((x) => [x.agent, x.n])).toEqual([['a', 4]]);
    claims[0]!.answer([]);
    await turn();
    // The queue had nothing: the poll is armed.
    expect(clock.pending).toBe(1);
    clock.advance(250);
    await turn();
    expect(looks.map((l) => l.agents)).toEqual([['a']]);
    looks[0]!.answer(false);
    await turn();
    // Nothing runnable: no claim, and the poll goes on.
    expect(claims).toHaveLength(1);
    expect(clock.pending).toBe(1);
    clock.advance(250);
    await turn();
    looks[1]!.answer(true);
    await turn();
    expect(claims).toHaveLength(2);
    claims[1]!.answer([task('t1')]);
    await turn();
    expect(accepted).toEqual(['t1']);
    await c.stop();
  });

  it('claims when a wake comes while a poll looks, whatever the look says', async () => {
    const { c, claims, looks, toFirstLook } = claimer();
    await toFirstLook();
    expect(looks).toHaveLength(1);
    c.wake();
    looks[0]!.answer(false);
    await turn();
    expect(claims).toHaveLength(2);
    claims[1]!.answer([]);
    await c.stop();
  });

  it('claims when the look fails, and stops when the look finds the node removed', async () => {
    const { c, clock, claims, looks, refused, toFirstLook } = claimer();
    await toFirstLook();
    looks[0]!.fail(new TroupeError('STORE_FAILED', 'looking for runnable tasks failed: connection reset'));
    await turn();
    // The claim tries (and its own failure, if any, is logged and polled again).
    expect(claims).toHaveLength(2);
    claims[1]!.answer([]);
    await turn();
    clock.advance(250);
    await turn();
    looks[1]!.fail(new TroupeError('ILLEGAL_STATE', 'node is not a member of the cluster'));
    await turn();
    expect(refused.map((e) => (e as TroupeError).code)).toEqual(['ILLEGAL_STATE']);
    expect(clock.pending).toBe(0);
    c.wake();
    await turn();
    expect(claims).toHaveLength(2);
    expect(looks).toHaveLength(2);
  });
});
