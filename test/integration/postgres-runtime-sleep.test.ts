/**
 * Sleeping tasks on PostgreSQL: an agent's `{ kind: 'sleep', wakeAfterMs, followUp }` leaves its
 * task `sleeping` until the wake on the database's clock, then any node wakes it into a new run
 * whose attempts see the follow-up, as on LMDB (contract-flow.ts, on both stores). A sleeping
 * task can be cancelled at once, and a retry of it starts without the follow-up.
 */
import type pg from 'pg';
import { describe, expect, it } from 'vitest';
import { builtinAgent } from 'troupe';
import { fixtureAgent, rejection, scratchPools } from '../helpers.js';
import { pgRuntimes } from '../pg-runtime.js';
import { nextEvent as next } from './contract.js';
import { settleAttempts } from '../../src/store/postgres/settle.js';

const pools = scratchPools();
const runtime = pgRuntimes();
const agents = [{ name: 'int', module: fixtureAgent('interactive') }, builtinAgent('echo')];

const row = async (pool: pg.Pool, id: string) => (await pool.query('SELECT state, run, attempts, follow_up, result FROM troupe_tasks WHERE id = $1', [id])).rows[0];

describe('a sleeping task on PostgreSQL', () => {
  it('shows a sleeping task with its wake; cancels it at once; a retry starts without the followUp', async () => {
    const { url, pool } = await pools({ max: 2 });
    const rt = await runtime(url, { agents });
    const task = await rt.submit({ agent: 'int', input: { mode: 'sleeper', ms: 600_000 } });
    const slept = await next(rt, 'task.sleeping', task.id);
    const asleep = await rt.get(task.id);
    expect(asleep).toMatchObject({ state: 'sleeping', runs: 1, runAt: (slept.data as { wakeAt: number }).wakeAt, result: { kind: 'sleep', summary: 'napping' } });
    expect(asleep.runAt! - asleep.updatedAt).toBeGreaterThan(590_000);
    expect(await row(pool, task.id)).toMatchObject({ state: 'sleeping', follow_up: { step: 2 } });

    const cancelled = next(rt, 'task.cancelled', task.id);
    expect(await rt.cancel(task.id, 'no more naps')).toMatchObject({ state: 'cancelled', reason: 'no more naps' });
    expect((await cancelled).data).toMatchObject({ run: 1, from: 'sleeping', reason: 'no more naps' });
    expect(await rt.cancel(task.id)).toMatchObject({ state: 'cancelled' });

    // A new run from the start: no followUp, so it sleeps again (and is cancelled again).
    const sleepsAgain = next(rt, 'task.sleeping', task.id);
    await rt.retry(task.id);
    expect((await sleepsAgain).data).toMatchObject({ run: 2 });
    expect(await row(pool, task.id)).toMatchObject({ state: 'sleeping', run: 2, follow_up: { step: 2 } });
    await rt.cancel(task.id);
  });

  it('is woken by another runtime when the one it slept on has closed', async () => {
    const { url } = await pools({ max: 2 });
    const first = await runtime(url, { agents });
    const task = await first.submit({ agent: 'int', input: { mode: 'sleeper', ms: 300 } });
    await next(first, 'task.sleeping', task.id);
    await first.close();
    const second = await runtime(url, { agents });
    expect(await second.wait(task.id, { timeoutMs: 20_000 })).toMatchObject({ state: 'done', runs: 2, output: { wokeWith: { step: 2 } } });
  });

  it('refuses a malformed sleep in a settle before anything is written', async () => {
    const { pool } = await pools({ max: 2 });
    const cases: Array<[unknown, string]> = [
      [{ taskId: 't', token: 1, exit: 'fail', sleep: { wakeAfterMs: 5 } }, 'only a success exit can sleep'],
      [{ taskId: 't', token: 1, exit: 'success', sleep: { wakeAfterMs: -1 } }, 'wakeAfterMs'],
      [{ taskId: 't', token: 1, exit: 'success', sleep: { wakeAfterMs: 1.5 } }, 'wakeAfterMs'],
      [{ taskId: 't', token: 1, exit: 'success', sleep: { wakeAfterMs: 5, followUp: { at: 1n } } }, 'sleep.followUp'],
    ];
    for (const [end, names] of cases) expect(await rejection(settleAttempts(pool, [end as never])), names).toMatchObject({ code: 'INVALID_INPUT', message: expect.stringContaining(names) });
  });
});
