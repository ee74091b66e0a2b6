/**
 * `rt.kill()` on PostgreSQL, with the LMDB runtime's semantics (src/controls.ts): the whole cluster
 * freezes, every running attempt on every runtime (two in this process, one in a child process)
 * is aborted and ends interrupted, its task requeued without spending its attempt budget, and the
 * call resolves once no attempt runs anywhere; nothing starts until `unfreeze()`, then every task
 * settles done, once. Also: a kill while nothing runs (and a runtime that opens after it claims
 * nothing), a bad reason, and a node that missed the kill's NOTIFY stopping at its lease renewal.
 */
import type pg from 'pg';
import { describe, expect, it, vi } from 'vitest';
import { builtinAgent, type Runtime, type RuntimeEvent } from 'troupe';
import { fixtureAgent, rejection, scratchPools, started } from '../helpers.js';
import { nodeProcesses } from '../cluster.js';
import { pgRuntimes } from '../pg-runtime.js';

const pools = scratchPools();
const runtime = pgRuntimes();
const processes = nodeProcesses('runtime');

/** First attempts wait for an abort, later ones return at once; one attempt is the whole budget. */
const blocker = { name: 'blocker', module: fixtureAgent('blocker'), retry: { maxAttempts: 1 } };
const SETTLING = new Set(['task.done', 'task.failed', 'task.dropped', 'task.cancelled']);

const running = async (pool: pg.Pool) => Number((await pool.query("SELECT count(*) AS n FROM troupe_tasks WHERE state = 'running'")).rows[0].n);

/** Every event `rt` hears from now on, in log order; `until` resolves once `test` holds of them. */
function record(rt: Runtime): { events: RuntimeEvent[]; until(test: (events: readonly RuntimeEvent[]) => boolean): Promise<void> } {
  const events: RuntimeEvent[] = [];
  const waiters = new Set<() => void>();
  rt.on('*', (event) => {
    events.push(event);
    for (const check of waiters) check();
  });
  return {
    events,
    until: (test) =>
      new Promise((resolve) => {
        const check = () => {
          if (!test(events)) return;
          waiters.delete(check);
          resolve();
        };
        waiters.add(check);
        check();
      }),
  };
}

