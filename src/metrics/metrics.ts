/**
 * `rt.metrics()`: dispatch metrics as a plain snapshot and as Prometheus text. Counters and
 * latency histograms are fed from the committed event stream; gauges are read from the runtime
 * at snapshot or scrape time, so nothing is pushed on the dispatch path except two observations.
 */
import { Counter, Gauge, Registry } from 'prom-client';
import { LatencyHistogram } from './latency-histogram.js';
import { histogramSnapshot, single, type HistogramSnapshot } from './histogram-snapshot.js';
import { TASK_STATES, type AttemptExit, type TaskState } from '../../machines/index.js';
import { TroupeError } from '../errors.js';
import { checkCallOptions } from '../options.js';
import type { EventRecord } from '../store/records.js';
import { serveMetrics, type MetricsServer } from './server.js';

export type { HistogramSnapshot } from './histogram-snapshot.js';

/** Live numbers the runtime supplies on demand (gauges are read at snapshot/scrape time, not pushed). */
export interface MetricsSources {
  /** Per registered agent: tasks waiting in the governor and attempts reserved (starting/ready/executing). */
  agents(): Record<string, { queued: number; reserved: number }>;
  /** Attempts by phase. */
  attempts(): { starting: number; ready: number; executing: number };
  /** Agent slots (threads × slotsPerThread). */
  readonly slots: number;
  /** Duration of the last rebuild on open, ms. */
  rebuildMs(): number;
  /** Errors thrown (or promises rejected) by event listeners since the runtime opened. */
  listenerErrors(): number;
  /** Whether the store is stopped after a failed commit (see the README, "A full disk"). */
  storeStopped(): boolean;
  /**
   * The tasks by state, when the runtime has them to give (PostgreSQL: the cluster's, as last
   * counted; undefined before the first count). Without this source there is no tasks gauge.
   */
  tasks?(): Record<TaskState, number> | undefined;
}

/** Options of {@link RuntimeMetrics}. */
export interface RuntimeMetricsOptions {
  /** Clock for the snapshot's `at`, epoch ms. @default Date.now */
  now?: () => number;
  /** Prefix of every metric name. @default 'troupe_' */
  prefix?: string;
}

/** What `rt.metrics()` returns. */
export interface MetricsSnapshot {
  /** Tasks waiting in the governor, per registered agent. */
  queueDepth: Record<string, number>;
  /** Executing attempts. */
  running: number;
  /** Agent slots not executing an attempt: max(0, slots − executing). */
  freeSlots: number;
  /** Submits rejected with AT_CAPACITY since the runtime opened. */
  atCapacityRejections: number;
  /** Errors thrown (or promises rejected) by `rt.on` listeners since the runtime opened: logged, never passed on. */
  listenerErrors: number;
  /** 1 while the store is stopped after a failed commit and the runtime tries to open it again, else 0. */
  storeStopped: number;
  /** Submit (or requeue) to start, and start to settle, in seconds. */
  latency: { submitToStart: HistogramSnapshot; startToSettle: HistogramSnapshot };
  /** Ended attempts by exit; every known exit is present, at 0 until one ends that way. */
  attemptsByExit: Record<string, number>;
  /** Duration of the last rebuild on open, seconds. */
  rebuildSeconds: number;
  /**
   * PostgreSQL only: every task of the cluster by state, as last counted in the background (the
   * counts of `stats().tasks`); `{}` before the first count. Absent on LMDB.
   */
  tasks?: Partial<Record<TaskState, number>>;
  /** When the snapshot was taken, epoch ms. */
  at: number;
}

/**
 * Latency bucket bounds, seconds. Agents run from milliseconds to many minutes and tasks can queue
 * for as long, so the bounds span 1 ms to an hour, roughly ×2–×2.5 apart.
 */
export const LATENCY_BUCKETS_SECONDS: readonly number[] = Object.freeze([
  0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600,
]);

// A Record rather than a list so the compiler flags an exit added to AttemptExit but not here.
const KNOWN_EXITS: Record<AttemptExit, true> = {
  success: true,
  fork: true,
  fail: true,
  error: true,
  timeout: true,
  lease_expired: true,
  cancelled: true,
  crashed: true,
  interrupted: true,
};

type ExitCounter = ReturnType<Counter<'exit'>['labels']>;

/**
 * Dispatch metrics of one runtime, on a private prom-client registry so that several runtimes in
 * one process never mix their numbers (prom-client's global registry is never touched).
 */
export class RuntimeMetrics {
  readonly #registry = new Registry();
  readonly #now: () => number;
  readonly #queueDepth: Gauge<'agent'>;
  readonly #running: Gauge;
  readonly #slotsFree: Gauge;
  readonly #rejections: Counter;
  readonly #listenerErrors: Counter;
  readonly #storeStopped: Gauge;
  readonly #submitToStart: LatencyHistogram;
  readonly #startToSettle: LatencyHistogram;
  readonly #attempts: Counter<'exit'>;
  readonly #rebuild: Gauge;
  readonly #tasks: Gauge<'state'> | undefined;
  // Bound children per exit: binding once avoids a labels object per count.
  readonly #exitChildren = new Map<string, ExitCounter>();
  /** Observations not yet in the prom-client metrics (they are moved there when read). */
  readonly #pending = new PendingObservations();

