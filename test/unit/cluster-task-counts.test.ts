/**
 * When the runtime on PostgreSQL counts its tasks for stats() (src/cluster/task-counts.ts), against
 * a fake pool that answers when told, on a clock the test moves: nothing before the first call, a
 * scan of the table at most once a second and at most 1/20 of the time, the cheap count of queued
 * and running tasks between scans, one count at a time, and none after stop().
 */
import { describe, expect, it } from 'vitest';
import { TaskCounts } from '../../src/cluster/task-counts.js';
import { capturedLog } from '../log-capture.js';

/** A count's row; `delayed`: of a queued count, the tasks whose run_at is to come. */
type Row = [agent: string, state: string, n: number, delayed?: number];

/** A pool whose queries wait until the test answers them; each is a scan or a count of the active states. */
function fakePool() {
  const asked: Array<{ kind: 'scan' | 'active'; answer(rows: Row[]): void; fail(error: Error): void }> = [];
  const pool = {
    query: (text: string) =>
      new Promise((resolve, reject) => {
        asked.push({
          kind: text.includes("WHERE state = 'queued'") ? 'active' : 'scan',
          answer: (rows) => resolve({ rows: rows.map(([agent, state, n, delayed = 0]) => ({ agent, state, n: String(n), delayed: String(delayed) })) }),
          fail: reject,
        });
      }),
  };
  return { pool: pool as never, asked };
}

/** Lets the answered query's promise chain run. */
const settled = () => new Promise((resolve) => setImmediate(resolve));

const NONE = { queued: 0, running: 0, waiting: 0, sleeping: 0, needs_attention: 0, done: 0, failed: 0, dropped: 0, cancelled: 0 };
const NOT_DELAYED = { total: 0, agents: {} };

function setup() {
  let now = 10_000;
  const { pool, asked } = fakePool();
  const { log, lines } = capturedLog('warn');
  const counts = new TaskCounts(pool, log, () => now);
  return { counts, asked, lines, advance: (ms: number) => (now += ms) };
}

