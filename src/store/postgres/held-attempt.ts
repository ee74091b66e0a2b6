/**
 * The last attempt of a settled task lives on the task's row (schema version 22), as the LMDB
 * runtime's settled record holds it: a settle that leaves the task done, failed, dropped or
 * cancelled keeps the attempt's id, node and start where they were while it ran, and writes its
 * exit and error beside them; every other end of an attempt inserts the attempt into
 * `troupe_attempt_rows`. `troupe_attempts` is the view of both. The fragments here are the only
 * writers of that split: the end statements (settle.ts, input-ends.ts), and a retry, which moves
 * the held attempt into the table before the task's next run.
 */
import { SETTLED_SQL } from './transaction.js';

/**
 * The SET items of an end's UPDATE of `troupe_tasks t` about its attempt: held when `final` (an
 * expression of the new state) is settled, cleared otherwise. `d.exit` and `d.attempt_error` are
 * the end's.
 */
export function heldAttemptSets(final: string): string {
  const held = `${final} IN ${SETTLED_SQL}`;
  return `owner_node = CASE WHEN ${held} THEN t.owner_node END, attempt_id = CASE WHEN ${held} THEN t.attempt_id END,
              attempt_started_at = CASE WHEN ${held} THEN t.attempt_started_at END,
              attempt_exit = CASE WHEN ${held} THEN d.exit END, attempt_error = CASE WHEN ${held} THEN d.attempt_error END`;
}

/**
 * The CTE body that inserts the attempts `ended` (the end statement's RETURNING) did not leave on
 * their rows: ends whose task is not settled.
 */
export function attemptRowsInsert(ended: string): string {
  return `INSERT INTO troupe_attempt_rows (task_id, run, attempt, attempt_id, token, node, started_at, ended_at, exit, error)
       SELECT id, run, attempt_seq, attempt_id, token, owner_node, attempt_started_at, now(), exit, attempt_error FROM ${ended} WHERE state NOT IN ${SETTLED_SQL}`;
}

/**
 * Moves the attempt a settled task `$1` holds into `troupe_attempt_rows` and clears it from the
 * row, in the caller's transaction, which holds the row: before a retry starts its next run.
 */
export const RELEASE_HELD_ATTEMPT = `
  WITH moved AS (
    INSERT INTO troupe_attempt_rows (task_id, run, attempt, attempt_id, token, node, started_at, ended_at, exit, error)
    SELECT id, run, attempt_seq, attempt_id, token - 1, owner_node, attempt_started_at, settled_at, attempt_exit, attempt_error
      FROM troupe_tasks WHERE id = $1 AND attempt_exit IS NOT NULL
    RETURNING task_id
  )
  UPDATE troupe_tasks SET owner_node = NULL, attempt_id = NULL, attempt_started_at = NULL, attempt_exit = NULL, attempt_error = NULL
   WHERE id IN (SELECT task_id FROM moved)`;
