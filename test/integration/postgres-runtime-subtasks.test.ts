/**
 * Subtasks across a PostgreSQL cluster (schema version 16): children settled by another runtime
 * wake the parent parked in a join on the first (the settle's NOTIFY, not the poll: leases are
 * long here, so the poll behind it would come too late for the test); a parent whose node closes
 * (force) while it waits keeps waiting with no attempt, and once its children are done it resumes
 * with a new run on another runtime, whose join returns at once. Only children's rows have a
 * `parent_id` and an entry in the children index. The shared cases run on both stores in
 * contract-subtasks.ts.
 */
import type pg from 'pg';
import { describe, expect, it } from 'vitest';
import { builtinAgent } from 'troupe';
import { fixtureAgent, scratchPools } from '../helpers.js';
import { pgRuntimes } from '../pg-runtime.js';
import { nextEvent as next } from './contract.js';

const pools = scratchPools();
const runtime = pgRuntimes();
const interactive = { name: 'int', module: fixtureAgent('interactive') };
const echoAgent = builtinAgent('echo');
/** Long enough that no lease renewal (a third of it), and so no poll of the joins, comes within a test. */
const LONG_LEASE_MS = 600_000;

const parentOf = async (pool: pg.Pool, id: string) => (await pool.query('SELECT parent_id FROM troupe_tasks WHERE id = $1', [id])).rows[0]?.parent_id as string | null;

describe('subtasks on PostgreSQL', () => {
  it('children settled on another runtime wake the parent parked on the first', async () => {
    const { url, pool } = await pools({ max: 2 });
    const first = await runtime(url, { agents: [interactive, echoAgent], leaseMs: LONG_LEASE_MS });
    const second = await runtime(url, { agents: [echoAgent], leaseMs: LONG_LEASE_MS });
    // Its children are due in an hour: nobody runs them; the second runtime settles them (a cancel).
    const parent = await first.submit({ agent: 'int', input: { mode: 'later', children: 2 } });
    const waiting = await next(first, 'task.waiting', parent.id);
    const ids = (waiting.data as { ids: string[] }).ids;
    expect(ids).toHaveLength(2);
    expect(await second.get(parent.id)).toMatchObject({ state: 'waiting', waitingFor: { kind: 'join', ids } });
    expect(await second.cancel(ids[0]!, 'not needed')).toMatchObject({ state: 'cancelled' });
    expect(await first.get(parent.id)).toMatchObject({ state: 'waiting' });
    expect(await second.cancel(ids[1]!, 'not needed')).toMatchObject({ state: 'cancelled' });
    expect(await first.wait(parent.id)).toMatchObject({
      state: 'done',
      runs: 1,
      attempts: 1,
      output: { ids, joined: ids.map((id) => ({ id, state: 'cancelled' })), run: `${parent.id}:1` },
    });
    // Only the children have a parent, and an entry in the children index.
    expect(await parentOf(pool, parent.id)).toBeNull();
    for (const id of ids) expect(await parentOf(pool, id)).toBe(parent.id);
    const { rows } = await pool.query("SELECT indexdef FROM pg_indexes WHERE indexname = 'troupe_tasks_children'");
    expect(rows[0].indexdef).toMatch(/WHERE \(parent_id IS NOT NULL\)/);
  });

  it('a child\'s settle wakes its parent at once (the settle statement\'s NOTIFY), with no poll behind it in the test\'s time', async () => {
    const { url } = await pools({ max: 2 });
    const rt = await runtime(url, { agents: [interactive, echoAgent], leaseMs: LONG_LEASE_MS });
    const parent = await rt.submit({ agent: 'int', input: { mode: 'spawnThenJoin' } });
    expect(await rt.wait(parent.id, { timeoutMs: 10_000 })).toMatchObject({ state: 'done', output: { joined: [{ state: 'done', output: 'c' }] } });
    expect((await rt.list({ parentId: parent.id })).tasks).toHaveLength(1);
  });

  it('a parent whose node closes (force) while it waits keeps waiting; once its children are done it resumes with a new run on another runtime', async () => {
    const { url, pool } = await pools({ max: 2 });
    const first = await runtime(url, { agents: [interactive, echoAgent], leaseMs: LONG_LEASE_MS });
    const parent = await first.submit({ agent: 'int', input: { mode: 'later', children: 2 } });
    const waiting = await next(first, 'task.waiting', parent.id);
    const ids = (waiting.data as { ids: string[] }).ids;
    const second = await runtime(url, { agents: [interactive, echoAgent], leaseMs: LONG_LEASE_MS });
    const detached = next(second, 'task.waiting', parent.id, (event) => (event.data as { detached?: boolean }).detached === true);
    await first.close({ force: true });
    expect((await detached).data).toMatchObject({ run: 1, attempt: 1, exit: 'interrupted', for: 'join', detached: true });
    expect(await second.get(parent.id)).toMatchObject({ state: 'waiting', runs: 1, attempts: 0, waitingFor: { kind: 'join', ids } });
    expect((await pool.query('SELECT owner_node FROM troupe_tasks WHERE id = $1', [parent.id])).rows[0].owner_node).toBeNull();
    // One child settles: the parent still waits. The last one resumes it with a new run.
    await second.cancel(ids[0]!);
    expect(await second.get(parent.id)).toMatchObject({ state: 'waiting', runs: 1 });
    const resumed = next(second, 'task.queued', parent.id);
    await second.cancel(ids[1]!);
    expect((await resumed).data).toEqual({ run: 2, reason: 'resume' });
    // The new run's spawns find the same children (keyed per parent), and its join returns at once.
    expect(await second.wait(parent.id)).toMatchObject({ state: 'done', runs: 2, attempts: 1, output: { ids, joined: ids.map((id) => ({ id, state: 'cancelled' })), run: `${parent.id}:2` } });
    expect((await second.list({ parentId: parent.id })).tasks.map((t) => t.id)).toEqual([...ids].sort());
  });
});
