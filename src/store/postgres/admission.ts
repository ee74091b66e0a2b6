/**
 * `maxQueued` for the whole cluster: a submit (submitAndRead), a spawn (spawnChild) or a schedule's
 * fire (fireDue) that would take the cluster's queued tasks past `maxQueued` stores no task, as
 * on LMDB (src/tasks/submit.ts, src/steps/fire.ts): a submit or spawn is refused with
 * AT_CAPACITY and writes nothing; a fire skips that schedule's ticks with AT_CAPACITY's message
 * (`schedule.fired` with `skipped: 'error'`), and the schedule advances. The runtime passes its
 * `maxQueued` only when it was given one (options.ts): nothing here runs otherwise.
 *
 * The check is exact, not a hint: every such transaction takes the transaction-level advisory
 * lock {@link ADMISSION_LOCK} and counts the queued tasks (state `queued`, delayed ones included,
 * from the claim index `troupe_tasks_claim`) in a statement after the lock was granted, whose
 * snapshot sees every admission that held the lock before it (each committed before it let go).
 * Near the limit the lock is exclusive and admissions take turns; far from it, it is shared, with
 * room kept for what the admissions beside it can add ({@link admit}). So however many nodes
 * submit at once, the admitted tasks never take the queued ones past `maxQueued`. What is not
 * admitted can still queue tasks past it, as on LMDB: a retry, a wake, a requeue after a failed
 * or interrupted attempt. No counter is kept: a claim or any other move out of `queued` frees room
 * the moment it commits, and pays nothing for it.
 *
 * A submit and a spawn take the lock last, once their rows are inserted (the count then includes
 * their own new tasks, so a repeated idempotency key or a task stored `needs_attention` is known
 * not to count), and hold it only for the count and their commit; holding it, they wait for
 * nothing. A fire decides before it inserts (it skips whole schedules, not a batch), so it holds
 * the lock, exclusive, from the count through its inserts: a submit that gives a tick's own key
 * (`schedule:<id>:<tick>`) while that tick fires can deadlock with it, and PostgreSQL then fails
 * one of them. Only a transaction that would queue a new task takes the lock at all.
 *
 * What it costs: one round trip and a count of the queued tasks per admission (three and two
 * for the first that finds the limit near), and near the limit admissions commit one at a time. The count reads the claim index, so
 * it grows with the queued tasks (not the settled ones). README "Running on many machines" has
 * the figures (bench/admission-cost.ts).
 */
import type pg from 'pg';
import { TroupeError } from '../../errors.js';
import { atCapacityMessage } from '../../steps/fire.js';
import type { Plan } from './schedule-plan.js';

/** The advisory lock key of admission: 'troupq' in ASCII (migrations hold 'troupe', controls 'troupc', retention 'troupr'). */
export const ADMISSION_LOCK = 0x74726f757071;

/** The queued tasks the transaction can see, and how many sessions the server takes at once. */
const COUNT = `SELECT count(*)::float8 AS n, current_setting('max_connections')::int AS sessions FROM troupe_tasks WHERE state = 'queued'`;
/**
 * The lock, then the count, in one round trip: under READ COMMITTED each statement of the string
 * takes its own snapshot, the count's after the lock was granted. The shared one is taken after a
 * savepoint, so that rolling back to it lets the lock go again (and keeps the inserts before it).
 */
const EXCLUSIVE = `SELECT pg_advisory_xact_lock(${ADMISSION_LOCK}); ${COUNT}`;
const SHARED = `SAVEPOINT troupe_admission; SELECT pg_advisory_xact_lock_shared(${ADMISSION_LOCK}); ${COUNT}`;
const UNSHARE = 'ROLLBACK TO SAVEPOINT troupe_admission';

/**
 * Most new queued tasks of an admission on the shared path: each admission in flight beside one
 * on that path can hide at most this many from its count.
 */
const SHARED_BATCH = 10;

type Count = { n: number; sessions: number };

/**
 * The last count this process took, a hint of which lock to try first: after a count near the
 * limit the next admission goes to the exclusive lock at once, rather than count twice. What is
 * admitted never depends on it.
 */
let last: Count = { n: 0, sessions: 1 };

/** Takes the admission lock (shared, or exclusive) for the caller's transaction and counts the queued tasks it can see then. */
async function lockAndCount(client: Pick<pg.PoolClient, 'query'>, text: string): Promise<Count> {
  const results = (await client.query(text)) as unknown as Array<pg.QueryResult<Count>>;
  return (last = results.at(-1)!.rows[0]!);
}

/** Whether `n` queued tasks leave the room the shared path keeps for the other sessions. */
const roomy = (n: number, sessions: number, maxQueued: number) => n + (sessions - 1) * SHARED_BATCH <= maxQueued;

/**
 * After the caller's transaction inserted `created` new queued tasks: AT_CAPACITY (the caller
 * rolls back) when the cluster's queued tasks, those included, are more than `maxQueued`.
 *
 * Far from the limit the lock is shared, so that admissions there do not take turns: one of at
 * most {@link SHARED_BATCH} tasks is admitted on a shared lock when its count, plus that many for
 * every other session the server could hold (each could be an admission in flight on the shared
 * path, whose tasks this count cannot see), stays within `maxQueued`. Any admission then sees, at
 * its count, every admitted task but those of the shared admissions in flight beside it, so the
 * limit holds exactly: of the admissions committed at any time, take the one whose count came
 * last; every other one is in its count or was in flight beside it then, on the shared path (an
 * exclusive holder has none beside it), so it is at most that count plus the room left for them.
 * Anywhere else, the shared lock is let go (rolled back to the savepoint before it) and the
 * exclusive one taken: admissions near the limit, and larger batches, take turns and count exactly.
 * After a count near the limit ({@link last}), the next admission takes the exclusive lock first.
 */
export async function admit(client: Pick<pg.PoolClient, 'query'>, created: number, maxQueued: number): Promise<void> {
  if (created === 0) return;
  if (created <= SHARED_BATCH && roomy(last.n + created, last.sessions, maxQueued)) {
    const { n, sessions } = await lockAndCount(client, SHARED);
    if (roomy(n, sessions, maxQueued)) return;
    await client.query(UNSHARE);
  }
  const { n } = await lockAndCount(client, EXCLUSIVE);
  if (n > maxQueued) throw new TroupeError('AT_CAPACITY', atCapacityMessage(n - created, maxQueued));
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
  let queued = (await lockAndCount(client, EXCLUSIVE)).n;
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