describe('TaskCounts: the counts of stats() on PostgreSQL', () => {
  it('counts nothing until the first call, which shows none yet; then shows every state in all and non-zero ones per agent', async () => {
    const { counts, asked } = setup();
    expect(asked).toHaveLength(0);
    expect(counts.current()).toBeUndefined();
    expect(asked.map((q) => q.kind)).toEqual(['scan']);
    asked[0]!.answer([['echo', 'done', 3], ['echo', 'queued', 1], ['sleep', 'running', 2], ['fail', 'failed', 1]]);
    await settled();
    expect(counts.current()).toEqual({
      tasks: { ...NONE, done: 3, queued: 1, running: 2, failed: 1 },
      agents: { echo: { done: 3, queued: 1 }, sleep: { running: 2 }, fail: { failed: 1 } },
      delayed: NOT_DELAYED,
    });
  });

  it('counts at most once a second, one count at a time', async () => {
    const { counts, asked, advance } = setup();
    counts.current();
    advance(5_000);
    // A count under way: no second one.
    counts.current();
    expect(asked).toHaveLength(1);
    asked[0]!.answer([]);
    await settled();
    // Due a second after the last count started, which was 5 s ago.
    counts.current();
    expect(asked).toHaveLength(2);
    asked[1]!.answer([['echo', 'done', 1]]);
    await settled();
    advance(999);
    expect(counts.current()?.tasks.done).toBe(1);
    expect(asked).toHaveLength(2);
    advance(1);
    counts.current();
    expect(asked).toHaveLength(3);
  });

  it('scans no more than 1/20 of the time: between scans it counts queued and running tasks from their indexes, keeping the settled counts of the last scan', async () => {
    const { counts, asked, advance } = setup();
    counts.current();
    // The scan takes 200 ms: the next one is due 4 s after it started.
    advance(200);
    asked[0]!.answer([['echo', 'done', 5], ['echo', 'queued', 2], ['echo', 'running', 1]]);
    await settled();
    advance(800);
    counts.current();
    expect(asked.map((q) => q.kind)).toEqual(['scan', 'active']);
    asked[1]!.answer([['echo', 'queued', 1], ['echo', 'running', 2]]);
    await settled();
    expect(counts.current()).toEqual({ tasks: { ...NONE, done: 5, queued: 1, running: 2 }, agents: { echo: { done: 5, queued: 1, running: 2 } }, delayed: NOT_DELAYED });
    advance(1_000);
    counts.current();
    asked[2]!.answer([]);
    await settled();
    // Nothing queued or running any more; the settled counts are still the scan's.
    expect(counts.current()).toEqual({ tasks: { ...NONE, done: 5 }, agents: { echo: { done: 5 } }, delayed: NOT_DELAYED });
    advance(1_000);
    counts.current();
    asked[3]!.answer([]);
    await settled();
    advance(1_000);
    counts.current();
    expect(asked.map((q) => q.kind)).toEqual(['scan', 'active', 'active', 'active', 'scan']);
  });

  it('splits the queued tasks into due and delayed, from the scan and from the count of the active states', async () => {
    const { counts, asked, advance } = setup();
    counts.current();
    // A scan of 200 ms: the next is due in 4 s; the active states are counted before.
    advance(200);
    asked[0]!.answer([['echo', 'queued', 5, 2], ['sleep', 'queued', 1, 1], ['fail', 'queued', 3]]);
    await settled();
    expect(counts.current()?.delayed).toEqual({ total: 3, agents: { echo: 2, sleep: 1 } });
    advance(800);
    counts.current();
    expect(asked[1]!.kind).toBe('active');
    asked[1]!.answer([['echo', 'queued', 4, 4]]);
    await settled();
    expect(counts.current()).toMatchObject({ tasks: { queued: 4 }, delayed: { total: 4, agents: { echo: 4 } } });
  });

  it('spaces the counts of the active states by 20 times their last duration, as it does the scans', async () => {
    const { counts, asked, advance } = setup();
    counts.current();
    // A scan of 500 ms: the next is due in 10 s.
    advance(500);
    asked[0]!.answer([]);
    await settled();
    advance(500);
    counts.current();
    expect(asked[1]!.kind).toBe('active');
    // This count of the queued rows takes 100 ms: the next is due 2 s after it started.
    advance(100);
    asked[1]!.answer([['echo', 'queued', 100_000]]);
    await settled();
    advance(1_800);
    counts.current();
    expect(asked).toHaveLength(2);
    advance(100);
    counts.current();
    expect(asked).toHaveLength(3);
  });

  it('fresh() waits for the count due now, up to a bound, and shows the counts as last taken past it', async () => {
    const { counts, asked } = setup();
    const first = counts.fresh(60_000);
    asked[0]!.answer([['echo', 'done', 2]]);
    expect((await first)?.tasks.done).toBe(2);
    // Not due yet: no count, no wait.
    expect((await counts.fresh(60_000))?.tasks.done).toBe(2);
    expect(asked).toHaveLength(1);
  });

  it('keeps the counts when a count fails, logs it, and counts again a second later', async () => {
    const { counts, asked, advance, lines } = setup();
    counts.current();
    asked[0]!.answer([['echo', 'done', 2]]);
    await settled();
    advance(1_000);
    counts.current();
    asked[1]!.fail(new Error('connection lost'));
    await settled();
    expect(counts.current()?.tasks.done).toBe(2);
    expect(lines).toMatchObject([{ msg: 'counting the tasks for stats() failed', err: { message: expect.stringMatching(/^counting tasks failed: connection lost/) } }]);
    expect(asked).toHaveLength(2);
    advance(1_000);
    counts.current();
    expect(asked).toHaveLength(3);
  });

  it('stop() waits for the count under way and counts nothing after', async () => {
    const { counts, asked, advance } = setup();
    counts.current();
    let stopped = false;
    const stopping = counts.stop().then(() => (stopped = true));
    await settled();
    expect(stopped).toBe(false);
    asked[0]!.answer([['echo', 'done', 1]]);
    await stopping;
    advance(60_000);
    expect(counts.current()?.tasks.done).toBe(1);
    expect(asked).toHaveLength(1);
  });
});
