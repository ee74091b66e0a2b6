/**
 * Chaos on a PostgreSQL cluster (issue #15, "Tests"): three runtime processes
 * (`createRuntime({ store: { postgres } })`, each registering the agent with its cluster-wide
 * `concurrency`) share one database, a few thousand short tasks of one agent whose `concurrency` holds cluster-wide, and a
 * cron schedule ticking every second. A random node at work is killed with -9 again and again (each
 * time a few hundred more tasks have settled) and a new one started in its place. Once everything
 * is terminal and the survivors have closed, the test checks what the issue lists: every task
 * terminal; each run settled once; attempts within budget; every attempt the agent recorded a
 * stored one, on the node that claimed it; each killed node's unfinished attempts ended crashed;
 * the agent's own timestamps never show more attempts at once than the limit, across processes;
 * each cron tick fired once; and the event log, read live during the chaos and again in pages
 * from its start, holds every event once, in strictly increasing cursors, telling each task's
 * story as its rows do.
 *
 * Clock domains: the agent stamps its start and end with `Date.now()`, and an attempt killed
 * before it stamped its end is taken as running until its attempt row's `ended_at` (the sweep's
 * transaction start, on the database's `now()`). Both read this machine's real-time clock, as the
 * server is local; the test checks that first, by reading the server's clock between two reads of
 * its own. Times are compared in whole ms (an end at the same ms as a start does not overlap it):
 * an attempt's end comes before its slot is freed (its settle or sweep commits), which comes before
 * the next claim commits and that attempt's agent starts, so whole ms keep that order.
 */
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { compileCron, tickIso } from '../../src/scheduler/cron.js';
import { followEvents, readEvents, type StoredEvent } from '../../src/store/postgres/events.js';
import { submitTasks } from '../../src/store/postgres/queue.js';
import { createSchedule, setSchedulePaused } from '../../src/store/postgres/schedules.js';
import { prng } from '../fixtures/prng.js';
import { scratchDirs, scratchPools } from '../helpers.js';
import { attemptsByTask, count, expectAttemptsOfOneRun, mostAtOnce, nodeProcesses, readStamps, storedAttempts, until, type NodeProcess } from '../cluster.js';

const pools = scratchPools();
const dirs = scratchDirs();
const startNode = nodeProcesses('runtime');
const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

const TASKS = 2_000;
const NODES = 3;
/** Slots per node: three nodes have 9, above the agent's cluster-wide limit. */
const SLOTS = 3;
const LIMIT = 4;
const KILLS = 7;
const SCHEDULE = 'tick';
const TERMINAL = "('done', 'failed', 'dropped', 'cancelled')";

/** The event that ends an attempt, for each task state an end can leave. */
const END_TYPES = new Set(['task.done', 'task.failed', 'task.dropped', 'task.retrying', 'task.cancelled']);
const isEnd = (e: StoredEvent) => END_TYPES.has(e.type) || (e.type === 'task.queued' && e.attemptId !== undefined);

