/**
 * Metrics on LMDB (`rt.metrics()`, Prometheus text) over real threads and a real store, with
 * `maxQueued` (AT_CAPACITY; on both stores in contract-admission.ts); PostgreSQL's metrics are
 * postgres-runtime-metrics.test.ts's, `metricsPort` is contract-metrics-port.ts's and log streams
 * contract-flow.ts's, on both stores.
 */
import { describe, expect, it } from 'vitest';
import { builtinAgent, createRuntime, type Runtime, type RuntimeOptions } from 'troupe';
import { scratchDirs } from '../helpers.js';

const dir = scratchDirs();

function open(options: RuntimeOptions = {}): Promise<Runtime> {
  return createRuntime({
    logger: false,
    threads: 2,
    slotsPerThread: 2,
    dataDir: dir(),
    agents: [builtinAgent('echo'), builtinAgent('fail', { retry: { maxAttempts: 2, delayMs: 0 }, backoff: false })],
    ...options,
  });
}

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
