/**
 * Streams (`rt.logs(id, { follow })`, `rt.events()`) and metrics (`rt.metrics()`, Prometheus text)
 * over real threads and a real store; `metricsPort` is in contract-metrics-port.ts, on both stores.
 */
import { describe, expect, it } from 'vitest';
import { builtinAgent, createRuntime, type LogLine, type Runtime, type RuntimeOptions } from 'troupe';
import { fixtureAgent, scratchDirs } from '../helpers.js';

const dir = scratchDirs();

function open(options: RuntimeOptions = {}): Promise<Runtime> {
  return createRuntime({
    logger: false,
    threads: 2,
    slotsPerThread: 2,
    dataDir: dir(),
    agents: [{ name: 'int', module: fixtureAgent('interactive') }, { name: 'chatty', module: fixtureAgent('chatty') }, builtinAgent('echo'), builtinAgent('fail', { retry: { maxAttempts: 2, delayMs: 0 }, backoff: false })],
    ...options,
  });
}

describe('log streams', () => {
  it('follow replays stored lines, then goes live until the task settles, with no gap and no duplicate', async () => {
    const rt = await open();
    const task = await rt.submit({ agent: 'int', input: { mode: 'ask' } });
    const seen: LogLine[] = [];
    const following = (async () => {
      for await (const line of rt.logs(task.id, { follow: true })) seen.push(line);
    })();
    await new Promise<void>((resolve) => {
      const off = rt.on('task.waiting', () => {
        off();
        resolve();
      });
    });
    await rt.sendInput(task.id, { message: 'go' });
    await following;
    const stored: LogLine[] = [];
    for await (const line of rt.logs(task.id)) stored.push(line);
    expect(stored.map((l) => l.message)).toEqual(['asking']);
    expect(seen).toEqual(stored);
    await rt.close();
  });

  it('follow on a chatty task sees every line once, in order, and resumes after a cursor', async () => {
    const rt = await open();
    const task = await rt.submit({ agent: 'chatty', input: { lines: 300 } });
    const seen: string[] = [];
    for await (const line of rt.logs(task.id, { follow: true })) seen.push(line.message);
    expect(seen).toEqual(Array.from({ length: 300 }, (_, i) => `line ${i}`));
    const lines: LogLine[] = [];
    for await (const line of rt.logs(task.id)) lines.push(line);
    const tail: string[] = [];
    for await (const line of rt.logs(task.id, { after: lines[289]!.cursor, follow: true })) tail.push(line.message);
    expect(tail).toEqual(Array.from({ length: 10 }, (_, i) => `line ${290 + i}`));
    await rt.close();
  });

  it('followers that start while lines are being committed miss none of them', async () => {
    const rt = await open();
    const task = await rt.submit({ agent: 'chatty', input: { lines: 1500 } });
    const followers: Array<Promise<number>> = [];
    for (let i = 0; i < 12; i++) {
      followers.push(
        (async () => {
          let n = 0;
          for await (const line of rt.logs(task.id, { follow: true })) if (line.message === `line ${n}`) n++;
          return n;
        })(),
      );
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
    expect(await Promise.all(followers)).toEqual(Array.from({ length: 12 }, () => 1500));
    await rt.close();
  });

    it('follow ends when its signal aborts', async () => {
    const rt = await open();
    const task = await rt.submit({ agent: 'int', input: { mode: 'ask' } });
    const controller = new AbortController();
    const seen: string[] = [];
    const following = (async () => {
      for await (const line of rt.logs(task.id, { follow: true, signal: controller.signal })) {
        seen.push(line.message);
        controller.abort();
      }
    })();
    await following;
    expect(seen).toEqual(['asking']);
    await rt.cancel(task.id);
    await rt.close();
  });
});

describe('metrics', () => {
  it('snapshot and Prometheus text: exits, latencies, queue depth, free slots, at-capacity rejections', async () => {
    const rt = await open({ maxQueued: 5, threads: 1, slotsPerThread: 2 });
    const tasks = await rt.submitMany([{ agent: 'echo', input: 1 }, { agent: 'echo', input: 2 }, { agent: 'fail', input: {} }]);
    for (const t of tasks) await rt.wait(t.id);
    const held = await rt.submitMany(Array.from({ length: 5 }, () => ({ agent: 'echo', input: 0, delayMs: 0 })));
    for (const t of held) await rt.wait(t.id);
    await rt.freeze();
    await rt.submitMany(Array.from({ length: 5 }, () => ({ agent: 'echo', input: 'q' })));
    await expect(rt.submit({ agent: 'echo', input: 'over' })).rejects.toMatchObject({ code: 'AT_CAPACITY' });
    const snapshot = await rt.metrics();
    expect(snapshot.attemptsByExit).toMatchObject({ success: 7, error: 2 });
    expect(snapshot.latency.submitToStart.count).toBe(9);
    expect(snapshot.latency.startToSettle.count).toBe(9);
    expect(snapshot.queueDepth).toMatchObject({ echo: 5, fail: 0 });
    expect(snapshot).toMatchObject({ running: 0, freeSlots: 2, atCapacityRejections: 1 });
    expect(snapshot.rebuildSeconds).toBeGreaterThanOrEqual(0);
    const text = await rt.metrics({ format: 'prometheus' });
    expect(text).toContain('# TYPE troupe_submit_to_start_seconds histogram');
    expect(text).toMatch(/troupe_attempts_total\{exit="success"\} 7/);
    expect(text).toMatch(/troupe_queue_depth\{agent="echo"\} 5/);
    expect(text).toMatch(/troupe_at_capacity_rejections_total 1/);
    await rt.close();
  });
});