describe('rt.kill() on PostgreSQL', () => {
  it('stops the attempts of every runtime, requeues their tasks with their budget intact, starts nothing until unfreeze, then all settle done once', async () => {
    const { url, pool } = await pools({ max: 2 });
    // Leases of ten minutes: a renewal would not come within the test, so these runtimes stop on the kill's NOTIFY.
    const a = await runtime(url, { agents: [blocker], cancelGraceMs: 5_000, leaseMs: 600_000 });
    const b = await runtime(url, { agents: [blocker], cancelGraceMs: 5_000, leaseMs: 600_000 });
    const child = await processes(url, 'blocker', 2);
    const log = record(a);
    // Six first attempts on six slots: each runtime claims at most its two free slots.
    const tasks = await a.submitMany(Array.from({ length: 6 }, (_, i) => ({ agent: 'blocker', input: i })));
    await Promise.all(tasks.map((t) => started(a, t.id)));
    const owners = (await pool.query<{ owner_node: string; n: number }>("SELECT owner_node, count(*)::int AS n FROM troupe_tasks WHERE state = 'running' GROUP BY owner_node")).rows;
    expect(owners).toHaveLength(3);
    expect(owners.map((o) => o.n)).toEqual([2, 2, 2]);
    expect(owners.map((o) => o.owner_node)).toContain(child.id);

    await b.kill('runaway spend');
    // Resolved: no attempt runs anywhere, and every task is queued again with nothing spent.
    expect(await running(pool)).toBe(0);
    for (const t of tasks) expect(await a.get(t.id)).toMatchObject({ state: 'queued', attempts: 0, runs: 1 });
    const ends = (await pool.query<{ node: string; exit: string }>('SELECT node, exit FROM troupe_attempts')).rows;
    expect(ends.map((e) => e.exit)).toEqual(Array(6).fill('interrupted'));
    expect(new Set(ends.map((e) => e.node)).size).toBe(3);
    expect(b.stats()).toMatchObject({ frozen: true, freeze: { reason: 'runaway spend', killed: true }, attempts: { executing: 0 } });
    await vi.waitFor(() => expect(a.stats()).toMatchObject({ frozen: true, freeze: { reason: 'runaway spend', killed: true } }));
    await log.until((events) => events.filter((e) => e.type === 'task.queued' && e.data.reason === 'killed').length === 6);
    const killed = log.events.filter((e) => e.type === 'task.queued' && e.data.reason === 'killed');
    expect(killed.map((e) => e.data)).toEqual(Array(6).fill({ reason: 'killed', exit: 'interrupted', run: 1, attempt: 1, attemptMs: expect.any(Number) }));
    expect(log.events.find((e) => e.type === 'runtime.frozen')?.data).toEqual({ reason: 'runaway spend', killed: true });

    // Frozen: a poke claims nothing, on any runtime.
    a.poke();
    b.poke();
    expect(await rejection(a.wait(tasks[0]!.id, { timeoutMs: 300 }))).toMatchObject({ code: 'WAIT_TIMEOUT' });
    expect(await running(pool)).toBe(0);

    await a.unfreeze();
    for (const t of tasks) expect(await a.wait(t.id)).toMatchObject({ state: 'done', attempts: 1, runs: 1, output: { attempt: 2 } });
    await log.until((events) => events.filter((e) => e.type === 'task.done').length === 6);
    // In log order: every start after the kill comes after the unfreeze; each task settled once.
    const order = log.events.map((e) => e.type);
    const frozenAt = order.indexOf('runtime.frozen');
    const unfrozenAt = order.indexOf('runtime.unfrozen');
    expect(order.slice(frozenAt, unfrozenAt)).not.toContain('task.started');
    expect(order.slice(unfrozenAt).filter((type) => type === 'task.started')).toHaveLength(6);
    for (const t of tasks) expect(log.events.filter((e) => e.taskId === t.id && SETTLING.has(e.type)).map((e) => e.type)).toEqual(['task.done']);
    expect(a.stats()).toMatchObject({ frozen: false, freeze: null });
  });

  it('kills while nothing runs: resolves once frozen; a runtime opened after it claims nothing until unfreeze', async () => {
    const { url, pool } = await pools({ max: 2 });
    const operator = await runtime(url);
    const log = record(operator);
    await operator.kill();
    expect(operator.stats()).toMatchObject({ frozen: true, freeze: { reason: 'killed', killed: true } });
    await log.until((events) => events.some((e) => e.type === 'runtime.frozen'));
    expect(log.events.map((e) => [e.type, e.data])).toEqual([['runtime.frozen', { reason: 'killed', killed: true }]]);
    const later = await runtime(url, { agents: [builtinAgent('echo')] });
    const task = await later.submit({ agent: 'echo', input: 'held' });
    later.poke();
    expect(await rejection(later.wait(task.id, { timeoutMs: 300 }))).toMatchObject({ code: 'WAIT_TIMEOUT' });
    expect(await running(pool)).toBe(0);
    await operator.unfreeze();
    expect(await later.wait(task.id)).toMatchObject({ state: 'done', output: 'held', attempts: 1 });
  });

  it('rejects a reason that is not a string with INVALID_INPUT, and writes nothing', async () => {
    const { url, pool } = await pools({ max: 2 });
    const rt = await runtime(url);
    const dump = async () => [(await pool.query('SELECT frozen, killed, reason FROM troupe_control')).rows, (await pool.query('SELECT * FROM troupe_events')).rows];
    const before = await dump();
    expect(await rejection(rt.kill(42 as never))).toMatchObject({ code: 'INVALID_INPUT', message: 'kill: reason must be a string' });
    expect(await rejection(rt.kill({} as never))).toMatchObject({ code: 'INVALID_INPUT' });
    expect(await dump()).toEqual(before);
    expect(rt.stats().frozen).toBe(false);
    await rt.close();
    expect(await rejection(rt.kill('x'))).toMatchObject({ code: 'CLOSED' });
  });

  it('a node that missed the kill’s NOTIFY stops its attempts at its next lease renewal', async () => {
    const { url, pool } = await pools({ max: 2 });
    // Leases of 600 ms: renewed every 200 ms.
    const rt = await runtime(url, { agents: [blocker], leaseMs: 600, cancelGraceMs: 5_000 });
    const log = record(rt);
    const tasks = await rt.submitMany([{ agent: 'blocker' }, { agent: 'blocker' }]);
    await Promise.all(tasks.map((t) => started(rt, t.id)));
    // The control row as a kill leaves it, without its NOTIFY.
    await pool.query("UPDATE troupe_control SET frozen = true, killed = true, reason = 'quiet kill', since = now()");
    await log.until((events) => events.filter((e) => e.type === 'task.queued' && e.data.reason === 'killed').length === 2);
    expect(await running(pool)).toBe(0);
    for (const t of tasks) expect(await rt.get(t.id)).toMatchObject({ state: 'queued', attempts: 0 });
    await rt.unfreeze();
    for (const t of tasks) expect(await rt.wait(t.id)).toMatchObject({ state: 'done', attempts: 1 });
  });
});
