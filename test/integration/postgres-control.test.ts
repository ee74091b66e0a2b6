/**
 * Freeze, kill and unfreeze for the whole cluster on PostgreSQL (issue #15): while frozen no node
 * claims, running attempts still settle and submits still go in; a freeze waits for a claim in
 * flight, so no task starts after it; each change is one event in the log. A kill is a freeze
 * marked killed, written even when frozen already, with a NOTIFY naming no task.
 */
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { clusterControl, freezeCluster, KILL_PAYLOAD, killCluster, runningAttempts, unfreezeCluster } from '../../src/store/postgres/control.js';
import { CANCEL_CHANNEL } from '../../src/store/postgres/nodes.js';
import { readEvents } from '../../src/store/postgres/events.js';
import { claimTasks, submitTasks } from '../../src/store/postgres/queue.js';
import { settleAttempts } from '../../src/store/postgres/settle.js';
import { rejection, scratchClusters } from '../helpers.js';

const clusters = scratchClusters();
const LEASE = 60_000;
const tasks = (count: number, from = 0) => Array.from({ length: count }, (_, i) => ({ id: `t${String(from + i).padStart(3, '0')}`, agent: 'a' }));
const lockWaiters = async (pool: pg.Pool) =>
  (await pool.query<{ n: number }>("SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'")).rows[0]!.n;

