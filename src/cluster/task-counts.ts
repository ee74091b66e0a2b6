/**
 * `rt.stats().tasks`, `stats().queued` / `delayed` and their per-agent counts, and the tasks of
 * `rt.metrics()`, on PostgreSQL: every task of the cluster by state, as on LMDB, and the queued
 * ones split into due and delayed. `stats()` is synchronous and the counts are the database's, so
 * a call shows the counts as last taken and, when they are due, starts the next count in the
 * background (`metrics()`, which is async, waits a little for it). Nothing is counted until the
 * first call (which shows no counts yet), nor while no one calls.
 *
 * How fresh they are, and why (src/store/postgres/counts.ts has what each count costs): queued and
 * running tasks are counted from their partial indexes, cheap however many tasks have settled (the
 * queued rows themselves are read for their `run_at`), at most once every {@link COUNT_EVERY_MS}
 * and no sooner than {@link SCAN_SHARE} times the last such count took (a backlog of 100,000
 * queued tasks took about 95 ms: every 2 s). The settled states need a scan of the whole table: they
 * are counted, with every other state in the same snapshot, at most every {@link COUNT_EVERY_MS}
 * or {@link SCAN_SHARE} times as long as the last scan took, whichever is longer, so however
 * often stats() is called, its scans keep one connection of the runtime's pool busy for no more
 * than 1 / SCAN_SHARE of the time. Between two scans the settled counts lag the queued and running ones (a task
 * that settled since the scan is counted in neither).
 */
import type pg from 'pg';
import { TASK_STATES, type TaskState } from '../../machines/index.js';
import type { Logger } from '../log.js';
import { within } from '../within.js';
import { ACTIVE_STATES, countActiveTasks, countAllTasks, type TaskCount } from '../store/postgres/counts.js';

/** The shortest time between two counts (ms). */
const COUNT_EVERY_MS = 1_000;
/** A scan of the table waits at least this many times its last duration after it started. */
const SCAN_SHARE = 20;

/** Every task by state, and each agent's non-zero counts by state. */
export interface TaskCountsView {
  tasks: Record<TaskState, number>;
  agents: Record<string, Partial<Record<TaskState, number>>>;
  /**
   * Of the queued tasks (counted in `tasks` and `agents` too), those whose `run_at` was still to
   * come when counted (a `delayMs` or `runAt`, a retry's backoff): in all, and per agent (non-zero only).
   */
  delayed: { total: number; agents: Record<string, number> };
}

/** See the module comment. */
export class TaskCounts {
  readonly #pool: Pick<pg.Pool, 'query'>;
  readonly #log: Logger;
  readonly #now: () => number;
  /** Queued and running tasks, from the last count. */
  #active: TaskCount[] = [];
  /** Tasks in the other states, from the last scan; undefined before the first. */
  #settled: TaskCount[] | undefined;
  /** When the last count and the last scan started, and how long the last count and scan took (ms, on `now`). */
  #countedAt = -Infinity;
  #scannedAt = -Infinity;
  #countMs = 0;
  #scanMs = 0;
  #counting: Promise<void> | undefined;
  #stopped = false;

  /** `now` is a monotonic clock in ms (performance.now(); a test's own). */
  constructor(pool: Pick<pg.Pool, 'query'>, log: Logger, now: () => number = () => performance.now()) {
    this.#pool = pool;
    this.#log = log;
    this.#now = now;
  }

  /** The counts as last taken (undefined before the first scan answered); starts the next count when due. */
  current(): TaskCountsView | undefined {
    this.#countIfDue();
    return this.#view();
  }

  /**
   * The counts after the count that is due now, if one is (metrics(): a scrape sees counts taken
   * for it, not at the scrape before), waiting for it no longer than `waitMs`: past that, or
   * when the count fails, the counts as last taken.
   */
  async fresh(waitMs: number): Promise<TaskCountsView | undefined> {
    this.#countIfDue();
    const counting = this.#counting;
    if (counting) {
      await within(waitMs, counting, true);
    }
    return this.#view();
  }

  #view(): TaskCountsView | undefined {
    if (!this.#settled) return undefined;
    const tasks = Object.fromEntries(TASK_STATES.map((state) => [state, 0])) as Record<TaskState, number>;
    const agents: TaskCountsView['agents'] = {};
    const delayed: TaskCountsView['delayed'] = { total: 0, agents: {} };
    for (const { agent, state, n, delayed: later } of [...this.#settled, ...this.#active]) {
      tasks[state] += n;
      const counts = (agents[agent] ??= {});
      counts[state] = (counts[state] ?? 0) + n;
      if (later > 0) {
        delayed.total += later;
        delayed.agents[agent] = (delayed.agents[agent] ?? 0) + later;
      }
    }
    return { tasks, agents, delayed };
  }

  /** Counts nothing more; resolves once a count under way is over (close). */
  async stop(): Promise<void> {
    this.#stopped = true;
    await this.#counting;
  }

  #countIfDue(): void {
    const now = this.#now();
    if (this.#stopped || this.#counting || now - this.#countedAt < Math.max(COUNT_EVERY_MS, SCAN_SHARE * this.#countMs)) return;
    const scan = now - this.#scannedAt >= Math.max(COUNT_EVERY_MS, SCAN_SHARE * this.#scanMs);
    this.#countedAt = now;
    if (scan) this.#scannedAt = now;
    this.#counting = this.#count(scan)
      // The counts stay as they were; the next call after COUNT_EVERY_MS tries again.
      .catch((error: unknown) => this.#log.warn({ err: error }, 'counting the tasks for stats() failed'))
      .finally(() => (this.#counting = undefined));
  }

  async #count(scan: boolean): Promise<void> {
    const started = this.#now();
    if (!scan) {
      this.#active = await countActiveTasks(this.#pool);
      this.#countMs = this.#now() - started;
      return;
    }
    const rows = await countAllTasks(this.#pool);
    this.#scanMs = this.#now() - started;
    this.#active = rows.filter((row) => ACTIVE_STATES.includes(row.state));
    this.#settled = rows.filter((row) => !ACTIVE_STATES.includes(row.state));
  }
}
