/**
 * The statement that ends attempts whose agents asked for input (schema version 15; inbox.ts):
 * settle.ts's writes (the same fences, outcomes, attempt rows and events) for a task that may be
 * `waiting` with its agent parked, and that may hold inputs delivered to an attempt that never
 * took them. Ends of attempts that never asked for input take settle.ts's own statements, which
 * read and write none of this.
 *
 * - Inputs delivered beyond the end's `handed` are given back: the task's delivered counter drops
 *   to it, so the next attempt receives them.
 * - A waiting task whose attempt is interrupted (its node closed, or died: the sweeper) keeps
 *   waiting with no attempt, the attempt not counted, with `task.waiting` (`detached: true`), as
 *   on LMDB (src/steps/settle.ts detach); if an input is pending already, it resumes at once with
 *   a new run (`task.queued`, reason `resume`), as the LMDB runtime's open does; so does a task
 *   detached from a join whose children have all settled (children.ts).
 * - Any other end settles the waiting task as it would a running one (LMDB: a waiting task
 *   resumes, then settles), clearing what it waited for.
 */
import { joinSettled, notifyParents } from './children.js';
import { insertEvents, notifyIfAny, HINTS } from './events.js';
import { attemptRowsInsert, heldAttemptSets } from './held-attempt.js';

/** The statement (see the module comment), for rows the caller holds: its parameters are settle.ts runEnds's, then each end's `handed` (NULL: none). */
export function inputEndsStatement(): string {
  return `WITH e AS MATERIALIZED (
       SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::boolean[], $5::jsonb[], $6::jsonb[], $7::bigint[], $8::text[], $9::jsonb[], $10::text[], $11::jsonb[], $12::jsonb[], $13::jsonb[], $14::int[])
         WITH ORDINALITY AS e(id, token, state, counts, output, error, delay_ms, exit, attempt_error, event_type, event_data, result, follow_up, handed, ord)
     ), current AS MATERIALIZED (
       SELECT t.id, t.state AS was, t.run, t.attempt_seq, t.attempt_id, t.owner_node, t.attempt_started_at, t.cancel_reason, t.inbox, t.delivered, t.waiting_for
         FROM troupe_tasks t JOIN e ON t.id = e.id AND t.token = e.token
        WHERE t.state IN ('running', 'waiting')
     ), shaped AS MATERIALIZED (
       SELECT e.*, c.was, c.run, c.attempt_seq, c.attempt_id, c.owner_node, c.attempt_started_at, c.cancel_reason, c.inbox, c.waiting_for,
              CASE WHEN e.handed IS NULL THEN c.delivered ELSE least(c.delivered, e.handed) END AS kept,
              (c.was = 'waiting' AND e.exit = 'interrupted' AND c.cancel_reason IS NULL) AS detach,
              -- A cancel was asked for (rt.cancel on any node): an end that would requeue or sleep cancels instead.
              (c.cancel_reason IS NOT NULL AND e.state IN ('queued', 'sleeping')) AS cancels
         FROM e JOIN current c ON c.id = e.id
     ), decided AS MATERIALIZED (
       SELECT s.*, (s.detach AND (s.inbox > s.kept OR ${joinSettled('s.waiting_for')})) AS resume,
              CASE WHEN s.detach AND (s.inbox > s.kept OR ${joinSettled('s.waiting_for')}) THEN 'queued' WHEN s.detach THEN 'waiting' WHEN s.cancels THEN 'cancelled' ELSE s.state END AS final
         FROM shaped s
     ), ended AS (
       UPDATE troupe_tasks t
          SET state = d.final, token = t.token + 1,
              run = CASE WHEN d.resume THEN t.run + 1 ELSE t.run END,
              attempt_seq = CASE WHEN d.resume THEN 0 ELSE t.attempt_seq END,
              attempts = CASE WHEN d.resume THEN 0 WHEN d.counts THEN t.attempts ELSE t.attempts - 1 END,
              queued_order = CASE WHEN d.final = 'queued' THEN nextval('troupe_queued_order') ELSE t.queued_order END,
              queued_at = CASE WHEN d.final = 'queued' THEN now() ELSE t.queued_at END,
              run_at = CASE WHEN d.final IN ('queued', 'sleeping') THEN now() + d.delay_ms * interval '1 millisecond' ELSE t.run_at END,
              lease_until = NULL, ${heldAttemptSets('d.final')},
              output = CASE WHEN d.detach THEN t.output ELSE d.output END,
              result = CASE WHEN d.detach THEN t.result ELSE d.result END,
              error = CASE WHEN d.detach THEN t.error WHEN d.cancels THEN NULL ELSE d.error END,
              waiting_for = CASE WHEN d.final = 'waiting' THEN t.waiting_for ELSE NULL END,
              delivered = d.kept,
              follow_up = CASE WHEN d.final = 'sleeping' THEN d.follow_up ELSE t.follow_up END,
              settled_at = CASE WHEN d.final IN ('queued', 'sleeping', 'waiting') THEN NULL ELSE now() END, updated_at = now()
         FROM decided d
        WHERE t.id = d.id AND t.token = d.token AND t.state = d.was
       RETURNING t.id, t.state, t.run_at, t.parent_id, t.run AS new_run, d.resume, d.run, d.attempt_seq, d.attempt_id, d.token, d.owner_node, d.attempt_started_at, d.exit, d.attempt_error, d.ord,
                 CASE WHEN d.detach THEN 'task.waiting' WHEN d.cancels THEN 'task.cancelled' ELSE d.event_type END AS event_type,
                 CASE WHEN d.detach THEN (d.event_data - 'delayMs') || jsonb_build_object('for', d.waiting_for ->> 'kind', 'detached', true)
                      WHEN d.cancels THEN jsonb_build_object('exit', d.exit, 'reason', d.cancel_reason) ELSE d.event_data END AS event_data
     ), attempt_ends AS (
       ${attemptRowsInsert('ended')}
     ), end_events AS (
       ${insertEvents(`SELECT type, id, attempt_id, data FROM (
           SELECT event_type AS type, id, attempt_id, ord, 0 AS sub,
                  event_data || jsonb_build_object('run', run, 'attempt', attempt_seq, 'attemptMs', greatest(0, round(extract(epoch FROM now() - attempt_started_at) * 1000))::float8)
                    || CASE WHEN state = 'sleeping' THEN jsonb_build_object('wakeAt', round(extract(epoch FROM run_at) * 1000)::float8) ELSE '{}' END AS data
             FROM ended
           UNION ALL
           SELECT 'task.queued', id, NULL, ord, 1, jsonb_build_object('run', new_run, 'reason', 'resume') FROM ended WHERE resume
         ) x ORDER BY ord, sub`)}
     )
     SELECT ended.id, ended.state, ${notifyIfAny('end_events', `CASE WHEN EXISTS (SELECT 1 FROM ended WHERE state = 'queued') THEN '${HINTS.queued}' ELSE '' END`)} AS notified, ${notifyParents('ended')} AS joins FROM ended`;
}
