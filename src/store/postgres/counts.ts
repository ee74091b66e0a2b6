/**
 * The cluster's tasks counted by agent and state, for `rt.stats()` (src/cluster/task-counts.ts).
 *
 * What each count costs decides how often it is taken. Queued and running tasks are counted from
 * the partial indexes that claims and limits read (`troupe_tasks_claim`, and the running tasks by
 * agent): an index-only scan of the tasks in flight, however many have settled (measured beside
 * 200,000 settled tasks without input or output: 0.09 ms). No index covers every task's state by
 * agent, on purpose: a claim or a settle writes no index entry it does not need, and one on
 * (agent, state) would take an entry on every change of state (retention's troupe_tasks_settled,
 * schema version 11, has settled tasks by state and settle time, not by agent). So counting the
 * settled states reads the whole table (105 ms on those 200,000 rows; more with wider rows).
 */
import type pg from 'pg';
import type { TaskState } from '../../../machines/index.js';
import { storeFailed } from './transaction.js';

/** The tasks of one agent in one state. */
export interface TaskCount {
  agent: string;
  state: TaskState;
  n: number;
}

/** The states {@link countActiveTasks} counts from indexes. */
export const ACTIVE_STATES: readonly TaskState[] = ['queued', 'running'];

/**
 * Queued and running tasks by agent. One branch per state, each with its partial index's exact
 * predicate: `state IN (...)` matches neither index, and reads the table.
 */
export const COUNT_ACTIVE = `SELECT agent, 'queued' AS state, count(*)::text AS n FROM troupe_tasks WHERE state = 'queued' GROUP BY agent
  UNION ALL
  SELECT agent, 'running', count(*)::text FROM troupe_tasks WHERE state = 'running' GROUP BY agent`;

/** Every task by agent and state, in one snapshot: a scan of the whole table. */
export const COUNT_ALL = 'SELECT agent, state, count(*)::text AS n FROM troupe_tasks GROUP BY agent, state';

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
    const { rows } = await pool.query<{ agent: string; state: TaskState; n: string }>(text);
    return rows.map((row) => ({ agent: row.agent, state: row.state, n: Number(row.n) }));
  } catch (error) {
    throw storeFailed(what, error);
  }
}
