/**
 * A latency histogram read into plain data for `rt.metrics()`: its buckets, and the median and 99th
 * percentile estimated from them as Prometheus's histogram_quantile does.
 */
import type { LatencyHistogram } from './latency-histogram.js';

/** One latency histogram in a `MetricsSnapshot` (metrics.ts), in seconds. */
export interface HistogramSnapshot {
  /** Observations. */
  count: number;
  /** Sum of the observations, seconds. */
  sum: number;
  /**
   * Cumulative counts per finite upper bound (`le`, seconds), as in Prometheus; observations
   * above the last bound appear only in `count`.
   */
  buckets: Array<{ le: number; count: number }>;
  /** Median estimated from the buckets; null with no observations. */
  p50: number | null;
  /** 99th percentile estimated from the buckets; null with no observations. */
  p99: number | null;
}

/** The value of a label-less metric (0 when it has none). */
export function single(values: ReadonlyArray<{ value: number }>): number {
  return values[0]?.value ?? 0;
}

/** Reads `histogram` into a {@link HistogramSnapshot}. */
export async function histogramSnapshot(histogram: LatencyHistogram): Promise<HistogramSnapshot> {
  const { values } = await histogram.get();
  const buckets: Array<{ le: number; count: number }> = [];
  let count = 0;
  let sum = 0;
  for (const v of values) {
    const name = v.metricName ?? '';
    if (name.endsWith('_bucket')) {
      if (typeof v.labels.le === 'number') buckets.push({ le: v.labels.le, count: v.value });
    } else if (name.endsWith('_sum')) {
      sum = v.value;
    } else if (name.endsWith('_count')) {
      count = v.value;
    }
  }
  return { count, sum, buckets, p50: quantile(buckets, count, 0.5), p99: quantile(buckets, count, 0.99) };
}

/**
 * Estimates a quantile from cumulative buckets the way Prometheus's histogram_quantile does:
 * linear inside the bucket holding the rank, the first bucket starting at 0, and a rank beyond
 * the last finite bound reported as that bound (nothing better is known about the overflow).
 */
function quantile(buckets: ReadonlyArray<{ le: number; count: number }>, count: number, q: number): number | null {
  if (count === 0) return null;
  const rank = q * count;
  let lower = 0;
  let below = 0;
  for (const { le, count: cumulative } of buckets) {
    if (cumulative >= rank) {
      const inBucket = cumulative - below;
      return inBucket === 0 ? le : lower + ((le - lower) * (rank - below)) / inBucket;
    }
    lower = le;
    below = cumulative;
  }
  return buckets.length === 0 ? null : lower;
}
