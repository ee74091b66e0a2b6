/**
 * How a cluster node stops (issue #15): closing interrupts what still runs after the deadline, so
 * its tasks are requeued with their attempt budget intact, and leaves the cluster; a node that
 * loses its liveness connection stops claiming and aborts its attempts.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type pg from 'pg';
import { describe, expect, it } from 'vitest';
import { anyRunnable, claimTasks, submitTasks } from '../../src/store/postgres/queue.js';
import { fixtureAgent, scratchDirs, scratchPools } from '../helpers.js';
import { clusterNodes, count, until } from '../cluster.js';

const pools = scratchPools();
const nodes = clusterNodes();
const dirs = scratchDirs();

const running = (pool: pg.Pool) => count(pool, "SELECT count(*) FROM troupe_tasks WHERE state = 'running'");

describe('a cluster node that stops', () => {
  it('on close, interrupts attempts still running at the deadline: requeued without spending their budget', async () => {
    const { url, pool } = await pools({ max: 4 });
    const file = join(dirs(), 'attempts');
    // polite waits for its abort and then throws a non-retryable error; record (60 s) ignores the abort.
    await submitTasks(pool, [
      { id: 'p1', agent: 'polite', input: null, maxAttempts: 1 },
      { id: 'r1', agent: 'record', input: { file, sleepMs: 60_000 }, maxAttempts: 1 },
      { id: 'r2', agent: 'record', input: { file, sleepMs: 60_000 }, maxAttempts: 1 },
      { id: 'r3', agent: 'record', input: { file, sleepMs: 60_000 }, maxAttempts: 1 },
    ]);
    const node = await nodes({
      connectionString: url,
      agents: [{ name: 'polite', module: fixtureAgent('polite') }, { name: 'record', module: fixtureAgent('record') }],
      threads: 1,
      slotsPerThread: 3,
      pollMs: 20,
      cancelGraceMs: 200,
    });
    // Three slots: three attempts run (the record ones have written their line), one task waits.
    await until(async () => (await running(pool)) === 3 && existsSync(file) && readFileSync(file, 'utf8').split('\n').filter(Boolean).length >= 2, 'three attempts under way');
    const closing = node.close({ timeoutMs: 100 });
    expect(node.close()).toBe(closing);
    await closing;
    expect(node.state).toBe('closed');
    expect(node.held).toBe(0);

    const tasks = (await pool.query("SELECT id, state, attempts, attempt_seq, owner_node FROM troupe_tasks ORDER BY id")).rows;
    expect(tasks.every((t) => t.state === 'queued' && t.attempts === 0 && t.owner_node === null)).toBe(true);
    const attempts = (await pool.query('SELECT task_id, exit, ended_at IS NOT NULL AS ended FROM troupe_attempts ORDER BY task_id')).rows;
    expect(attempts).toHaveLength(3);
    for (const a of attempts) expect(a).toEqual({ task_id: a.task_id, exit: 'interrupted', ended: true });
    // It left the cluster; what it ran can be claimed again, with its whole budget of one attempt.
    expect(await count(pool, 'SELECT count(*) FROM troupe_nodes')).toBe(0);
    // A backend leaves pg_stat_activity a moment after its client disconnected.
    await until(async () => (await count(pool, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name LIKE 'troupe-node%'")) === 0, 'its connections closed', 5_000);
    await pool.query("UPDATE troupe_tasks SET input = jsonb_set(input, '{sleepMs}', '1') WHERE agent = 'record'");
    await nodes({ connectionString: url, agents: [{ name: 'record', module: fixtureAgent('record') }], threads: 1, slotsPerThread: 1, pollMs: 20 });
    await until(async () => (await count(pool, "SELECT count(*) FROM troupe_tasks WHERE agent = 'record' AND state = 'done' AND attempts = 1")) === 3, 'the interrupted tasks run again');
  }, 30_000);

  it('stops a graceful close\'s wait at a forced close, as the runtime does', async () => {
    const { url, pool } = await pools({ max: 4 });
    // progress reports until aborted: a graceful close of 10 minutes would wait for it that long.
    await submitTasks(pool, [{ id: 'p1', agent: 'progress', input: null, maxAttempts: 1 }]);
    const node = await nodes({ connectionString: url, agents: [{ name: 'progress', module: fixtureAgent('progress') }], threads: 1, slotsPerThread: 1, pollMs: 20, cancelGraceMs: 200 });
    // A report stored: the node has heard the attempt run on its thread (a close stops one still queued there at once).
    await until(async () => (await count(pool, "SELECT count(*) FROM troupe_tasks WHERE id = 'p1' AND progress IS NOT NULL")) === 1, 'the attempt running');
    const graceful = node.close({ timeoutMs: 600_000 });
    expect(node.state).toBe('draining');
    // The node's close is under way: a forced call ends its wait rather than starting another close.
    expect(node.close({ force: true })).toBe(graceful);
    await graceful;
    expect(node.state).toBe('closed');
    expect((await pool.query("SELECT state, attempts FROM troupe_tasks WHERE id = 'p1'")).rows).toEqual([{ state: 'queued', attempts: 0 }]);
  }, 20_000);

  it('that loses its liveness connection stops claiming and aborts its attempts', async () => {
    const { url, pool } = await pools({ max: 4 });
    await submitTasks(pool, [{ id: 'p1', agent: 'polite', input: null }, { id: 'p2', agent: 'polite', input: null }]);
    let lostAt: number | undefined;
    const claimsAfterLoss: string[] = [];
    let told!: (error: Error) => void;
    const lost = new Promise<Error>((resolve) => (told = resolve));
    const node = await nodes({
      connectionString: url,
      agents: [{ name: 'polite', module: fixtureAgent('polite') }],
      threads: 1,
      slotsPerThread: 2,
      pollMs: 20,
      onLost: (error) => {
        lostAt = performance.now();
        told(error);
      },
      queue: {
        claim: (db, id, agent, n, leaseMs) => {
          if (lostAt !== undefined) claimsAfterLoss.push(agent);
          return claimTasks(db, id, agent, n, leaseMs);
        },
        // A poll looks before it claims: a node that stopped claiming does not look either.
        runnable: (db, id, agents) => {
          if (lostAt !== undefined) claimsAfterLoss.push(`look:${agents.join(',')}`);
          return anyRunnable(db, id, agents);
        },
      },
    });
    await until(async () => (await running(pool)) === 2, 'both attempts under way');
    // Another session ends the node's liveness connection, as a partition or a server restart would.
    await pool.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'troupe-node' AND datname = current_database()");
    expect(await lost).toBeInstanceOf(Error);
    expect(node.lost).toBe(true);
    // Its attempts end (aborted, or taken back by a sweeper that found the node dead), and their tasks are queued again.
    await until(async () => node.held === 0 && (await count(pool, "SELECT count(*) FROM troupe_tasks WHERE state = 'queued'")) === 2, 'the attempts ended and requeued');
    const exits = (await pool.query('SELECT exit FROM troupe_attempts WHERE ended_at IS NOT NULL')).rows.map((r) => r.exit);
    expect(exits).toHaveLength(2);
    for (const exit of exits) expect(['interrupted', 'crashed']).toContain(exit);
    // Its slots came free with the tasks queued, and it claimed nothing.
    expect(claimsAfterLoss).toEqual([]);
    expect(await count(pool, 'SELECT count(*) FROM troupe_attempts')).toBe(2);
  }, 30_000);
});
