import { Histogram, Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { LatencyHistogram } from '../../src/metrics/latency-histogram.js';

const BUCKETS = [0.001, 0.005, 0.1, 1, 60];
// On a bound, above every bound, zero, and in between.
const VALUES = [0, 0.0005, 0.001, 0.002, 0.005, 0.05, 0.1, 0.99, 1, 30, 60, 61, 3600];

async function exposition(make: (registers: Registry[]) => { observe(value: number): void }, values: number[]): Promise<string> {
  const registry = new Registry();
  const histogram = make([registry]);
  for (const value of values) histogram.observe(value);
  return registry.metrics();
}

describe('LatencyHistogram', () => {
  it('exposes exactly what a prom-client Histogram exposes for the same values', async () => {
    const ours = await exposition((registers) => new LatencyHistogram({ name: 'x_seconds', help: 'h', buckets: BUCKETS, registers }), VALUES);
    const theirs = await exposition((registers) => new Histogram({ name: 'x_seconds', help: 'h', buckets: [...BUCKETS], registers }), VALUES);
    expect(ours).toBe(theirs);
    expect(ours).toContain('x_seconds_bucket{le="0.001"} 3');
    expect(ours).toContain('x_seconds_bucket{le="+Inf"} 13');
  });

  it('record() and observe() count the same way; non-finite values are ignored', async () => {
    const registry = new Registry();
    const histogram = new LatencyHistogram({ name: 'y_seconds', help: 'h', buckets: BUCKETS, registers: [registry] });
    histogram.record(0.002);
    histogram.observe(0.002);
    histogram.record(Number.NaN);
    histogram.record(Number.POSITIVE_INFINITY);
    const { values } = await histogram.get();
    const count = values.find((v) => v.metricName === 'y_seconds_count');
    const sum = values.find((v) => v.metricName === 'y_seconds_sum');
    const le5ms = values.find((v) => v.metricName === 'y_seconds_bucket' && v.labels.le === 0.005);
    expect(count?.value).toBe(2);
    expect(sum?.value).toBeCloseTo(0.004, 10);
    expect(le5ms?.value).toBe(2);
  });

  it('reset() zeroes it', async () => {
    const histogram = new LatencyHistogram({ name: 'z_seconds', help: 'h', buckets: BUCKETS, registers: [] });
    histogram.record(0.5);
    histogram.reset();
    const { values } = await histogram.get();
    expect(values.every((v) => v.value === 0)).toBe(true);
  });
});
