/**
 * `maxQueued` for the whole cluster: a submit (submitAndRead), a spawn (spawnChild) or a schedule's
 * fire (fireDue) that would take the cluster's queued tasks past `maxQueued` stores no task, as
 * on LMDB (src/tasks/submit.ts, src/steps/fire.ts): a submit or spawn is refused with
 * AT_CAPACITY and writes nothing; a fire skips that schedule's ticks with AT_CAPACITY's message
 * (`schedule.fired` with `skipped: 'error'`), and the schedule advances.
 *
 * The check is exact, not a hint: every such transaction takes the transaction-level advisory
 * lock {@link ADMISSION_LOCK} and counts the queued tasks (state `queued`, delayed ones included,
 * from the claim index `troupe_tasks_claim`) in a statement after the lock was granted, whose
 * snapshot sees every admission that held the lock before (each committed before it let go). So
 * admissions take their turns: however many nodes submit at once, none of them is admitted on a
 * count that misses another admitted task. What is not admitted can still queue tasks past the
 * limit, as on LMDB: a retry, a wake, a requeue after a failed or interrupted attempt. No counter
 * is kept: a claim or any other move out of `queued` frees room the moment it commits, and pays
 * nothing for it.
 *
 * A submit and a spawn take the lock last, once their rows are inserted (the count then includes
 * their own new tasks, so a repeated idempotency key or a task stored `needs_attention` is known
 * not to count), and hold it only for the count and their commit; holding it, they wait for
 * nothing. A fire decides before it inserts (it skips whole schedules, not a batch), so it holds
 * the lock from the count through its inserts. Only a transaction that would queue a new task
 * takes the lock at all.
 *
 * What it costs (measured on this 2-core machine, see README "Running on many machines"): one
 * round trip and a count of the queued tasks per admitted transaction, and admissions of the
 * whole cluster commit one at a time. The count reads the claim index, so it grows with the
 * queued tasks (not the settled ones).
 */
import type pg from 'pg';
import { TroupeError } from '../../errors.js';
import { atCapacityMessage } from '../../steps/fire.js';
import type { Plan } from './schedule-plan.js';

/** The advisory lock key of admission: 'troupq' in ASCII (migrations hold 'troupe', controls 'troupc', retention 'troupr'). */
export const ADMISSION_LOCK = 0x74726f757071;

/**
 * The lock, then the count, in one round trip: under READ COMMITTED each statement of the string
 * takes its own snapshot, the count's after the lock was granted.
 */
const LOCK_AND_COUNT = `SELECT pg_advisory_xact_lock(${ADMISSION_LOCK}); SELECT count(*)::float8 AS n FROM troupe_tasks WHERE state = 'queued'`;

/** Takes the admission lock for the caller's transaction and counts the queued tasks it can see. */
async function lockAndCount(client: Pick<pg.PoolClient, 'query'>): Promise<number> {
  const results = (await client.query(LOCK_AND_COUNT)) as unknown as Array<pg.QueryResult<{ n: number }>>;
  return results[1]!.rows[0]!.n;
}

/**
 * After the caller's transaction inserted `created` new queued tasks: AT_CAPACITY (the caller
 * rolls back) when the cluster's queued tasks, those included, are more than `maxQueued`.
 */
export async function admit(client: Pick<pg.PoolClient, 'query'>, created: number, maxQueued: number): Promise<void> {
  if (created === 0) return;
  const queued = await lockAndCount(client);
  if (queued > maxQueued) throw new TroupeError('AT_CAPACITY', atCapacityMessage(queued - created, maxQueued));
}

/**
 * Admits the fires of `plans` in order, before their tasks are inserted: a schedule whose new
 * queued tasks would take the cluster past `maxQueued` fires none of them, its ticks skipped with
 * AT_CAPACITY's message (as src/steps/fire.ts skips them), and the next schedule is admitted on
 * the count without them. A tick's task stored before (its idempotency key is held) does not
 * count, nor one named for an agent that does not cover its `requires` (stored needs_attention).
 * One routed by `requires` counts even if no agent covers it: routing runs at the insert.
 */
export async function admitFires(client: Pick<pg.PoolClient, 'query'>, plans: readonly Pick<Plan, 'tasks' | 'skipped'>[], maxQueued: number): Promise<void> {
  const rows = plans.flatMap((p) => p.tasks.map((t) => t.row)).filter((row) => !row.unmatched);
  if (rows.length === 0) return;
  let queued = await lockAndCount(client);
  const { rows: held } = await client.query<{ key: string }>('SELECT idempotency_key AS key FROM troupe_tasks WHERE idempotency_key = ANY($1::text[])', [rows.map((row) => row.key)]);
  const stored = new Set(held.map((r) => r.key));
  for (const plan of plans) {
    const admitted = plan.tasks.filter((t) => !t.row.unmatched && !stored.has(t.row.key!)).length;
    if (admitted === 0) continue;
    if (queued + admitted <= maxQueued) {
      queued += admitted;
      continue;
    }
    const error = atCapacityMessage(queued, maxQueued);
    for (const { tick } of plan.tasks) plan.skipped.push({ tick, reason: 'error', error });
    plan.tasks = [];
  }
}
