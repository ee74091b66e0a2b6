/**
 * The cluster's tasks counted by agent and state, for `rt.stats()` and `rt.metrics()`
 * (src/cluster/task-counts.ts).
 *
 * What each count costs decides how often it is taken. Queued and running tasks are counted from
 * the partial indexes that claims and limits read (`troupe_tasks_claim`, and the running tasks by
 * agent): a scan of the tasks in flight, however many have settled (measured beside 200,000
 * settled tasks without input or output, index-only, before the queued ones were split by
 * `run_at`: 0.09 ms). No index covers every task's state by
 * agent, on purpose: a claim or a settle writes no index entry it does not need, and one on
 * (agent, state) would take an entry on every change of state (retention's troupe_tasks_settled,
 * schema version 11, has settled tasks by state and settle time, not by agent). So counting the
 * settled states reads the whole table (105 ms on those 200,000 rows; more with wider rows).
 *
 * Queued tasks are split by `run_at`, as the claim sees them: due now, or delayed (a `delayMs` or
 * `runAt` still to come, a retry's backoff). No index has `run_at`, so the queued count reads the
 * rows of the queued tasks (never the settled ones), not the index alone. Measured beside 200,000
 * settled tasks: 10,000 queued 1.3 → 2.6 ms; 100,000 queued 14 → 95 ms (the planner reads the
 * table then). task-counts.ts spaces these counts by their duration, as it does the scans. An
 * index with `run_at` (a schema change, and an entry larger on every submit and claim) would keep
 * it index-only; not worth it for a count taken at most once a second.
 */
import type pg from 'pg';
import type { TaskState } from '../../../machines/index.js';
import { storeFailed } from './transaction.js';

/** The tasks of one agent in one state. */
export interface TaskCount {
  agent: string;
  state: TaskState;
  n: number;
  /** Of a queued count, the tasks whose `run_at` is still to come on the database's clock; 0 in the other states. */
  delayed: number;
}

/** The states {@link countActiveTasks} counts from indexes. */
export const ACTIVE_STATES: readonly TaskState[] = ['queued', 'running'];

/**
 * Queued and running tasks by agent. One branch per state, each with its partial index's exact
 * predicate: `state IN (...)` matches neither index, and reads the table.
 */
export const COUNT_ACTIVE = `SELECT agent, 'queued' AS state, count(*)::text AS n, count(*) FILTER (WHERE run_at > now())::text AS delayed
    FROM troupe_tasks WHERE state = 'queued' GROUP BY agent
  UNION ALL
  SELECT agent, 'running', count(*)::text, '0' FROM troupe_tasks WHERE state = 'running' GROUP BY agent`;

/** Every task by agent and state, in one snapshot: a scan of the whole table. */
export const COUNT_ALL = `SELECT agent, state, count(*)::text AS n, count(*) FILTER (WHERE run_at > now() AND state = 'queued')::text AS delayed
  FROM troupe_tasks GROUP BY agent, state`;

/** See {@link COUNT_ACTIVE}. */
export async function countActiveTasks(pool: Pick<pg.Pool, 'query'>): Promise<TaskCount[]> {
  return counts(pool, 'counting queued and running tasks', COUNT_ACTIVE);
}

/** See {@link COUNT_ALL}. */
export async function countAllTasks(pool: Pick<pg.Pool, 'query'>): Promise<TaskCount[]> {
  return counts(pool, 'counting tasks', COUNT_ALL);
}

async function counts(pool: Pick<pg.Pool, 'query'>, what: string, text: string): Promise<TaskCount[]> {
  try {
    const { rows } = await pool.query<{ agent: string; state: TaskState; n: string; delayed: string }>(text);
    return rows.map((row) => ({ agent: row.agent, state: row.state, n: Number(row.n), delayed: Number(row.delayed) }));
  } catch (error) {
    throw storeFailed(what, error);
  }
}