  /** Registers the metrics; no timers, no I/O. */
  constructor(sources: MetricsSources, options: RuntimeMetricsOptions = {}) {
    const prefix = options.prefix ?? 'troupe_';
    const registers = [this.#registry];
    this.#now = options.now ?? Date.now;

    this.#queueDepth = new Gauge({
      name: `${prefix}queue_depth`,
      help: 'Tasks waiting in the governor for a slot, per agent.',
      labelNames: ['agent'],
      registers,
      collect() {
        // Reset first so an agent that is no longer registered drops out instead of going stale.
        this.reset();
        for (const [agent, { queued }] of Object.entries(sources.agents())) this.set({ agent }, queued);
      },
    });
    this.#running = new Gauge({
      name: `${prefix}attempts_running`,
      help: 'Attempts executing on an agent thread.',
      registers,
      collect() {
        this.set(sources.attempts().executing);
      },
    });
    this.#slotsFree = new Gauge({
      name: `${prefix}slots_free`,
      help: 'Agent slots (threads × slotsPerThread) not executing an attempt.',
      registers,
      collect() {
        this.set(Math.max(0, sources.slots - sources.attempts().executing));
      },
    });
    this.#rejections = new Counter({
      name: `${prefix}at_capacity_rejections_total`,
      help: 'Submits rejected with AT_CAPACITY.',
      registers,
    });
    this.#listenerErrors = new Counter({
      name: `${prefix}listener_errors_total`,
      help: 'Errors thrown (or promises rejected) by event listeners; each is logged and goes no further.',
      registers,
      collect() {
        this.reset();
        this.inc(sources.listenerErrors());
      },
    });
    this.#storeStopped = new Gauge({
      name: `${prefix}store_stopped`,
      help: 'Whether the store is stopped after a failed commit (a full disk) while the runtime tries to open it again: 1 or 0.',
      registers,
      collect() {
        this.set(sources.storeStopped() ? 1 : 0);
      },
    });
    const pending = this.#pending;
    this.#submitToStart = new LatencyHistogram({
      name: `${prefix}submit_to_start_seconds`,
      help: 'Time from a task entering queued (submit, retry or requeue) to its attempt starting.',
      buckets: LATENCY_BUCKETS_SECONDS,
      registers,
    });
    this.#startToSettle = new LatencyHistogram({
      name: `${prefix}start_to_settle_seconds`,
      help: 'Time from an attempt starting to its end, whatever the exit.',
      buckets: LATENCY_BUCKETS_SECONDS,
      registers,
    });
    this.#attempts = new Counter({
      name: `${prefix}attempts_total`,
      help: 'Ended attempts by exit.',
      labelNames: ['exit'],
      registers,
      collect: () => pending.flush(),
    });
    this.#pending.into((exit, n) => this.#exitChild(exit).inc(n));
    this.#rebuild = new Gauge({
      name: `${prefix}rebuild_seconds`,
      help: 'Duration of the last rebuild of in-memory state on open.',
      registers,
      collect() {
        this.set(sources.rebuildMs() / 1000);
      },
    });
    const tasks = sources.tasks;
    this.#tasks =
      tasks &&
      new Gauge({
        name: `${prefix}tasks`,
        help: 'Tasks by state, as last counted (PostgreSQL: every task of the cluster, counted in the background).',
        labelNames: ['state'],
        registers,
        collect() {
          this.reset();
          const counts = tasks();
          if (counts) for (const state of TASK_STATES) this.set({ state }, counts[state]);
        },
      });
    // Known exits start at 0 so a rate() over them works before the first attempt of that kind ends.
    for (const exit of Object.keys(KNOWN_EXITS)) this.#exitChild(exit).inc(0);
  }

  /**
   * Feeds one committed event (the runtime subscribes this to `'*'`). Runs per event on the
   * dispatch path, so it only reads fields and calls prom-client's observe/inc; it never throws.
   */
  observe(event: EventRecord): void {
    const data = event.data;
    if (data === undefined) return;
    switch (event.type) {
      case 'task.started': {
        const queuedMs = data.queuedMs;
        if (typeof queuedMs === 'number') this.started(queuedMs);
        return;
      }
      case 'task.done':
      case 'task.failed':
      case 'task.dropped':
      case 'task.cancelled':
      case 'task.retrying':
      case 'task.sleeping':
      // An attempt interrupted while its task waits (detached): the task stays waiting.
      case 'task.waiting':
      case 'task.queued': {
        // Only events that end an attempt carry both; cancelling or dropping a queued task does not.
        const exit = data.exit;
        const attemptMs = data.attemptMs;
        if (typeof exit !== 'string' || typeof attemptMs !== 'number') return;
        this.ended(exit, attemptMs);
        return;
      }
      default:
        return;
    }
  }

  /** Counts an attempt started after its task was queued for `queuedMs` (ignored unless finite). */
  started(queuedMs: number): void {
    if (Number.isFinite(queuedMs)) this.#submitToStart.record(Math.max(0, queuedMs) / 1000);
  }

  /** Counts an attempt ended with `exit` after `attemptMs` from its start (ignored unless finite). */
  ended(exit: string, attemptMs: number): void {
    if (!Number.isFinite(attemptMs)) return;
    this.#startToSettle.record(Math.max(0, attemptMs) / 1000);
    this.#pending.ended(exit);
  }

  /** Counts a submit rejected with AT_CAPACITY. */
  rejected(): void {
    this.#rejections.inc();
  }

  /** Reads every metric now (gauges from the sources) into plain data. */
  async snapshot(): Promise<MetricsSnapshot> {
    const at = this.#now();
    const [queue, running, free, rejections, listenerErrors, storeStopped, submitToStart, startToSettle, attempts, rebuild] = await Promise.all([
      this.#queueDepth.get(),
      this.#running.get(),
      this.#slotsFree.get(),
      this.#rejections.get(),
      this.#listenerErrors.get(),
      this.#storeStopped.get(),
      histogramSnapshot(this.#submitToStart),
      histogramSnapshot(this.#startToSettle),
      this.#attempts.get(),
      this.#rebuild.get(),
    ]);
    const tasks = this.#tasks && (await this.#tasks.get());
    const queueDepth: Record<string, number> = {};
    for (const v of queue.values) queueDepth[String(v.labels.agent)] = v.value;
    const attemptsByExit: Record<string, number> = {};
    for (const v of attempts.values) attemptsByExit[String(v.labels.exit)] = v.value;
    return {
      queueDepth,
      running: single(running.values),
      freeSlots: single(free.values),
      atCapacityRejections: single(rejections.values),
      listenerErrors: single(listenerErrors.values),
      storeStopped: single(storeStopped.values),
      latency: { submitToStart, startToSettle },
      attemptsByExit,
      rebuildSeconds: single(rebuild.values),
      ...(tasks && { tasks: Object.fromEntries(tasks.values.map((v) => [String(v.labels.state), v.value])) }),
      at,
    };
  }

  /** Prometheus exposition text of this runtime's registry; serve it with {@link contentType}. */
  prometheus(): Promise<string> {
    return this.#registry.metrics();
  }

  /** Content type of {@link prometheus}'s text. */
  get contentType(): string {
    return this.#registry.contentType;
  }

  /**
   * Serves GET /metrics (Prometheus text) on 127.0.0.1:port (0 = any free port); other paths 404,
   * other methods 405. Resolves with the bound port once listening; close() stops it.
   */
  serve(port: number): Promise<MetricsServer> {
    return serveMetrics({ render: () => this.prometheus(), contentType: this.contentType }, port);
  }

  #exitChild(exit: string): ExitCounter {
    let child = this.#exitChildren.get(exit);
    if (child === undefined) {
      child = this.#attempts.labels(exit);
      this.#exitChildren.set(exit, child);
    }
    return child;
  }
}