describe('a PostgreSQL cluster under kill -9', () => {
  it('loses no task, settles each run once, keeps budgets, the limit, cron ticks and the event log', async () => {
    const started = performance.now();
    const { url, pool } = await pools({ max: 6 });
    const file = join(dirs(), 'stamps');

    // The server's clock is this machine's (see the module comment).
    const before = Date.now();
    const dbNow = await count(pool, 'SELECT (extract(epoch FROM clock_timestamp()) * 1000)::float8');
    const after = Date.now();
    expect(dbNow, "the server's clock must be this machine's: the agent's stamps are compared with its times").toBeGreaterThanOrEqual(before - 1);
    expect(dbNow).toBeLessThanOrEqual(after + 1);

    // The log's transaction ids cross a power of ten during the run, so a reader that orders them as
    // text rather than as numbers ('1000' < '999') is caught: up to 200,000 ids are spent to get
    // within 1,000 of the next one (subtransactions that write, ~5 ms per 1,000).
    const xid = await count(pool, 'SELECT pg_current_xact_id()::text::bigint');
    const boundary = 10 ** Math.ceil(Math.log10(xid + 1_001));
    const burn = boundary - 1_000 - xid;
    if (burn > 0 && burn <= 200_000) {
      await pool.query(`DO $$ BEGIN CREATE TEMP TABLE burnt (n int); FOR i IN 1..${burn} LOOP BEGIN INSERT INTO burnt VALUES (i); EXCEPTION WHEN others THEN NULL; END; END LOOP; DROP TABLE burnt; END $$`);
    }

    // A follower reads the log live all through the chaos.
    const followed: StoredEvent[] = [];
    const following = new AbortController();
    const follower = followEvents(pool, url, { signal: following.signal, pollMs: 100 }, (batch) => followed.push(...batch));
    cleanups.push(async () => {
      following.abort();
      await follower.catch(() => undefined);
    });

    // 2-5 ms each; every tenth fails its first attempt (a retry), every 25th has one attempt only (a crash drops it).
    await submitTasks(
      pool,
      Array.from({ length: TASKS }, (_, i) => ({ id: `t${String(i).padStart(4, '0')}`, agent: 'stamp', input: { file, ms: 2 + (i % 4), failFirst: i % 10 === 3 }, maxAttempts: i % 25 === 0 ? 1 : 3 })),
    );
    const schedule = await createSchedule(pool, { id: SCHEDULE, cron: '* * * * * *', task: { agent: 'stamp', input: { file, ms: 2 }, maxAttempts: 3 }, overlap: 'allow', catchUp: 'all' });

    const live: NodeProcess[] = await Promise.all(Array.from({ length: NODES }, () => startNode(url, 'stamp', SLOTS, LIMIT)));
    const all = [...live];
    const seed = Math.floor(Math.random() * 2 ** 31);
    const random = prng(seed);
    const terminal = () => count(pool, `SELECT count(*) FROM troupe_tasks WHERE state IN ${TERMINAL} AND idempotency_key IS NULL`);
    // The cadence: a kill each time another eighth of the tasks has settled.
    for (let k = 1; k <= KILLS; k++) {
      await until(async () => (await terminal()) >= (k * TASKS) / (KILLS + 1), `${k} eighths of the tasks settled`, 45_000);
      const busy = new Set((await pool.query<{ node: string }>("SELECT DISTINCT owner_node AS node FROM troupe_tasks WHERE state = 'running'")).rows.map((r) => r.node));
      const atWork = live.filter((c) => busy.has(c.id));
      const candidates = atWork.length > 0 ? atWork : live;
      const victim = candidates[Math.floor(random() * candidates.length)]!;
      await victim.kill();
      live.splice(live.indexOf(victim), 1);
      const next = await startNode(url, 'stamp', SLOTS, LIMIT);
      live.push(next);
      all.push(next);
    }
    await until(async () => (await terminal()) === TASKS, 'every submitted task terminal', 45_000);
    // No tick fires once the schedule is paused (the pause waits for a fire under way); then its last tasks run.
    await setSchedulePaused(pool, SCHEDULE, true);
    await until(async () => (await count(pool, `SELECT count(*) FROM troupe_tasks WHERE state NOT IN ${TERMINAL}`)) === 0, 'every task terminal', 20_000);
    for (const child of live) await child.close();
    const logged = await count(pool, 'SELECT count(*) FROM troupe_events');
    await until(async () => followed.length >= logged, 'the follower caught up', 10_000);
    following.abort();
    await follower;

    // Every task terminal: done, or dropped with its budget spent (no agent error is final).
    const tasks = (await pool.query<{ id: string; state: string; attempts: number; attempt_seq: number; max_attempts: number; key: string | null }>(
      'SELECT id, state, attempts, attempt_seq, max_attempts, idempotency_key AS key FROM troupe_tasks ORDER BY id',
    )).rows;
    expect(tasks.filter((t) => t.key === null)).toHaveLength(TASKS);
    expect(tasks.filter((t) => t.state !== 'done' && t.state !== 'dropped')).toEqual([]);
    const attempts = await storedAttempts(pool);
    expect(attempts.filter((a) => !a.ended || a.exit === null)).toEqual([]);
    const byTask = attemptsByTask(attempts);

    // Each run settled once, within its budget: attempts numbered 1..n in run 1, one success at most and only last.
    for (const task of tasks) {
      const rows = byTask.get(task.id) ?? [];
      expectAttemptsOfOneRun(task, rows);
      const exits = rows.map((r) => r.exit);
      const earlier = exits.slice(0, -1);
      expect({ id: task.id, earlier: earlier.filter((e) => !['crashed', 'lease_expired', 'error', 'interrupted'].includes(e!)) }).toEqual({ id: task.id, earlier: [] });
      if (task.state === 'done') expect({ id: task.id, last: exits.at(-1) }).toEqual({ id: task.id, last: 'success' });
      else expect({ id: task.id, exits, attempts: task.attempts }).toEqual({ id: task.id, exits: expect.not.arrayContaining(['success']), attempts: task.max_attempts });
    }

    // Every attempt the agent stamped is a stored attempt of its task with its number, run by the node that claimed it.
    const stamps = readStamps(file);
    const nodeOfPid = new Map(all.map((c) => [c.pid, c.id]));
    const stored = new Map(attempts.map((a) => [`${a.task_id} ${a.attempt}`, a]));
    for (const [key, stamp] of stamps) {
      const row = stored.get(key);
      expect(row, `the agent ran attempt ${key}, which is not stored`).toBeDefined();
      expect({ key, node: nodeOfPid.get(stamp.pid) }).toEqual({ key, node: row!.node });
    }
    // And every attempt its node reported ended was run by the agent, start to end.
    for (const a of attempts.filter((r) => r.exit === 'success' || r.exit === 'error')) expect(stamps.get(`${a.task_id} ${a.attempt}`)?.end, `attempt ${a.attempt_id}`).toBeDefined();

    // The killed nodes' unfinished attempts ended crashed; no live node's did; the killed nodes left the cluster.
    const killed = new Set(all.filter((c) => c.killed).map((c) => c.id));
    expect(killed.size).toBe(KILLS);
    const crashed = attempts.filter((a) => a.exit === 'crashed' || a.exit === 'lease_expired');
    // Every attempt the agent started and never stamped an end was cut short by a kill: it is stored
    // crashed. (Not one per kill: a node picked for having running rows may have settled them by
    // the time the kill lands, the sooner as its settle is one round trip.)
    const cutShort = [...stamps.entries()].filter(([, s]) => s.end === undefined).map(([key]) => key);
    for (const key of cutShort) expect({ key, exit: stored.get(key)?.exit }).toEqual({ key, exit: 'crashed' });
    expect(crashed.length).toBeGreaterThan(0);
    for (const a of crashed) expect({ id: a.attempt_id, killed: killed.has(a.node), code: a.code }).toEqual({ id: a.attempt_id, killed: true, code: 'PROCESS_CRASHED' });
    expect(await count(pool, 'SELECT count(*) FROM troupe_nodes')).toBe(0);

    // Never more than the limit at once across nodes, from the agent's own stamps; a killed attempt
    // that stamped no end ran until its crash was recorded.
    const intervals = [...stamps.entries()].map(([key, s]): [number, number] => {
      if (s.end !== undefined) return [s.start, s.end];
      const row = stored.get(key)!;
      expect({ key, exit: row.exit }).toEqual({ key, exit: 'crashed' });
      return [s.start, row.ended_ms!];
    });
    expect(stamps.size).toBeGreaterThanOrEqual(TASKS);
    const most = mostAtOnce(intervals);
    expect(most).toBeLessThanOrEqual(LIMIT);

    // Each cron tick fired once: one task and one schedule.fired per tick, every tick from the first to the paused one.
    const next = await count(pool, 'SELECT (extract(epoch FROM next_run_at) * 1000)::float8 FROM troupe_schedules WHERE id = $1', [SCHEDULE]);
    const ticks = compileCron('* * * * * *').between(schedule.nextRunAt - 1, next - 1, 10_000);
    expect(ticks.length).toBeGreaterThanOrEqual(3);
    expect(tasks.filter((t) => t.key !== null).map((t) => t.key).sort()).toEqual(ticks.map((t) => `schedule:${SCHEDULE}:${tickIso(t)}`).sort());
    const events: StoredEvent[] = [];
    for (let cursor = ''; ; ) {
      const page = await readEvents(pool, cursor, 500);
      if (page.length === 0) break;
      events.push(...page);
      cursor = page.at(-1)!.cursor;
    }
    const fired = events.filter((e) => e.type === 'schedule.fired');
    expect(fired.map((e) => (e.data as { tick: number; skipped?: string }).tick).sort((a, b) => a - b)).toEqual(ticks);
    expect(fired.filter((e) => e.taskId === undefined)).toEqual([]);
    expect(await count(pool, 'SELECT fired FROM troupe_schedules WHERE id = $1', [SCHEDULE])).toBe(ticks.length);

    // The log, read in pages from its start, holds every event once, cursors strictly increasing; the live follower saw the same.
    expect(events.length).toBe(await count(pool, 'SELECT count(*) FROM troupe_events'));
    expect(new Set(events.map((e) => e.seq)).size).toBe(events.length);
    for (let i = 1; i < events.length; i++) expect(events[i]!.cursor > events[i - 1]!.cursor, `cursor ${i}`).toBe(true);
    expect(followed.map((e) => e.cursor)).toEqual(events.map((e) => e.cursor));

    // Each task's events tell its rows' story: queued once, then per attempt row a start and one end with its exit.
    const eventsOf = new Map<string, StoredEvent[]>();
    for (const e of events) if (e.taskId !== undefined && e.type !== 'schedule.fired') eventsOf.set(e.taskId, [...(eventsOf.get(e.taskId) ?? []), e]);
    const lastEnd: Record<string, string> = { done: 'task.done', dropped: 'task.dropped' };
    for (const task of tasks) {
      const story = eventsOf.get(task.id) ?? [];
      const rows = byTask.get(task.id) ?? [];
      const told = story.slice(1).map((e) => `${e.type === 'task.started' ? 'start' : isEnd(e) ? 'end' : e.type} ${e.attemptId} ${e.type === 'task.started' ? '' : (e.data as { exit?: string }).exit}`);
      expect({ id: task.id, first: story[0]?.type, attempt: story[0]?.attemptId }).toEqual({ id: task.id, first: 'task.queued', attempt: undefined });
      expect({ id: task.id, told }).toEqual({ id: task.id, told: rows.flatMap((r) => [`start ${r.attempt_id} `, `end ${r.attempt_id} ${r.exit}`]) });
      expect({ id: task.id, last: story.at(-1)?.type }).toEqual({ id: task.id, last: lastEnd[task.state] });
    }

    const byState = (state: string) => tasks.filter((t) => t.state === state).length;
    console.log(
      `seed ${seed}: ${KILLS} kills in ${Math.round(performance.now() - started)} ms; ${attempts.length} attempts, ${crashed.length} crashed and taken back; ` +
        `${byState('done')} tasks done, ${byState('dropped')} dropped; ${ticks.length} cron ticks; ${events.length} events; ${intervals.length - [...stamps.values()].filter((s) => s.end !== undefined).length} killed mid-agent; at most ${most} of ${LIMIT} at once by the agent's stamps`,
    );
  }, 90_000);
});
