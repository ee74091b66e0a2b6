/**
 * Cluster nodes killed with -9 mid-work (issue #15): a node in a child process runs the record
 * agent beside a node in this process, and is killed while it holds attempts, again and again,
 * a new child each time. The node here takes the dead nodes' attempts back (its sweeper) and runs
 * what is left. Then: every task is terminal, each run settled once, no task went over its
 * attempt budget, every attempt the agent made is a stored one, and the killed nodes' attempts
 * that had not finished ended as crashed.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { submitTasks } from '../../src/store/postgres/queue.js';
import { fixtureAgent, scratchDirs, scratchPools } from '../helpers.js';
import { attemptsByTask, clusterNodes, count, expectAttemptsOfOneRun, nodeProcesses, storedAttempts, until } from '../cluster.js';

const pools = scratchPools();
const nodes = clusterNodes();
const dirs = scratchDirs();
const startChild = nodeProcesses();

/** Tasks submitted at a time, whenever fewer than half as many are queued. */
const TOP_UP = 100;
/** Every fourth task may run once only, so a crash spends its whole budget and drops it. */
const maxAttempts = (i: number) => (i % 4 === 0 ? 1 : 4);
const KILLS = 5;
const CHILD_SLOTS = 3;

describe('cluster nodes killed with -9', () => {
  it('leave no task lost, run twice or over budget; another node takes their attempts back as crashed', async () => {
    const { url, pool } = await pools({ max: 4 });
    const file = join(dirs(), 'attempts');
    let submitted = 0;
    /** Tops the queue up so each new child finds work, however fast the node here drained it (a slow machine's start-ups). */
    const topUp = async () => {
      if ((await count(pool, "SELECT count(*) FROM troupe_tasks WHERE state = 'queued'")) >= TOP_UP / 2) return;
      const from = submitted;
      submitted += TOP_UP;
      await submitTasks(pool, Array.from({ length: TOP_UP }, (_, k) => ({ id: `t${String(from + k).padStart(4, '0')}`, agent: 'record', input: { file, sleepMs: 40 }, maxAttempts: maxAttempts(from + k) })));
    };
    await topUp();
    const here = await nodes({ connectionString: url, agents: [{ name: 'record', module: fixtureAgent('record') }], threads: 1, slotsPerThread: 2, pollMs: 20, sweepMs: 50 });

    const killed: string[] = [];
    for (let k = 0; k < KILLS; k++) {
      await topUp();
      const child = await startChild(url, 'record', CHILD_SLOTS);
      // Mid-work: it has finished an attempt and holds others. Topped up while waiting too: on a
      // loaded machine the node here could drain the queue while the child was still starting.
      await until(
        async () =>
          (await topUp(), true) &&
          (await count(pool, "SELECT count(*) FROM troupe_attempts WHERE node = $1 AND exit = 'success'", [child.id])) > 0 &&
          (await count(pool, "SELECT count(*) FROM troupe_tasks WHERE state = 'running' AND owner_node = $1", [child.id])) > 0,
        `child ${k} at work`,
      );
      await child.kill();
      killed.push(child.id);
      // Taken back: nothing of it runs any more, and it is gone from the cluster.
      await until(
        async () => (await count(pool, "SELECT count(*) FROM troupe_tasks WHERE state = 'running' AND owner_node = $1", [child.id])) === 0 && (await count(pool, 'SELECT count(*) FROM troupe_nodes WHERE id::text = $1', [child.id])) === 0,
        `child ${k}'s attempts taken back`,
        10_000,
      );
    }
    await until(async () => (await count(pool, "SELECT count(*) FROM troupe_tasks WHERE state NOT IN ('done', 'failed', 'dropped', 'cancelled')")) === 0, 'every task terminal');
    await until(async () => here.held === 0, 'the last settles');

    // Every task terminal: done, or dropped once every one of its attempts crashed.
    const tasks = (await pool.query<{ id: string; state: string; attempts: number; attempt_seq: number; max_attempts: number }>('SELECT id, state, attempts, attempt_seq, max_attempts FROM troupe_tasks ORDER BY id')).rows;
    expect(tasks).toHaveLength(submitted);
    const attempts = await storedAttempts(pool);
    expect(attempts.filter((a) => !a.ended || a.exit === null)).toEqual([]);
    const byTask = attemptsByTask(attempts);
    for (const task of tasks) {
      const rows = byTask.get(task.id) ?? [];
      // Every attempt stored, numbered 1..n in one run; within the budget.
      expectAttemptsOfOneRun(task, rows);
      // Settled once: one success at most, and it is the last attempt; every other ended taken back or interrupted.
      const exits = rows.map((r) => r.exit);
      if (task.state === 'done') expect(exits).toEqual([...exits.slice(0, -1).map(() => expect.stringMatching(/^(crashed|interrupted)$/)), 'success']);
      else expect({ id: task.id, state: task.state, exits }).toEqual({ id: task.id, state: 'dropped', exits: Array(task.max_attempts).fill('crashed') });
    }

    // Every attempt the agent made (its own lines) is a stored one, and each ran once; each success ran.
    const lines = readFileSync(file, 'utf8').split('\n').filter((l) => /^t\d{4} t\d{4}:\d+ \d+$/.test(l));
    expect(new Set(lines).size).toBe(lines.length);
    const stored = new Set(attempts.map((a) => `${a.task_id} ${a.task_id}:${a.run} ${a.attempt}`));
    expect(lines.filter((l) => !stored.has(l))).toEqual([]);
    for (const a of attempts.filter((r) => r.exit === 'success')) expect(lines).toContain(`${a.task_id} ${a.task_id}:${a.run} ${a.attempt}`);

    // Reclaim happened: each killed node's unfinished attempts ended as crashed (PROCESS_CRASHED), and it left the cluster.
    // (A node seen holding work may still settle it before the kill lands, a settle already sent
    // commits: so crashes are required over all the kills, not of each one.)
    const crashedOfKilled = attempts.filter((a) => killed.includes(a.node) && a.exit === 'crashed');
    expect(crashedOfKilled.length).toBeGreaterThan(0);
    for (const id of killed) {
      const mine = attempts.filter((a) => a.node === id);
      expect(mine.filter((a) => a.exit !== 'success' && a.exit !== 'crashed')).toEqual([]);
      for (const a of mine.filter((a) => a.exit === 'crashed')) expect(a.code).toBe('PROCESS_CRASHED');
    }
    expect((await pool.query('SELECT id::text AS id FROM troupe_nodes')).rows).toEqual([{ id: here.id }]);
    const inState = (state: string) => tasks.filter((t) => t.state === state).length;
    console.log(`${KILLS} kills: ${attempts.filter((a) => a.exit === 'crashed').length} attempts crashed and taken back; ${inState('done')} tasks done, ${inState('dropped')} dropped`);
  }, 120_000);
});
