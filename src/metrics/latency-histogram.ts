/**
 * A label-less prom-client Histogram whose counts live in a typed array. prom-client's own
 * `observe()` hashes a labels object and rewrites a heap number per call (about 330 bytes per
 * observation, two per task on the dispatch path); recording here allocates nothing. The registry
 * reads it like any Histogram: the same `_bucket`/`_sum`/`_count` series, cumulative, with `+Inf`.
 */
import { Histogram, type MetricObjectWithValues, type MetricValueWithName, type Registry } from 'prom-client';

type Values = MetricObjectWithValues<MetricValueWithName<string>>;

/** What the registry formats. (prom-client's typings name the type with an enum; at run time it is this string.) */
interface Exposition {
  name: string;
  help: string;
  type: 'histogram';
  values: Array<MetricValueWithName<string>>;
  aggregator: 'sum';
}

/** Options of {@link LatencyHistogram}. */
export interface LatencyHistogramOptions {
  name: string;
  help: string;
  /** Upper bounds, ascending. */
  buckets: readonly number[];
  registers: Registry[];
}

/** See the module comment. */
export class LatencyHistogram extends Histogram {
  readonly #bounds: Float64Array;
  /** Per bucket, not cumulative; the last cell counts values above every bound. */
  readonly #counts: Float64Array;
  #sum = 0;
  #count = 0;
  readonly #name: string;
  readonly #help: string;

  constructor(options: LatencyHistogramOptions) {
    super({ name: options.name, help: options.help, buckets: [...options.buckets], registers: options.registers });
    this.#name = options.name;
    this.#help = options.help;
    this.#bounds = Float64Array.from(options.buckets);
    this.#counts = new Float64Array(options.buckets.length + 1);
    // prom-client's constructor sets `observe` on the instance; route it here.
    Object.defineProperty(this, 'observe', { value: (value: unknown) => this.record(value as number), writable: true, configurable: true });
  }

  /** Counts one value (seconds). Non-finite values are ignored. */
  record(value: number): void {
    if (!Number.isFinite(value)) return;
    const bounds = this.#bounds;
    let i = 0;
    while (i < bounds.length && value > bounds[i]!) i++;
    this.#counts[i]!++;
    this.#sum += value;
    this.#count++;
  }

  override reset(): void {
    // prom-client's constructor calls this before this class's fields exist.
    if (!(#counts in this)) return super.reset();
    this.#counts.fill(0);
    this.#sum = 0;
    this.#count = 0;
  }

  override async get(): Promise<Values> {
    return (await this.getForPromString()) as unknown as Values;
  }

  /** What the registry formats (prom-client calls this in preference to `get`). */
  async getForPromString(): Promise<Exposition> {
    const name = this.#name;
    const bucket = `${name}_bucket`;
    const values: Array<MetricValueWithName<string>> = [];
    let cumulative = 0;
    for (let i = 0; i < this.#bounds.length; i++) {
      cumulative += this.#counts[i]!;
      values.push({ labels: { le: this.#bounds[i]! }, value: cumulative, metricName: bucket });
    }
    values.push(
      { labels: { le: '+Inf' }, value: this.#count, metricName: bucket },
      { labels: {}, value: this.#sum, metricName: `${name}_sum` },
      { labels: {}, value: this.#count, metricName: `${name}_count` },
    );
    return { name, help: this.#help, type: 'histogram', values, aggregator: 'sum' };
  }
}
