/**
 * The statement that ends attempts on the PostgreSQL queue (settle.ts runs it): the ends' rows
 * (the `e` CTE) from the caller's arrays, then the fenced writes, the attempt rows and the events.
 */
import { HINTS, insertEvents, notifyIfAny } from './events.js';
import { attemptRowsInsert, heldAttemptSets } from './held-attempt.js';
import { notifyParents } from './children.js';

/** The ends as settle.ts runEnds decides them: a column each, one array per column, in the batch's order. */
const DECIDED_ENDS = `SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::boolean[], $5::jsonb[], $6::jsonb[], $7::bigint[], $8::text[], $9::jsonb[], $10::text[], $11::jsonb[], $12::jsonb[], $13::jsonb[])
         WITH ORDINALITY AS e(id, token, state, counts, output, error, delay_ms, exit, attempt_error, event_type, event_data, result, follow_up, ord)`;

/**
 * Successes with nothing but an output, and the same result (`$4`: `{"kind":"success"}`, or NULL
 * for none), as settle.ts settleInOneStatement sends them (plainSuccessesResult): three arrays instead of thirteen, the
 * columns every such end shares written here. Each is what runEnds would send for it: done,
 * counted, no error, delay, attempt error or follow-up, and `task.done` with `{ exit, kind }`
 * (the statement adds run, attempt and attemptMs). Thirteen arrays of 300 ends took 4.6-6.4 µs of
 * the server's CPU and 4.6-5.5 of the node's per end to send and parse; three, 1.2-1.6 each.
 */
const SUCCESS_ENDS = `SELECT id, token, 'done'::text AS state, true AS counts, output, NULL::jsonb AS error, 0::bigint AS delay_ms, 'success'::text AS exit,
              NULL::jsonb AS attempt_error, 'task.done'::text AS event_type, '{"exit": "success", "kind": "success"}'::jsonb AS event_data, $4::jsonb AS result,
              NULL::jsonb AS follow_up, ord
         FROM unnest($1::text[], $2::bigint[], $3::jsonb[]) WITH ORDINALITY AS s(id, token, output, ord)`;

/**
 * The statement that writes ends. `lock`: it first locks the rows of the attempts still current,
 * in id order (as settles, renewals and sweeps all lock, so none deadlock), for a caller that does
 * not hold them; a row another transaction changes meanwhile is read again once it is free, and
 * left out if its attempt is no longer current. The attempt's row and its event take the run,
 * attempt, attempt id, token, node and start from the task's row as it was before this write. They
 * read everything from what the update returns: a join of two CTEs on id was planned as a nested
 * loop, quadratic in the batch (at 128 ends, 16,256 rows compared twice). No lookup of a row by
 * id here says `state = 'running'`: with it, the planner may read the rows through the partial index
 * of running tasks instead of the primary key, and where the table's statistics say few tasks run
 * (as they do after an ANALYZE of a queue at rest), it joined every running row with every end in a
 * nested loop, quadratic again: 290,000 comparisons and 0.6 s for a settle of 352 ends beside 824
 * running tasks (auto_explain); and a plain join on id was planned, on a table of 12,000 tasks, as
 * a scan of every row into a hash, every settle. So each end's row is looked up by its primary key
 * in a lateral subquery that cannot be flattened (`OFFSET 0`), the ends taken in id order, which is
 * the order the lookups lock the rows in. The state is checked once the rows are locked (a row
 * locked here cannot change before the commit, and one the caller holds cannot either), and the
 * token, which every claim and end bumps, still fences every write. A task whose cancel was
 * asked for (its `cancel_reason`, schema version 8) is cancelled by an end that would requeue it
 * (a retry, an interruption, a crash), with `task.cancelled` and the cancel's reason.
 */
