import { createConnection } from 'node:net';
import { networkInterfaces } from 'node:os';
import { register as globalRegistry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import type { RuntimeEvent } from '../../src/events/event-bus.js';
import { LATENCY_BUCKETS_SECONDS, RuntimeMetrics, type MetricsSources } from '../../src/metrics/metrics.js';
import type { EventType } from '../../src/store/records.js';

interface FakeSources extends MetricsSources {
  agentMap: Record<string, { queued: number; reserved: number }>;
  phases: { starting: number; ready: number; executing: number };
  slots: number;
  rebuild: number;
  listenerFailures: number;
  stopped: boolean;
}

function fakeSources(): FakeSources {
  return {
    agentMap: { a: { queued: 3, reserved: 1 }, b: { queued: 0, reserved: 2 } },
    phases: { starting: 1, ready: 0, executing: 2 },
    slots: 8,
    rebuild: 1250,
    listenerFailures: 0,
    stopped: false,
    listenerErrors() {
      return this.listenerFailures;
    },
    storeStopped() {
      return this.stopped;
    },
    agents() {
      return this.agentMap;
    },
    attempts() {
      return this.phases;
    },
    rebuildMs() {
      return this.rebuild;
    },
  };
}

let seq = 0;
function ev(type: EventType, data?: Record<string, unknown>): RuntimeEvent {
  seq += 1;
  return { seq, at: 1_000 + seq, type, taskId: 't1', attemptId: 'a1', cursor: String(seq).padStart(16, '0'), ...(data && { data }) } as RuntimeEvent;
}

const started = (queuedMs: number) => ev('task.started', { run: 1, attempt: 1, queuedMs });
const ended = (type: EventType, exit: string, attemptMs: number) => ev(type, { run: 1, attempt: 1, exit, attemptMs });

function metrics(sources: MetricsSources = fakeSources()): RuntimeMetrics {
  return new RuntimeMetrics(sources, { now: () => 42_000 });
}

describe('RuntimeMetrics gauges', () => {
  it('reads the sources at snapshot time, not at construction', async () => {
    const sources = fakeSources();
    const m = metrics(sources);
    const first = await m.snapshot();
    expect(first).toMatchObject({ queueDepth: { a: 3, b: 0 }, running: 2, freeSlots: 6, rebuildSeconds: 1.25, at: 42_000 });

    sources.agentMap = { b: { queued: 7, reserved: 0 }, c: { queued: 1, reserved: 0 } };
    sources.phases = { starting: 0, ready: 0, executing: 5 };
    sources.rebuild = 40;
    const second = await m.snapshot();
    // Agent `a` is gone: stale label values must not linger.
    expect(second.queueDepth).toEqual({ b: 7, c: 1 });
    expect(second).toMatchObject({ running: 5, freeSlots: 3, rebuildSeconds: 0.04 });
  });

  it('never reports negative free slots', async () => {
    const sources = fakeSources();
    sources.phases = { starting: 0, ready: 0, executing: 11 };
    const snap = await metrics(sources).snapshot();
    expect(snap.freeSlots).toBe(0);
    expect(snap.running).toBe(11);
  });

  it('takes `at` from the injected clock', async () => {
    let now = 5;
    const m = new RuntimeMetrics(fakeSources(), { now: () => now });
    expect((await m.snapshot()).at).toBe(5);
    now = 9;
    expect((await m.snapshot()).at).toBe(9);
  });
});

describe('RuntimeMetrics counters and histograms', () => {
  it('builds submit-to-start and start-to-settle histograms from events', async () => {
    const m = metrics();
    m.observe(started(0.5));
    m.observe(started(70));
    m.observe(started(2_000));
    m.observe(ended('task.done', 'success', 300));
    m.observe(ended('task.failed', 'error', 90_000));
    const { submitToStart, startToSettle } = (await m.snapshot()).latency;

    expect(submitToStart.count).toBe(3);
    expect(submitToStart.sum).toBeCloseTo(2.0705, 9);
    expect(submitToStart.buckets.map((b) => b.le)).toEqual(LATENCY_BUCKETS_SECONDS);
    const cumulative = (le: number) => submitToStart.buckets.find((b) => b.le === le)?.count;
    expect(cumulative(0.001)).toBe(1);
    expect(cumulative(0.05)).toBe(1);
    expect(cumulative(0.1)).toBe(2);
    expect(cumulative(2.5)).toBe(3);
    expect(cumulative(3600)).toBe(3);

    expect(startToSettle.count).toBe(2);
    expect(startToSettle.sum).toBeCloseTo(90.3, 9);
    expect(startToSettle.buckets.find((b) => b.le === 0.5)?.count).toBe(1);
    expect(startToSettle.buckets.find((b) => b.le === 60)?.count).toBe(1);
    expect(startToSettle.buckets.find((b) => b.le === 120)?.count).toBe(2);
  });

  it('estimates p50 and p99 from the buckets, null when empty', async () => {
    const m = metrics();
    let snap = await m.snapshot();
    expect(snap.latency.submitToStart).toMatchObject({ count: 0, p50: null, p99: null });

    for (let i = 0; i < 50; i++) m.observe(started(0.5)); // bucket (0, 0.001]
    for (let i = 0; i < 50; i++) m.observe(started(70)); // bucket (0.05, 0.1]
    snap = await m.snapshot();
    // Rank 50 is the last of the first bucket; rank 99 is 49/50 of the way through (0.05, 0.1].
    expect(snap.latency.submitToStart.p50).toBeCloseTo(0.001, 12);
    expect(snap.latency.submitToStart.p99).toBeCloseTo(0.099, 12);
    expect(snap.latency.startToSettle.p50).toBeNull();
  });

  it('reports the last finite bound for a quantile in the overflow bucket', async () => {
    const m = metrics();
    m.observe(ended('task.done', 'success', 2 * 3_600_000));
    const { startToSettle } = (await m.snapshot()).latency;
    expect(startToSettle.p50).toBe(3600);
    expect(startToSettle.p99).toBe(3600);
    expect(startToSettle.sum).toBe(7200);
  });

  it('counts attempts by exit, with every known exit present from the start', async () => {
    const m = metrics();
    expect((await m.snapshot()).attemptsByExit).toEqual({
      success: 0,
      fork: 0,
      fail: 0,
      error: 0,
      timeout: 0,
      lease_expired: 0,
      cancelled: 0,
      crashed: 0,
      interrupted: 0,
    });
    m.observe(ended('task.done', 'success', 10));
    m.observe(ended('task.done', 'success', 10));
    m.observe(ended('task.retrying', 'timeout', 10));
    m.observe(ended('task.sleeping', 'fork', 10));
    m.observe(ended('task.dropped', 'crashed', 10));
    m.observe(ended('task.cancelled', 'cancelled', 10));
    m.observe(ev('task.queued', { reason: 'interrupted', exit: 'interrupted', attemptMs: 10 }));
    m.observe(ev('task.queued', { reason: 'killed', exit: 'interrupted', attemptMs: 10 }));
    const snap = await m.snapshot();
    expect(snap.attemptsByExit).toMatchObject({ success: 2, timeout: 1, fork: 1, crashed: 1, cancelled: 1, interrupted: 2, fail: 0 });
    expect(snap.latency.startToSettle.count).toBe(8);
  });

  it('ignores events without an exit and attemptMs, and event types that do not end attempts', async () => {
    const m = metrics();
    m.observe(ev('task.cancelled', { reason: 'user' }));
    m.observe(ev('task.dropped'));
    m.observe(ev('task.queued', { reason: 'submit' }));
    m.observe(ev('task.done', { exit: 'success' }));
    m.observe(ev('task.failed', { attemptMs: 5 }));
    m.observe(ev('task.done', { exit: 'success', attemptMs: Number.NaN }));
    m.observe(ev('task.started', { run: 1, attempt: 1 }));
    m.observe(ev('task.progress', { exit: 'success', attemptMs: 5, queuedMs: 5 }));
    m.observe(ev('task.starved', { queuedMs: 5 }));
    const snap = await m.snapshot();
    expect(Object.values(snap.attemptsByExit).every((n) => n === 0)).toBe(true);
    expect(snap.latency.startToSettle.count).toBe(0);
    expect(snap.latency.submitToStart.count).toBe(0);
  });

  it('counts AT_CAPACITY rejections', async () => {
    const m = metrics();
    expect((await m.snapshot()).atCapacityRejections).toBe(0);
    m.rejected();
    m.rejected();
    expect((await m.snapshot()).atCapacityRejections).toBe(2);
  });

  it('counts listener errors from its source, in the snapshot and the exposition', async () => {
    const sources = fakeSources();
    const m = metrics(sources);
    expect((await m.snapshot()).listenerErrors).toBe(0);
    sources.listenerFailures = 3;
    expect((await m.snapshot()).listenerErrors).toBe(3);
    expect(await m.prometheus()).toContain('troupe_listener_errors_total 3');
  });

  it('says whether the store is stopped, in the snapshot and the exposition', async () => {
    const sources = fakeSources();
    const m = metrics(sources);
    expect((await m.snapshot()).storeStopped).toBe(0);
    expect(await m.prometheus()).toContain('troupe_store_stopped 0');
    sources.stopped = true;
    expect((await m.snapshot()).storeStopped).toBe(1);
    expect(await m.prometheus()).toContain('troupe_store_stopped 1');
  });

  it('keeps each instance on its own registry', async () => {
    const one = metrics();
    const two = metrics();
    one.rejected();
    one.observe(ended('task.done', 'success', 10));
    const snap = await two.snapshot();
    expect(snap.atCapacityRejections).toBe(0);
    expect(snap.attemptsByExit.success).toBe(0);
    expect((await one.snapshot()).atCapacityRejections).toBe(1);
    expect(await globalRegistry.metrics()).not.toContain('troupe_');
  });
});

describe('RuntimeMetrics Prometheus text', () => {
  it('exposes HELP, TYPE and labelled samples under the prefix', async () => {
    const m = metrics();
    m.rejected();
    m.observe(started(70));
    m.observe(ended('task.done', 'success', 300));
    const text = await m.prometheus();
    const lines = text.split('\n');

    expect(lines).toContain('# TYPE troupe_queue_depth gauge');
    expect(lines.some((l) => l.startsWith('# HELP troupe_queue_depth '))).toBe(true);
    expect(lines).toContain('# TYPE troupe_submit_to_start_seconds histogram');
    expect(lines).toContain('# TYPE troupe_attempts_total counter');
    for (const name of ['attempts_running', 'slots_free', 'at_capacity_rejections_total', 'start_to_settle_seconds', 'rebuild_seconds']) {
      expect(lines.some((l) => l.startsWith(`# TYPE troupe_${name} `))).toBe(true);
    }

    const sample = (prefix: string) => {
      const line = lines.find((l) => l.startsWith(prefix + ' '));
      return line === undefined ? undefined : Number(line.slice(prefix.length + 1));
    };
    expect(sample('troupe_queue_depth{agent="a"}')).toBe(3);
    expect(sample('troupe_attempts_total{exit="success"}')).toBe(1);
    expect(sample('troupe_attempts_total{exit="crashed"}')).toBe(0);
    expect(sample('troupe_at_capacity_rejections_total')).toBe(1);
    expect(sample('troupe_submit_to_start_seconds_bucket{le="0.05"}')).toBe(0);
    expect(sample('troupe_submit_to_start_seconds_bucket{le="0.1"}')).toBe(1);
    expect(sample('troupe_submit_to_start_seconds_count')).toBe(1);
    expect(sample('troupe_slots_free')).toBe(6);
    expect(m.contentType).toMatch(/^text\/plain; version=0\.0\.4/);
  });

  it('honours a custom prefix', async () => {
    const text = await new RuntimeMetrics(fakeSources(), { prefix: 'x_' }).prometheus();
    expect(text).toContain('# TYPE x_attempts_running gauge');
    expect(text).not.toContain('troupe_');
  });
});

describe('RuntimeMetrics.serve', () => {
  const open: Array<{ close(): Promise<void> }> = [];
  afterEach(async () => {
    await Promise.all(open.splice(0).map((s) => s.close()));
  });

  it('serves GET /metrics on 127.0.0.1 and rejects other paths and methods', async () => {
    const sources = fakeSources();
    const m = metrics(sources);
    const server = await m.serve(0);
    open.push(server);
    expect(server.port).toBeGreaterThan(0);
    const base = `http://127.0.0.1:${server.port}`;

    let res = await fetch(`${base}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe(m.contentType);
    expect(await res.text()).toContain('troupe_queue_depth{agent="a"} 3');

    // Rendered per scrape: a change in the sources shows up on the next request.
    sources.agentMap = { a: { queued: 9, reserved: 0 } };
    expect(await (await fetch(`${base}/metrics?x=1`)).text()).toContain('troupe_queue_depth{agent="a"} 9');

    res = await fetch(`${base}/other`);
    expect(res.status).toBe(404);
    await res.body?.cancel();
    res = await fetch(`${base}/metrics`, { method: 'POST', body: 'x' });
    expect(res.status).toBe(405);
    expect(res.headers.get('allow')).toBe('GET');
    await res.body?.cancel();
  });

  it('binds loopback only', async () => {
    const server = await metrics().serve(0);
    open.push(server);
    expect(await canConnect('127.0.0.1', server.port)).toBe(true);
    // Every 127/8 address reaches `lo` on Linux, so a wildcard bind would accept on 127.0.0.2 too;
    // likewise any address of a non-loopback interface.
    const others = Object.values(networkInterfaces())
      .flat()
      .filter((i) => i !== undefined && i.family === 'IPv4' && !i.internal)
      .map((i) => i!.address);
    for (const host of ['127.0.0.2', ...others]) expect(await canConnect(host, server.port)).toBe(false);
  });

  it('frees the port on close', async () => {
    const server = await metrics().serve(0);
    await (await fetch(`http://127.0.0.1:${server.port}/metrics`)).text();
    await server.close();
    await server.close();
    expect(await canConnect('127.0.0.1', server.port)).toBe(false);
    // The same port can be bound again.
    const again = await metrics().serve(server.port);
    open.push(again);
    expect(again.port).toBe(server.port);
  });

  it('rejects an invalid port', async () => {
    await expect(metrics().serve(-1)).rejects.toThrow(/metrics port/);
  });
});

function canConnect(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host, port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}