describe('freezing the cluster on PostgreSQL', () => {
  it('claims nothing on any node while frozen; running attempts settle and submits go in; unfreeze resumes; each change is one event', async () => {
    const { pool, join, otherPool, follow } = await clusters();
    const log = follow();
    const nodes = [await join(), await join(), await join()];
    const pools = [pool, otherPool(), otherPool()];
    await submitTasks(pool, tasks(10));
    const [running] = await claimTasks(pool, nodes[0]!.id, 'a', 1, LEASE);
    expect(await freezeCluster(pool, 'maintenance')).toBe(true);
    expect(await clusterControl(pool)).toEqual({ frozen: true, killed: false, reason: 'maintenance', since: expect.any(Number) });
    // Frozen again: nothing changes, nothing is recorded.
    expect(await freezeCluster(otherPool(), 'again')).toBe(false);
    for (const [i, node] of nodes.entries()) expect(await claimTasks(pools[i]!, node.id, 'a', 10, LEASE)).toEqual([]);
    expect(await submitTasks(pool, tasks(2, 10))).toHaveLength(2);
    expect((await settleAttempts(pool, [{ taskId: running!.id, token: running!.token, exit: 'success' }])).settled).toHaveLength(1);
    expect((await pool.query("SELECT count(*)::int AS n FROM troupe_tasks WHERE state = 'running'")).rows[0].n).toBe(0);
    expect(await unfreezeCluster(pool)).toBe(true);
    expect(await unfreezeCluster(pool)).toBe(false);
    expect((await clusterControl(pool)).frozen).toBe(false);
    const claimed = await Promise.all(nodes.map((node, i) => claimTasks(pools[i]!, node.id, 'a', 4, LEASE)));
    expect(claimed.flat()).toHaveLength(11);
    await log.until((events) => events.filter((e) => e.type === 'task.started').length === 12);
    const controls = log.events.filter((e) => e.type.startsWith('runtime.'));
    expect(controls.map((e) => [e.type, e.data])).toEqual([
      ['runtime.frozen', { reason: 'maintenance', killed: false }],
      ['runtime.unfrozen', {}],
    ]);
    // The first start is before the freeze in the log, the others after the unfreeze.
    const order = log.events.filter((e) => e.type === 'task.started' || e.type.startsWith('runtime.')).map((e) => e.type);
    expect(order).toEqual(['task.started', 'runtime.frozen', 'runtime.unfrozen', ...Array(11).fill('task.started')]);
  });

  it.each([
    ['freeze', (pool: pg.Pool) => freezeCluster(pool, 'now')],
    ['kill', (pool: pg.Pool) => killCluster(pool, 'now').then(() => true)],
  ])('waits for a claim in flight, so that no task starts after the %s', async (_verb, stop) => {
    const { pool, url, join, otherPool } = await clusters();
    const node = await join();
    await submitTasks(pool, tasks(5));
    // The claim stops at its events' row, held by this lock, after it read that the cluster is not frozen.
    const holder = new pg.Client({ connectionString: url });
    await holder.connect();
    const resolved: string[] = [];
    try {
      await holder.query('BEGIN');
      await holder.query('LOCK TABLE troupe_event_batches IN SHARE ROW EXCLUSIVE MODE');
      const claim = claimTasks(otherPool(), node.id, 'a', 3, LEASE).then((claimed) => (resolved.push('claim'), claimed));
      while ((await lockWaiters(pool)) < 1);
      const freeze = stop(otherPool()).then((changed) => (resolved.push('freeze'), changed));
      // The freeze waits for the claim (a second backend waits), or it has wrongly committed already.
      while (resolved.length === 0 && (await lockWaiters(pool)) < 2);
      expect(resolved).toEqual([]);
      await holder.query('COMMIT');
      expect(await claim).toHaveLength(3);
      expect(await freeze).toBe(true);
      expect(resolved).toEqual(['claim', 'freeze']);
    } finally {
      await holder.end();
    }
    expect(await claimTasks(pool, node.id, 'a', 3, LEASE)).toEqual([]);
    const log = (await readEvents(pool, '')).filter((e) => e.type !== 'task.queued').map((e) => e.type);
    expect(log).toEqual(['task.started', 'task.started', 'task.started', 'runtime.frozen']);
  });

  it('rejects a reason that is not a string with INVALID_INPUT and writes nothing', async () => {
    const { pool } = await clusters();
    const dump = async () => [(await pool.query('SELECT * FROM troupe_control')).rows, (await pool.query('SELECT * FROM troupe_events')).rows];
    const before = await dump();
    expect(await rejection(freezeCluster(pool, 42 as never))).toMatchObject({ code: 'INVALID_INPUT' });
    expect(await rejection(killCluster(pool, 42 as never))).toMatchObject({ code: 'INVALID_INPUT' });
    expect(await dump()).toEqual(before);
  });

  it('kills: frozen and marked killed with runtime.frozen { killed: true } and a NOTIFY naming no task, even when frozen already; a freeze keeps the mark, an unfreeze clears it', async () => {
    const { pool, url, join } = await clusters();
    const listener = new pg.Client({ connectionString: url });
    await listener.connect();
    const heard: string[] = [];
    listener.on('notification', (message) => message.channel === CANCEL_CHANNEL && heard.push(message.payload ?? ''));
    await listener.query(`LISTEN ${CANCEL_CHANNEL}`);
    const hears = (n: number) => new Promise<void>((resolve) => listener.on('notification', () => heard.length >= n && resolve()));
    try {
      const node = await join();
      await submitTasks(pool, tasks(3));
      const claimed = await claimTasks(pool, node.id, 'a', 2, LEASE);
      expect((await runningAttempts(pool)).sort()).toEqual(claimed.map((c) => c.attemptId).sort());
      expect(await freezeCluster(pool, 'first')).toBe(true);
      const first = hears(1);
      await killCluster(pool, 'runaway');
      await first;
      expect(heard).toEqual([KILL_PAYLOAD]);
      expect(await clusterControl(pool)).toEqual({ frozen: true, killed: true, reason: 'runaway', since: expect.any(Number) });
      expect(await claimTasks(pool, node.id, 'a', 1, LEASE)).toEqual([]);
      // Frozen already: a freeze changes nothing, the kill's mark stays.
      expect(await freezeCluster(pool, 'again')).toBe(false);
      expect((await clusterControl(pool)).killed).toBe(true);
      const second = hears(2);
      await killCluster(pool);
      await second;
      expect(await clusterControl(pool)).toMatchObject({ frozen: true, killed: true, reason: 'killed' });
      expect(await unfreezeCluster(pool)).toBe(true);
      expect(await clusterControl(pool)).toEqual({ frozen: false, killed: false, since: expect.any(Number) });
      expect(await freezeCluster(pool, 'plain')).toBe(true);
      expect(await clusterControl(pool)).toMatchObject({ frozen: true, killed: false });
      const controls = (await readEvents(pool, '')).filter((e) => e.type.startsWith('runtime.')).map((e) => [e.type, e.data]);
      expect(controls).toEqual([
        ['runtime.frozen', { reason: 'first', killed: false }],
        ['runtime.frozen', { reason: 'runaway', killed: true }],
        ['runtime.frozen', { reason: 'killed', killed: true }],
        ['runtime.unfrozen', {}],
        ['runtime.frozen', { reason: 'plain', killed: false }],
      ]);
    } finally {
      await listener.end();
    }
  });
});