export function endsStatement(lock: boolean, ends = DECIDED_ENDS): string {
  return `WITH e AS MATERIALIZED (
       ${ends}
     ), current AS MATERIALIZED (
       SELECT t.* FROM (SELECT id, token FROM e ORDER BY id) k CROSS JOIN LATERAL (
           SELECT id, state, run, attempt_seq, attempt_id, token, owner_node, attempt_started_at, cancel_reason
             FROM troupe_tasks WHERE id = k.id OFFSET 0${lock ? ' FOR UPDATE' : ''}
         ) t
        WHERE t.token = k.token
     ), decided AS MATERIALIZED (
       -- A cancel was asked for (rt.cancel on any node): an end that would requeue or sleep cancels instead.
       SELECT e.*, c.run, c.attempt_seq, c.attempt_id, c.owner_node, c.attempt_started_at, c.cancel_reason,
              (c.cancel_reason IS NOT NULL AND e.state IN ('queued', 'sleeping')) AS cancels,
              CASE WHEN c.cancel_reason IS NOT NULL AND e.state IN ('queued', 'sleeping') THEN 'cancelled' ELSE e.state END AS final
         FROM e JOIN current c ON c.id = e.id
        WHERE c.state = 'running'
     ), ended AS (
       UPDATE troupe_tasks t
          SET state = d.final, token = t.token + 1,
              attempts = CASE WHEN d.counts THEN t.attempts ELSE t.attempts - 1 END,
              queued_order = CASE WHEN d.final = 'queued' THEN nextval('troupe_queued_order') ELSE t.queued_order END,
              queued_at = CASE WHEN d.final = 'queued' THEN now() ELSE t.queued_at END,
              run_at = CASE WHEN d.final IN ('queued', 'sleeping') THEN now() + d.delay_ms * interval '1 millisecond' ELSE t.run_at END,
              lease_until = NULL, ${heldAttemptSets('d.final')},
              output = d.output, result = d.result,
              error = CASE WHEN d.cancels THEN NULL ELSE d.error END,
              follow_up = CASE WHEN d.final = 'sleeping' THEN d.follow_up ELSE t.follow_up END,
              settled_at = CASE WHEN d.final IN ('queued', 'sleeping') THEN NULL ELSE now() END, updated_at = now()
         FROM decided d
        WHERE t.id = d.id AND t.token = d.token
       RETURNING t.id, t.state, t.run_at, t.parent_id, d.run, d.attempt_seq, d.attempt_id, d.token, d.owner_node, d.attempt_started_at, d.exit, d.attempt_error, d.ord,
                 CASE WHEN d.cancels THEN 'task.cancelled' ELSE d.event_type END AS event_type,
                 CASE WHEN d.cancels THEN jsonb_build_object('exit', d.exit, 'reason', d.cancel_reason) ELSE d.event_data END AS event_data
     ), attempt_ends AS (
       ${attemptRowsInsert('ended')}
     ), end_events AS (
       ${insertEvents(`SELECT event_type, id, attempt_id,
               event_data || jsonb_build_object('run', run, 'attempt', attempt_seq, 'attemptMs', greatest(0, round(extract(epoch FROM now() - attempt_started_at) * 1000))::float8)
                 || CASE WHEN state = 'sleeping' THEN jsonb_build_object('wakeAt', round(extract(epoch FROM run_at) * 1000)::float8) ELSE '{}' END
          FROM ended ORDER BY ord`)}
     )
     SELECT ended.id, ended.state, ${notifyIfAny('end_events', `CASE WHEN EXISTS (SELECT 1 FROM ended WHERE state = 'queued') THEN '${HINTS.queued}' ELSE '' END`)} AS notified, ${notifyParents('ended')} AS joins FROM ended`;
}

/** The writes of rows the caller holds (settle.ts writeEnds), and a settle's own (settleInOneStatement). */
export const WRITE_ENDS = endsStatement(false);
export const SETTLE = endsStatement(true);
/** A settle's own of plain successes (settle.ts plainSuccessesResult). */
export const SETTLE_SUCCESSES = endsStatement(true, SUCCESS_ENDS);