/**
 * Ended attempts counted on the dispatch path, held as numbers per exit until the counter is read
 * (or enough have gathered): prom-client's `inc()` on a labelled child allocated on every call.
 * A read drains it first (the counter's `collect`), so it sees every attempt ended before it.
 */
class PendingObservations {
  /** Ended attempts by exit since the last flush. */
  readonly #exits = new Map<string, number>();
  #held = 0;
  #count: ((exit: string, n: number) => void) | undefined;

  into(count: (exit: string, n: number) => void): void {
    this.#count = count;
  }

  ended(exit: string): void {
    this.#exits.set(exit, (this.#exits.get(exit) ?? 0) + 1);
    if (++this.#held === 4_096) this.flush();
  }

  flush(): void {
    const count = this.#count;
    if (!count) return;
    for (const [exit, n] of this.#exits) if (n > 0) count(exit, n);
    // The keys stay (a handful of exits), so flushing does not churn the map.
    for (const exit of this.#exits.keys()) this.#exits.set(exit, 0);
    this.#held = 0;
  }
}

/**
 * The format `rt.metrics(options)` asks for, checked the same on either store: INVALID_OPTIONS
 * for an option it does not know or a format other than 'prometheus' or 'snapshot'.
 */
export function checkMetricsOptions(options: unknown): 'prometheus' | 'snapshot' {
  checkCallOptions(options, ['format'], 'metrics');
  const format = (options as { format?: unknown } | undefined)?.format ?? 'snapshot';
  if (format !== 'prometheus' && format !== 'snapshot') throw new TroupeError('INVALID_OPTIONS', `metrics: format must be 'prometheus' or 'snapshot', not ${JSON.stringify(format)}`);
  return format;
}
