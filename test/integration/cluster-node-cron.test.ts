/**
 * Cluster nodes fire the cluster's cron schedules (issue #15): each node calls fireDue when it
 * starts and every `fireMs`, each due tick becomes one task, run by a node like any other, and a
 * closed node fires nothing more.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type pg from 'pg';
import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/clock.js';
import { compileCron, tickIso } from '../../src/scheduler/cron.js';
import { readEvents } from '../../src/store/postgres/events.js';
import { fireDue, type FireResult } from '../../src/store/postgres/schedule-fire.js';
import { createSchedule } from '../../src/store/postgres/schedules.js';
import { fixtureAgent, scratchDirs, scratchPools } from '../helpers.js';
import { clusterNodes, count, until } from '../cluster.js';

const pools = scratchPools();
const nodes = clusterNodes();
const dirs = scratchDirs();

/** The database's clock passes for a schedule: its stored tick moves `seconds` into the past. */
const age = (pool: pg.Pool, id: string, seconds: number) => pool.query(`UPDATE troupe_schedules SET next_run_at = next_run_at - $2 * interval '1 second' WHERE id = $1`, [id, seconds]);

describe('cron on cluster nodes', () => {
  it("fires the due ticks when nodes start, once each, and a node runs each tick's task", async () => {
    const { url, pool } = await pools({ max: 4 });
    const file = join(dirs(), 'attempts');
    const created = await createSchedule(pool, { id: 'every-second', cron: '* * * * * *', task: { agent: 'record', input: { file } }, overlap: 'allow', catchUp: 'all' });
    // Three ticks are due before any node runs.
    await age(pool, 'every-second', 3);
    const first = created.nextRunAt - 3_000;
    const fires: FireResult[] = [];
    const fire = async (db: pg.Pool, node: string) => {
      const result = await fireDue(db, node);
      fires.push(result);
      return result;
    };
    // fireMs is long: only the fire each node makes as it starts can fire these ticks.
    const options = { connectionString: url, agents: [{ name: 'record', module: fixtureAgent('record') }], threads: 1, slotsPerThread: 2, pollMs: 20, fireMs: 600_000, queue: { fire } };
    const [a, b] = await Promise.all([nodes(options), nodes(options)]);
    await until(async () => fires.length >= 2, 'both nodes fired once');
    await until(async () => (await count(pool, "SELECT count(*) FROM troupe_tasks WHERE idempotency_key LIKE 'schedule:%' AND state <> 'done'")) === 0, 'the ticks run');

    // Every tick from the first due one up to the stored next one fired once, as one task.
    const next = await count(pool, "SELECT (extract(epoch FROM next_run_at) * 1000)::float8 FROM troupe_schedules WHERE id = 'every-second'");
    const ticks = compileCron('* * * * * *').between(first - 1, next - 1, 1_000);
    expect(ticks.length).toBeGreaterThanOrEqual(3);
    expect(fires.flatMap((f) => f.fired.map((t) => t.tick)).sort((x, y) => x - y)).toEqual(ticks);
    expect(fires.flatMap((f) => f.fired).filter((t) => !t.created)).toEqual([]);
    const tasks = (await pool.query<{ id: string; key: string; state: string; node: string }>(
      'SELECT t.id, t.idempotency_key AS key, t.state, a.node FROM troupe_tasks t JOIN troupe_attempts a ON a.task_id = t.id ORDER BY t.idempotency_key',
    )).rows;
    expect(tasks.map((t) => t.key)).toEqual(ticks.map((tick) => `schedule:every-second:${tickIso(tick)}`));
    for (const t of tasks) expect([a.id, b.id]).toContain(t.node);
    // The agent ran each tick's task once.
    const lines = readFileSync(file, 'utf8').split('\n').filter(Boolean);
    expect(lines.sort()).toEqual(tasks.map((t) => `${t.id} ${t.id}:1 1`).sort());
    // One schedule.fired per tick, naming its task.
    const events = (await readEvents(pool, '', 10_000)).filter((e) => e.type === 'schedule.fired');
    expect(events.map((e) => [(e.data as { tick: number }).tick, e.taskId]).sort((x, y) => (x[0] as number) - (y[0] as number))).toEqual(
      ticks.map((tick) => [tick, tasks.find((t) => t.key === `schedule:every-second:${tickIso(tick)}`)!.id]),
    );
  });

  it('fires every fireMs on its clock, and nothing more once closed', async () => {
    const { url, pool } = await pools({ max: 4 });
    const clock = new ManualClock();
    let calls = 0;
    let over = 0;
    const fire = async (db: pg.Pool, node: string) => {
      calls++;
      try {
        return await fireDue(db, node);
      } finally {
        over++;
      }
    };
    const node = await nodes({ connectionString: url, agents: [{ name: 'record', module: fixtureAgent('record') }], threads: 1, slotsPerThread: 1, fireMs: 1_000, clock, queue: { fire } });
    expect(calls).toBe(1);
    // The next fire is armed once the first is over.
    await until(async () => over === 1, 'the first fire over');
    await new Promise((resolve) => setImmediate(resolve));
    clock.advance(999);
    expect(calls).toBe(1);
    clock.advance(1);
    expect(calls).toBe(2);
    await node.close();
    clock.advance(10_000);
    expect(calls).toBe(2);
    expect(await count(pool, 'SELECT count(*) FROM troupe_nodes')).toBe(0);
  });
});
