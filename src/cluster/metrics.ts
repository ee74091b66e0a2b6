/**
 * `rt.metrics()` on PostgreSQL: the LMDB runtime's metrics (src/metrics/metrics.ts: the same
 * snapshot and Prometheus names, on a private registry) filled with what one runtime of a cluster
 * knows. Its own node's attempts are counted as the node claims and settles them (an
 * {@link AttemptObserver}: a histogram slot and a counter, nothing more on those paths):
 * submit→start from each claim's `queuedMs` (the database's clock), start→settle and the ended
 * attempts by exit from each end the node settled (a stale end, taken back by a sweeper, is not
 * its to count). Its slots, executing attempts and listener errors are its own. The cluster's
 * queue depth per agent (queued tasks due to run) and its tasks by state (the `tasks` field and
 * the `troupe_tasks{state}` gauge, PostgreSQL only) come from the background counts of `stats()`
 * (task-counts.ts), a count due now awaited for up to {@link COUNT_WAIT_MS}. AT_CAPACITY
 * rejections are this runtime's: its submits and its node's spawns refused by the cluster's
 * `maxQueued` (src/store/postgres/admission.ts). What has no meaning on PostgreSQL is zero:
 * `storeStopped` (no store stops and reopens there: a query that fails, fails its call).
 */
import type { Clock } from '../clock.js';
import { isTroupeError } from '../errors.js';
import { RuntimeMetrics, type MetricsSnapshot } from '../metrics/metrics.js';
import { serveMetrics, type MetricsServer } from '../metrics/server.js';
import type { AttemptObserver } from './options.js';
import type { TaskCounts, TaskCountsView } from './task-counts.js';

/** The longest a read waits for the task count it started (ms); past it, the counts as last taken. */
const COUNT_WAIT_MS = 2_000;

/** What {@link ClusterMetrics} reads. */
export interface ClusterMetricsSources {
  /** This runtime's slots (threads × slotsPerThread). */
  slots: number;
  clock: Clock;
  counts: TaskCounts;
  /** The agents this runtime registered. */
  agents(): readonly string[];
  /** Attempts of this runtime's node not yet ended (as `stats().attempts.executing`). */
  executing(): number;
  /** How long the start took (ms): `rebuildSeconds`, as `stats().rebuild.ms`. */
  startedMs(): number;
  /** Errors thrown by `rt.on` listeners so far. */
  listenerErrors(): number;
}

/** See the module comment. */
export class ClusterMetrics {
  readonly #metrics: RuntimeMetrics;
  readonly #counts: TaskCounts;
  /** The counts the read under way shows. */
  #view: TaskCountsView | undefined;
  /** Given to the node (runtime-node.ts). */
  readonly observer: AttemptObserver;

  constructor(s: ClusterMetricsSources) {
    this.#counts = s.counts;
    this.#metrics = new RuntimeMetrics(
      {
        agents: () => this.#queueDepth(s.agents()),
        attempts: () => ({ starting: 0, ready: 0, executing: s.executing() }),
        slots: s.slots,
        rebuildMs: () => s.startedMs(),
        listenerErrors: () => s.listenerErrors(),
        storeStopped: () => false,
        tasks: () => this.#view?.tasks,
      },
      { now: () => s.clock.now() },
    );
    const metrics = this.#metrics;
    this.observer = {
      started: (queuedMs) => metrics.started(queuedMs),
      ended: (exit, attemptMs) => metrics.ended(exit, attemptMs),
      refused: () => metrics.rejected(),
    };
  }

  /** Rethrows a submit's error, counting an AT_CAPACITY refusal first. */
  readonly counted = (error: unknown): never => {
    if (isTroupeError(error, 'AT_CAPACITY')) this.#metrics.rejected();
    throw error;
  };

  /** A snapshot, or the Prometheus text, after the task count due now (see the module comment). */
  async read(format: 'prometheus' | 'snapshot'): Promise<MetricsSnapshot | string> {
    this.#view = await this.#counts.fresh(COUNT_WAIT_MS);
    return format === 'prometheus' ? this.#metrics.prometheus() : this.#metrics.snapshot();
  }

  /**
   * Serves `/metrics` on 127.0.0.1:`port` as the LMDB runtime does (src/metrics/server.ts): each
   * scrape is {@link read}'s Prometheus text, after the task count due then.
   */
  serve(port: number): Promise<MetricsServer> {
    return serveMetrics({ render: () => this.read('prometheus') as Promise<string>, contentType: this.#metrics.contentType }, port);
  }

  /** Per agent (this runtime's, and every other with tasks counted), the queued tasks due to run. */
  #queueDepth(registered: readonly string[]): Record<string, { queued: number; reserved: number }> {
    const view = this.#view;
    const depth: Record<string, { queued: number; reserved: number }> = {};
    for (const agent of new Set([...registered, ...Object.keys(view?.agents ?? {})])) {
      const queued = (view?.agents[agent]?.queued ?? 0) - (view?.delayed.agents[agent] ?? 0);
      depth[agent] = { queued, reserved: 0 };
    }
    return depth;
  }
}
