/**
 * The dashboard's chart: sampled from the runtime's own counters every 10 s, as deltas (nothing
 * is counted per event for it).
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { dashboardApi, type DashboardRuntime } from '../../src/dashboard/api.js';
import type { MetricsSnapshot } from '../../src/metrics/metrics.js';

/** A runtime whose metrics move by what each sample is given. */
function fakeRuntime(samples: Array<{ started: number; queuedSeconds: number; exits: Record<string, number> }>): DashboardRuntime {
  let i = 0;
  return {
    stats: () => ({}) as never,
    agents: { list: () => [] } as never,
    metrics: (async () => {
      const s = samples[Math.min(i++, samples.length - 1)]!;
      return { attemptsByExit: s.exits, latency: { submitToStart: { count: s.started, sum: s.queuedSeconds } }, at: Date.now() } as unknown as MetricsSnapshot;
    }) as never,
  } as unknown as DashboardRuntime;
}

describe('the dashboard chart', () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it('puts the starts, the settles by exit and the mean wait of each 10 s into a bucket', async () => {
    const api = dashboardApi(
      fakeRuntime([
        { started: 10, queuedSeconds: 1, exits: { success: 8, fail: 1, timeout: 0 } },
        { started: 15, queuedSeconds: 1.5, exits: { success: 11, fail: 2, timeout: 1 } },
        { started: 15, queuedSeconds: 1.5, exits: { success: 11, fail: 2, timeout: 1 } },
      ]),
    );
    const overview = async () => ((await api.route('GET', '/api/overview', new URLSearchParams(), undefined, {} as never, {} as never)) as { chart: { bucketMs: number; buckets: unknown[] } }).chart;
    expect((await overview()).buckets).toEqual([]);
    // The first bucket: everything since the runtime opened (its counters started at 0).
    await vi.advanceTimersByTimeAsync(10_000);
    expect((await overview()).buckets).toEqual([{ at: expect.any(Number), started: 10, done: 8, failed: 1, queuedMs: 100 }]);
    await vi.advanceTimersByTimeAsync(10_000);
    expect((await overview()).buckets.at(-1)).toEqual({ at: expect.any(Number), started: 5, done: 3, failed: 2, queuedMs: 100 });
    await vi.advanceTimersByTimeAsync(10_000);
    expect((await overview()).buckets.at(-1)).toEqual({ at: expect.any(Number), started: 0, done: 0, failed: 0, queuedMs: null });
    expect((await overview()).buckets).toHaveLength(3);
    api.close();
  });
});
