/**
 * What agents report with `ctx.progress`, on PostgreSQL (schema version 20): stored by the node
 * that runs the attempt, a turn's reports in one statement fenced by each attempt's token, as its
 * log lines are (logs.ts). Each report is a `task.progress` event `{ value, message }`, and the
 * latest one of a task is its row's `progress` `{ value, message?, at }` (at: the agent's clock),
 * which get, list and wait show, as the LMDB runtime's progress step (src/steps/progress.ts)
 * does. A retry of a settled task clears it (tasks.ts retryTask); settles, requeues and wakes
 * keep it, as on LMDB.
 */
import type pg from 'pg';
import { checkLease, invalid, staleLeases, type Lease } from './checks.js';
import { insertEvents, notifyIfAny } from './events.js';
import { storeFailed } from './transaction.js';

/** One report to store: its attempt (task, token, id) and what it said. */
export interface ProgressWrite extends Lease {
  attemptId: string;
  /** How far, 0..1. */
  value: number;
  message?: string;
  /** When the agent reported it (epoch ms, its thread's clock). */
  at: number;
}

/** What {@link writeProgress} did: the reports it stored, and the attempts that are no longer current (none of their reports stored). */
export interface ProgressWriteResult {
  stored: number;
  stale: Lease[];
}

/**
 * Stores `reports` in one statement, in order: a `task.progress` event each, and each task's last
 * one on its row. Fenced as log lines are (logs.ts writeLogLines): the reports of an attempt that
 * is no longer current store nothing, and the attempt comes back in `stale`. The task rows are
 * locked in id order, as settles and renewals lock them. INVALID_INPUT, with nothing stored, for a
 * malformed report (a value outside 0..1, a message with a NUL: the caller makes it storable).
 */
export async function writeProgress(pool: Pick<pg.Pool, 'query'>, reports: readonly ProgressWrite[]): Promise<ProgressWriteResult> {
  if (!Array.isArray(reports)) throw invalid('reports must be an array');
  reports.forEach((report, i) => checkReport(report, `reports[${i}]`));
  if (reports.length === 0) return { stored: 0, stale: [] };
  let rows: Array<{ id: string; token: string; stored: number }>;
  try {
    ({ rows } = await pool.query({
      name: 'troupe-write-progress',
      text: WRITE_PROGRESS,
      values: [reports.map((r) => r.taskId), reports.map((r) => r.token), reports.map((r) => r.attemptId), reports.map((r) => r.value), reports.map((r) => r.message ?? null), reports.map((r) => r.at)],
    }));
  } catch (error) {
    throw storeFailed('writing progress', error);
  }
  return { stored: rows[0]?.stored ?? 0, stale: staleLeases(rows, reports) };
}

/**
 * The reports' rows, the current attempts among theirs (locked: an end of one waits for this
 * write, and a write that waited for an end finds the token moved on), the reports of those: each
 * task's last on its row (`updated_at` stays, as LMDB's progress step leaves it), all of them as
 * events in the order given, with the NOTIFY that wakes readers.
 */
const WRITE_PROGRESS = `WITH p AS MATERIALIZED (
     SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::float8[], $5::text[], $6::float8[]) WITH ORDINALITY
       AS p(task_id, token, attempt_id, value, message, at, ord)
   ), current AS MATERIALIZED (
     SELECT t.id, t.token FROM troupe_tasks t
      WHERE t.id IN (SELECT task_id FROM p) AND t.state IN ('running', 'waiting')
      ORDER BY t.id FOR NO KEY UPDATE OF t
   ), reported AS MATERIALIZED (
     SELECT p.* FROM p JOIN current c ON c.id = p.task_id AND c.token = p.token
   ), latest AS (
     UPDATE troupe_tasks t SET progress = l.progress
       FROM (SELECT DISTINCT ON (task_id) task_id, jsonb_strip_nulls(jsonb_build_object('value', value, 'message', message, 'at', at)) AS progress
               FROM reported ORDER BY task_id, ord DESC) l
      WHERE t.id = l.task_id
   ), ev AS (
     ${insertEvents(`SELECT 'task.progress', task_id, attempt_id, json_strip_nulls(json_build_object('value', value, 'message', message)) FROM reported ORDER BY ord`)}
   )
   SELECT c.id, c.token, (SELECT count(*) FROM reported)::integer AS stored, ${notifyIfAny('ev')} AS notified FROM current c`;

/** Checks a report named `where`. */
function checkReport(report: ProgressWrite, where: string): void {
  checkLease(report, where);
  if (typeof report.attemptId !== 'string' || report.attemptId.length === 0 || report.attemptId.includes('\u0000')) throw invalid(`${where}.attemptId must be a non-empty string without NUL`);
  if (typeof report.value !== 'number' || !(report.value >= 0 && report.value <= 1)) throw invalid(`${where}.value must be a number from 0 to 1`);
  if (report.message !== undefined && (typeof report.message !== 'string' || report.message.includes('\u0000'))) throw invalid(`${where}.message must be a string without NUL`);
  if (typeof report.at !== 'number' || !Number.isFinite(report.at)) throw invalid(`${where}.at must be a finite number`);
}
