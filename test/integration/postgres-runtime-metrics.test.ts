/**
 * `rt.metrics()` on PostgreSQL (src/cluster/metrics.ts): the LMDB runtime's snapshot and Prometheus
 * names, with this runtime's node's attempts (started, ended by exit, their latencies) and the
 * cluster's queue depth and tasks by state from the background counts; and `stats().queued` /
 * `delayed` (and per agent `queued`) from those counts: queued tasks due to run, and those whose
 * `runAt`, `delayMs` or retry backoff is still to come. Before, metrics() was UNSUPPORTED_STORE and
 * queued / delayed were always 0 there.
 */
import { describe, expect, it, vi } from 'vitest';
import { builtinAgent, type Runtime } from 'troupe';
import type { MetricsSnapshot } from '../../src/metrics/metrics.js';
import { rejection, runtimes, scratchPools, started } from '../helpers.js';
import { pgRuntimes } from '../pg-runtime.js';

const pools = scratchPools();
const runtime = pgRuntimes();
const lmdbRuntime = runtimes();

const NONE = { queued: 0, running: 0, waiting: 0, sleeping: 0, needs_attention: 0, done: 0, failed: 0, dropped: 0, cancelled: 0 };
const NO_EXITS = { success: 0, fork: 0, fail: 0, error: 0, timeout: 0, lease_expired: 0, cancelled: 0, crashed: 0, interrupted: 0 };
/** The counts are taken at most once a second: a poll sees them within a few. */
const COUNTED = { timeout: 10_000, interval: 50 };

/** A Prometheus exposition text as `series → value` (series as printed: name and labels), and each metric's TYPE; fails on a line that is neither. */
function parsePrometheus(text: string): { samples: Map<string, number>; types: Map<string, string> } {
  const samples = new Map<string, number>();
  const types = new Map<string, string>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('# HELP ')) continue;
    const type = /^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram)$/.exec(line);
    if (type) {
      types.set(type[1]!, type[2]!);
      continue;
    }
    const sample = /^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) (-?[0-9.e+-]+|NaN)$/.exec(line);
    expect(sample, line).not.toBeNull();
    samples.set(sample![1]!, Number(sample![2]));
  }
  return { samples, types };
}

/** Resolves with the first event of `type` of task `id`, replayed or live. */
async function eventOf(rt: Runtime, id: string, type: 'task.retrying'): Promise<void> {
  for await (const _ of rt.events({ taskId: id, types: [type] })) return;
}

