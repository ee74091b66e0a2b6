/**
 * Waking sleeping tasks on the PostgreSQL queue (issue #15). An attempt whose agent returned
 * `{ kind: 'sleep', wakeAfterMs, followUp }` leaves its task `sleeping` until `run_at` (settle.ts);
 * once that has passed on the database's clock, a wake moves the task back to `queued` at the end
 * of its priority, as a new run with a fresh attempt budget, its `followUp` kept for that run's
 * attempts and the sleep's result and error cleared, as the LMDB runtime's wake does
 * (src/steps/wake.ts), with `task.queued` (`reason: 'wake'`) in the same transaction.
 *
 * Every node wakes what is due (src/cluster/node.ts, every `pollMs`): `FOR UPDATE SKIP LOCKED`
 * lets them run at once without waiting on each other or waking one task twice, and the update
 * checks the row is still sleeping (a cancel may have come first). The same statement ends the
 * agents' fast-failure pauses whose time is up (backoff.ts RESUME_DUE).
 */
import type pg from 'pg';
import { RESUME_DUE } from './backoff.js';
import { HINTS, insertEvents, notifyIfAny } from './events.js';
import { invalid, INT4_MAX } from './checks.js';
import { storeFailed } from './transaction.js';

/**
 * Wakes up to `limit` sleeping tasks whose wake has come, oldest wake first, and ends the pauses
 * that are over, in one statement; resolves with how many of both.
 */
export async function wakeDue(pool: Pick<pg.Pool, 'query'>, limit = 500): Promise<number> {
  if (!Number.isSafeInteger(limit) || limit <= 0 || limit > INT4_MAX) throw invalid('limit must be a positive integer');
  try {
    const { rows } = await pool.query<{ woke: number }>({ name: 'troupe-wake', text: WAKE, values: [limit] });
    return rows[0]?.woke ?? 0;
  } catch (error) {
    throw storeFailed('waking sleeping tasks', error);
  }
}

/** The wake's statement (prepared by name: it runs every `pollMs` on every node). */
const WAKE = `WITH due AS MATERIALIZED (
     SELECT id FROM troupe_tasks WHERE state = 'sleeping' AND run_at <= now() ORDER BY run_at LIMIT $1 FOR UPDATE SKIP LOCKED
   ), woke AS (
     UPDATE troupe_tasks t
        SET state = 'queued', run = t.run + 1, attempts = 0, attempt_seq = 0, result = NULL, error = NULL,
            queued_order = nextval('troupe_queued_order'), queued_at = now(), run_at = now(), updated_at = now()
       FROM due
      WHERE t.id = due.id AND t.state = 'sleeping'
     RETURNING t.id, t.run, t.queued_order
   ), woke_events AS (
     ${insertEvents(`SELECT 'task.queued', id, NULL, jsonb_build_object('run', run, 'reason', 'wake') FROM woke ORDER BY queued_order`)}
   ), ${RESUME_DUE}
   SELECT count(*)::int + (SELECT count(*)::int FROM resumed) AS woke, ${notifyIfAny('woke_events', `'${HINTS.queued}'`)} AS notified,
          ${notifyIfAny('resumed_events', `'${HINTS.agents}'`)} AS resumed FROM woke`;