describe('metrics() on PostgreSQL', () => {
  it("counts its node's attempts by exit and their latencies, and the cluster's tasks by state; the Prometheus text says the same", async () => {
    const { url } = await pools({ max: 1 });
    const a = await runtime(url, { agents: [builtinAgent('echo'), builtinAgent('fail', { retry: { maxAttempts: 2, backoff: 'fixed', delayMs: 10 } })] });
    // Another runtime of the cluster: it runs none of these tasks, and counts them all by state.
    const b = await runtime(url, { agents: [builtinAgent('sleep')] });
    let thrown = 0;
    a.on('task.done', () => {
      thrown++;
      throw new Error('a listener that throws');
    });

    const tasks = await a.submitMany([
      { agent: 'echo', input: 1 },
      { agent: 'echo', input: 2 },
      { agent: 'echo', input: 3 },
      { agent: 'fail', input: { mode: 'fatal' } },
      { agent: 'fail', input: { mode: 'result' } },
      { agent: 'fail', input: { mode: 'throw' } },
    ]);
    const states = await Promise.all(tasks.map(async (t) => (await a.wait(t.id)).state));
    expect(states).toEqual(['done', 'done', 'done', 'failed', 'failed', 'dropped']);

    // 7 attempts on a's node: 3 succeeded, 1 returned fail, 3 threw (1 fatal, 2 retried and dropped).
    const exits = { ...NO_EXITS, success: 3, fail: 1, error: 3 };
    const tasksByState = { ...NONE, done: 3, failed: 2, dropped: 1 };
    let snapshot: MetricsSnapshot | undefined;
    await vi.waitFor(async () => {
      snapshot = await a.metrics();
      expect(snapshot).toMatchObject({ attemptsByExit: exits, tasks: tasksByState });
    }, COUNTED);
    expect(snapshot).toMatchObject({
      queueDepth: { echo: 0, fail: 0 },
      running: 0,
      freeSlots: 2,
      atCapacityRejections: 0,
      listenerErrors: 3,
      storeStopped: 0,
      latency: { submitToStart: { count: 7 }, startToSettle: { count: 7 } },
      at: expect.any(Number),
    });
    expect(thrown).toBe(3);
    const { submitToStart, startToSettle } = snapshot!.latency;
    for (const histogram of [submitToStart, startToSettle]) {
      expect(histogram.buckets.at(-1)!.count).toBeLessThanOrEqual(7);
      expect(histogram.sum).toBeGreaterThanOrEqual(0);
      expect(histogram.p50).toEqual(expect.any(Number));
    }
    expect(snapshot!.rebuildSeconds).toBeGreaterThan(0);
    expect(Object.keys(snapshot!.attemptsByExit).sort()).toEqual(Object.keys(NO_EXITS).sort());

    // b ran nothing: its own counters are zero, the cluster's counts the same as a's.
    await vi.waitFor(async () => expect(await b.metrics()).toMatchObject({ attemptsByExit: NO_EXITS, tasks: tasksByState, queueDepth: { sleep: 0, echo: 0, fail: 0 } }), COUNTED);
    expect((await b.metrics()).latency.submitToStart.count).toBe(0);

    const { samples, types } = parsePrometheus(await a.metrics({ format: 'prometheus' }));
    for (const [exit, n] of Object.entries(exits)) expect(samples.get(`troupe_attempts_total{exit="${exit}"}`), exit).toBe(n);
    for (const [state, n] of Object.entries(tasksByState)) expect(samples.get(`troupe_tasks{state="${state}"}`), state).toBe(n);
    expect(types.get('troupe_tasks')).toBe('gauge');
    expect(samples.get('troupe_queue_depth{agent="echo"}')).toBe(0);
    expect(samples.get('troupe_submit_to_start_seconds_count')).toBe(7);
    expect(samples.get('troupe_start_to_settle_seconds_count')).toBe(7);
    expect(samples.get('troupe_start_to_settle_seconds_bucket{le="+Inf"}')).toBe(7);
    expect(samples.get('troupe_attempts_running')).toBe(0);
    expect(samples.get('troupe_slots_free')).toBe(2);
    expect(samples.get('troupe_listener_errors_total')).toBe(3);
    expect(samples.get('troupe_at_capacity_rejections_total')).toBe(0);
    expect(samples.get('troupe_store_stopped')).toBe(0);
    expect(samples.get('troupe_rebuild_seconds')).toBe(snapshot!.rebuildSeconds);
  });

  it('checks its options as the LMDB runtime does, has its metric names (and troupe_tasks), and is CLOSED once closed', async () => {
    const { url } = await pools({ max: 1 });
    const pg = await runtime(url, { agents: [builtinAgent('echo')] });
    const lmdb = await lmdbRuntime({ threads: 1, slotsPerThread: 1, agents: [builtinAgent('echo')] });
    const bad: unknown[] = [{ bogus: 1 }, { format: 'xml' }, { format: 1 }, null, 'prometheus', [], new Map()];
    for (const options of bad) {
      const expected = await rejection(lmdb.metrics(options as never));
      expect(expected.code, JSON.stringify(options)).toBe('INVALID_OPTIONS');
      expect(await rejection(pg.metrics(options as never)), JSON.stringify(options)).toMatchObject({ code: expected.code, message: expected.message });
    }
    expect(await pg.metrics({ format: 'snapshot' } as never)).toMatchObject({ attemptsByExit: NO_EXITS });

    const names = (rt: Runtime) => rt.metrics({ format: 'prometheus' }).then((text) => [...parsePrometheus(text).types].sort());
    const lmdbNames = await names(lmdb);
    expect(lmdbNames.length).toBeGreaterThanOrEqual(10);
    expect(await names(pg)).toEqual([...lmdbNames, ['troupe_tasks', 'gauge']].sort());

    await pg.close();
    expect(await rejection(pg.metrics())).toMatchObject({ code: 'CLOSED' });
  });
});

describe('metrics() on PostgreSQL, an attempt taken back', () => {
  it('does not count the end of an attempt the cluster took back: its settle was stale, and another node ended it', async () => {
    const { url, pool } = await pools({ max: 1 });
    // Leases renewed every 300 ms: the node soon hears that its attempt is no longer current.
    const rt = await runtime(url, { leaseMs: 900, agents: [builtinAgent('sleep')] });
    const task = await rt.submit({ agent: 'sleep', input: { ms: 600_000, steps: 1 } });
    await started(rt, task.id);
    // What a sweeper does to the attempt of a node it found dead: a new token, and the task ended.
    await pool.query(`UPDATE troupe_tasks SET state = 'dropped', token = token + 1, owner_node = NULL, attempt_id = NULL, lease_until = NULL, settled_at = now() WHERE id = $1`, [task.id]);
    // The node stops the attempt, and its settle finds it stale: it holds nothing once that is over.
    await vi.waitFor(() => expect(rt.stats().attempts).toEqual({ starting: 0, ready: 0, executing: 0 }), COUNTED);
    expect(await rt.metrics()).toMatchObject({ attemptsByExit: NO_EXITS, latency: { submitToStart: { count: 1 }, startToSettle: { count: 0 } } });
  });
});

describe('stats().queued and delayed on PostgreSQL', () => {
  it('counts the queued tasks due to run, in all and per agent, apart from those whose runAt, delayMs or retry backoff is to come', async () => {
    const { url } = await pools({ max: 1 });
    const rt = await runtime(url, { agents: [builtinAgent('echo'), builtinAgent('sleep'), builtinAgent('fail', { retry: { maxAttempts: 2, backoff: 'fixed', delayMs: 3_600_000 } })] });
    // Frozen, the cluster claims nothing: what is submitted stays queued.
    await rt.freeze('hold the queue');
    const due = await rt.submitMany([{ agent: 'echo', input: 1 }, { agent: 'echo', input: 2 }, { agent: 'sleep', input: { ms: 1 } }]);
    const later = await rt.submitMany([
      { agent: 'echo', input: 'later', delayMs: 3_600_000 },
      { agent: 'echo', input: 'tomorrow', runAt: Date.now() + 86_400_000 },
    ]);
    expect(later.map((t) => t.state)).toEqual(['queued', 'queued']);
    await vi.waitFor(() => expect(rt.stats()).toMatchObject({ queued: 3, delayed: 2, tasks: { queued: 5 }, agents: { echo: { queued: 2, tasks: { queued: 4 } }, sleep: { queued: 1 }, fail: { queued: 0 } } }), COUNTED);
    expect(await rt.metrics()).toMatchObject({ queueDepth: { echo: 2, sleep: 1, fail: 0 }, tasks: { queued: 5 } });

    // Unfrozen, the due ones run; the delayed stay queued.
    await rt.unfreeze();
    for (const task of due) expect((await rt.wait(task.id)).state).toBe('done');
    await vi.waitFor(() => expect(rt.stats()).toMatchObject({ queued: 0, delayed: 2, tasks: { queued: 2, done: 3 }, agents: { echo: { queued: 0 }, sleep: { queued: 0 } } }), COUNTED);

    // A retry waiting out its backoff (an hour) is delayed too.
    const failing = await rt.submit({ agent: 'fail', input: { mode: 'throw' } });
    await eventOf(rt, failing.id, 'task.retrying');
    await vi.waitFor(() => expect(rt.stats()).toMatchObject({ queued: 0, delayed: 3, tasks: { queued: 3 }, agents: { fail: { queued: 0, tasks: { queued: 1 } } } }), COUNTED);
    expect(await rt.metrics()).toMatchObject({ queueDepth: { echo: 0, sleep: 0, fail: 0 }, tasks: { queued: 3 } });

    // A running attempt holds one of its node's 2 slots.
    const sleeping = await rt.submit({ agent: 'sleep', input: { ms: 600_000, steps: 1 } });
    await started(rt, sleeping.id);
    // The node counts the attempt once its claim has answered, which what saw the start need not
    // have waited for (a fresh-clone run once read the metrics in between).
    await vi.waitFor(async () => expect(await rt.metrics()).toMatchObject({ running: 1, freeSlots: 1 }), COUNTED);
    await rt.cancel(sleeping.id, 'enough');
    // The node counts the end once its settle has answered, which the wait need not have waited for.
    await vi.waitFor(async () => expect(await rt.metrics()).toMatchObject({ running: 0, freeSlots: 2, attemptsByExit: { cancelled: 1 } }), COUNTED);
  });
});
