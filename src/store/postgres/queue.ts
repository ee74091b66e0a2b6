/**
 * The cluster's task queue on PostgreSQL (issue #15): submit, claim and renew. Ending attempts is
 * settle.ts; taking back the attempts of dead nodes and of expired leases is sweeper.ts. Not wired
 * into the runtime yet: these are the durable verbs it will call, one transaction per batch.
 *
 * A claim moves up to n queued tasks of one agent to `running` for one node in a single statement:
 * `FOR UPDATE SKIP LOCKED` lets any number of nodes claim at once without waiting on each other or
 * taking the same task twice. Each claim bumps the task's `token`, and every later write of that
 * attempt (a settle, a renewal) must name the token: a write from an attempt that is no longer
 * current changes nothing. Leases and delays run on the database's clock (`now()`), never a node's.
 */
import type pg from 'pg';
import { TroupeError } from '../../errors.js';
import { checkId, MAX_ID } from '../../ids.js';
import { DEFAULT_RETRY } from '../../options.js';
import { jsonOf, storeFailed, transaction } from './transaction.js';

/** A task to enqueue. */
export interface NewTask {
  /** Its id: the caller mints it (the runtime's are time-ordered ULIDs). */
  id: string;
  /** The agent that runs it; claims are per agent. */
  agent: string;
  /** Plain JSON data. */
  input?: unknown;
  /** Lower runs first, like the public API's. An int4. @default 0 */
  priority?: number;
  /** Attempts per run, the first included. @default 3 (DEFAULT_RETRY.maxAttempts) */
  maxAttempts?: number;
  /** A second submit with the same key returns the first task and stores nothing. Permanent. */
  idempotencyKey?: string;
  /** Not claimed until this many ms after the database's `now()` at submit. @default 0 */
  delayMs?: number;
}

/** What submitting one task did: `created`, or an earlier task with its idempotency key is `id`. */
export interface Submitted {
  id: string;
  created: boolean;
}

/** A task a node claimed: the attempt it now runs, and the token that attempt's writes carry. */
export interface ClaimedTask {
  id: string;
  agent: string;
  input: unknown;
  priority: number;
  /** The run (1-based) and the attempt number within it. */
  run: number;
  attempt: number;
  /** Attempts of this run that count against `maxAttempts`, this one included. */
  attempts: number;
  maxAttempts: number;
  /** The fencing token of this attempt. */
  token: number;
  /** `<taskId>:<run>:<attempt>`, as the LMDB store names attempts. */
  attemptId: string;
  /** When the lease runs out, on the database's clock (epoch ms). */
  leaseUntil: number;
}

/** An attempt a write is for: its task and its fencing token. */
export interface Lease {
  taskId: string;
  token: number;
}

/** What {@link renewLeases} did: leases held on, and those whose attempt is no longer current. */
export interface Renewal {
  renewed: Array<Lease & { leaseUntil: number }>;
  lost: Lease[];
}

const INT4_MAX = 2 ** 31 - 1;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * Enqueues `tasks` in one transaction, in order, each at the end of its priority. A task whose
 * idempotency key is taken (by a stored task, or an earlier one of the batch) is not stored: its
 * answer is the holder's id with `created: false`. The answers come in the order of `tasks`.
 * INVALID_INPUT (nothing stored) for a malformed task, two with one id, or an id already stored.
 */
export async function submitTasks(pool: pg.Pool, tasks: readonly NewTask[]): Promise<Submitted[]> {
  if (!Array.isArray(tasks)) throw invalid('tasks must be an array');
  const rows = tasks.map((task, i) => checkTask(task, `tasks[${i}]`));
  if (rows.length === 0) return [];
  const ids = new Set<string>();
  for (const row of rows) {
    if (ids.has(row.id)) throw invalid(`task id ${JSON.stringify(row.id)} is given twice`);
    ids.add(row.id);
  }
  return transaction(pool, 'submitting tasks', async (client) => {
    let inserted: pg.QueryResult<{ id: string }>;
    try {
      inserted = await client.query<{ id: string }>(
        `INSERT INTO troupe_tasks (id, agent, state, priority, max_attempts, idempotency_key, input, run_at)
         SELECT id, agent, 'queued', priority, max_attempts, key, input, now() + delay_ms * interval '1 millisecond'
           FROM unnest($1::text[], $2::text[], $3::int[], $4::int[], $5::text[], $6::jsonb[], $7::bigint[])
                WITH ORDINALITY AS s(id, agent, priority, max_attempts, key, input, delay_ms, n)
          ORDER BY n
         ON CONFLICT (idempotency_key) DO NOTHING
         RETURNING id`,
        [rows.map((r) => r.id), rows.map((r) => r.agent), rows.map((r) => r.priority), rows.map((r) => r.maxAttempts), rows.map((r) => r.key), rows.map((r) => r.input), rows.map((r) => r.delayMs)],
      );
    } catch (error) {
      if ((error as { code?: string; constraint?: string }).code === '23505' && (error as { constraint?: string }).constraint === 'troupe_tasks_pkey') {
        throw invalid(`a task with an id of this batch is stored already (${(error as { detail?: string }).detail ?? 'duplicate id'})`);
      }
      throw error;
    }
    const created = new Set(inserted.rows.map((r) => r.id));
    const keys = rows.filter((r) => !created.has(r.id)).map((r) => r.key!);
    // Only a key can keep a task out (ON CONFLICT names it); whoever holds it is committed now.
    const holders = new Map<string, string>();
    if (keys.length > 0) {
      const { rows: held } = await client.query<{ id: string; key: string }>('SELECT id, idempotency_key AS key FROM troupe_tasks WHERE idempotency_key = ANY($1::text[])', [keys]);
      for (const { id, key } of held) holders.set(key, id);
    }
    return rows.map((r) => (created.has(r.id) ? { id: r.id, created: true } : { id: holders.get(r.key!)!, created: false }));
  });
}

/**
 * Claims up to `n` runnable queued tasks of `agent` for the node `node` (a {@link joinCluster} id),
 * lower priority first, then first queued first, in one statement: each goes to `running` with its
 * token bumped, a new attempt row, and a lease of `leaseMs` from the database's `now()`. Tasks
 * other nodes are claiming at that moment are skipped, not waited for. INVALID_INPUT for bad
 * arguments; ILLEGAL_STATE when `node` is not a member of the cluster (it left, or a sweeper found
 * it dead and took its attempts back): such a node must stop, not claim.
 */
export async function claimTasks(pool: pg.Pool, node: string, agent: string, n: number, leaseMs: number): Promise<ClaimedTask[]> {
  if (typeof node !== 'string' || !UUID.test(node)) throw invalid('node must be the id of a node that joined the cluster (a UUID)');
  checkAgent(agent, 'agent');
  if (!Number.isSafeInteger(n) || n <= 0 || n > INT4_MAX) throw invalid('n must be a positive integer');
  checkLeaseMs(leaseMs);
  type Row = { member: boolean; id: string | null; agent: string; input: unknown; priority: number; run: number; attempt_seq: number; attempts: number; max_attempts: number; token: string; attempt_id: string; lease_until: Date };
  let rows: Row[];
  try {
    // The node's row is share-locked for the statement: a sweeper removing the node waits for this
    // claim to commit and then takes its tasks back, and a claim after the removal finds no row.
    ({ rows } = await pool.query<Row>(
      `WITH member AS MATERIALIZED (
         SELECT id FROM troupe_nodes WHERE id = $1::uuid FOR KEY SHARE
       ), picked AS MATERIALIZED (
         SELECT id FROM troupe_tasks
          WHERE state = 'queued' AND agent = $2 AND run_at <= now() AND EXISTS (SELECT 1 FROM member)
          ORDER BY priority, queued_order
          LIMIT $3
          FOR UPDATE SKIP LOCKED
       ), started AS (
         UPDATE troupe_tasks t
            SET state = 'running', token = t.token + 1, attempt_seq = t.attempt_seq + 1, attempts = t.attempts + 1,
                owner_node = $1::uuid::text, attempt_id = t.id || ':' || t.run || ':' || (t.attempt_seq + 1),
                lease_until = now() + $4 * interval '1 millisecond', started_at = coalesce(t.started_at, now()), updated_at = now()
           FROM picked
          WHERE t.id = picked.id
         RETURNING t.id, t.agent, t.input, t.priority, t.queued_order, t.run, t.attempt_seq, t.attempts, t.max_attempts, t.token, t.attempt_id, t.lease_until
       ), attempt_rows AS (
         INSERT INTO troupe_attempts (task_id, run, attempt, attempt_id, token, node)
         SELECT id, run, attempt_seq, attempt_id, token, $1::uuid::text FROM started
       )
       SELECT m.id IS NOT NULL AS member, s.*
         FROM (SELECT 1) AS one LEFT JOIN member m ON true LEFT JOIN started s ON true
        ORDER BY s.priority, s.queued_order`,
      [node, agent, n, leaseMs],
    ));
  } catch (error) {
    throw storeFailed('claiming tasks', error);
  }
  if (!rows[0]?.member) throw new TroupeError('ILLEGAL_STATE', `node ${node} is not a member of the cluster: it left, or it was found dead and its attempts were taken back`);
  return rows
    .filter((r) => r.id !== null)
    .map((r) => ({
      id: r.id!,
      agent: r.agent,
      input: r.input,
      priority: r.priority,
      run: r.run,
      attempt: r.attempt_seq,
      attempts: r.attempts,
      maxAttempts: r.max_attempts,
      token: Number(r.token),
      attemptId: r.attempt_id,
      leaseUntil: r.lease_until.getTime(),
    }));
}

/**
 * Extends the leases of running attempts to `leaseMs` from the database's `now()`, in one
 * statement. A lease whose attempt is no longer current (its token moved on: settled, or taken back
 * by a sweeper) is not touched and comes back in `lost`: its attempt should stop.
 */
export async function renewLeases(pool: pg.Pool, leases: readonly Lease[], leaseMs: number): Promise<Renewal> {
  if (!Array.isArray(leases)) throw invalid('leases must be an array');
  leases.forEach((lease, i) => checkLease(lease, `leases[${i}]`));
  checkLeaseMs(leaseMs);
  if (leases.length === 0) return { renewed: [], lost: [] };
  let rows: Array<{ id: string; token: string; lease_until: Date }>;
  try {
    // Rows are locked in id order, as settle.ts locks them, so a renewal and a settle of the same
    // tasks wait for each other instead of deadlocking.
    ({ rows } = await pool.query(
      `WITH wanted AS MATERIALIZED (
         SELECT * FROM unnest($1::text[], $2::bigint[]) AS w(id, token)
       ), locked AS MATERIALIZED (
         SELECT t.id FROM troupe_tasks t JOIN wanted w ON t.id = w.id AND t.token = w.token
          WHERE t.state = 'running' ORDER BY t.id FOR UPDATE OF t
       )
       UPDATE troupe_tasks t SET lease_until = now() + $3 * interval '1 millisecond', updated_at = now()
         FROM locked JOIN wanted w ON w.id = locked.id
        WHERE t.id = locked.id AND t.token = w.token AND t.state = 'running'
       RETURNING t.id, t.token, t.lease_until`,
      [leases.map((l) => l.taskId), leases.map((l) => l.token), leaseMs],
    ));
  } catch (error) {
    throw storeFailed('renewing leases', error);
  }
  const renewed = new Map(rows.map((r) => [`${r.id}\u0000${r.token}`, r.lease_until.getTime()]));
  const result: Renewal = { renewed: [], lost: [] };
  for (const { taskId, token } of leases) {
    const leaseUntil = renewed.get(`${taskId}\u0000${token}`);
    if (leaseUntil === undefined) result.lost.push({ taskId, token });
    else result.renewed.push({ taskId, token, leaseUntil });
  }
  return result;
}

/** A task checked and turned into the insert's columns. */
interface TaskRow {
  id: string;
  agent: string;
  priority: number;
  maxAttempts: number;
  key: string | null;
  input: string | null;
  delayMs: number;
}

function checkTask(task: NewTask, where: string): TaskRow {
  if (typeof task !== 'object' || task === null || Array.isArray(task)) throw invalid(`${where} must be an object`);
  const id = checkId(task.id, `${where}.id`);
  checkAgent(task.agent, `${where}.agent`);
  const priority = task.priority ?? 0;
  if (!Number.isSafeInteger(priority) || Math.abs(priority) > INT4_MAX) throw invalid(`${where}.priority must be an integer of at most 31 bits`);
  const maxAttempts = task.maxAttempts ?? DEFAULT_RETRY.maxAttempts;
  if (!Number.isSafeInteger(maxAttempts) || maxAttempts <= 0 || maxAttempts > INT4_MAX) throw invalid(`${where}.maxAttempts must be a positive integer`);
  const key = task.idempotencyKey === undefined ? null : checkId(task.idempotencyKey, `${where}.idempotencyKey`);
  const delayMs = task.delayMs ?? 0;
  if (!Number.isSafeInteger(delayMs) || delayMs < 0) throw invalid(`${where}.delayMs must be a non-negative integer`);
  return { id, agent: task.agent, priority, maxAttempts, key, input: jsonOf(task.input, `${where}.input`), delayMs };
}

function checkAgent(agent: unknown, where: string): asserts agent is string {
  if (typeof agent !== 'string' || agent.length === 0 || agent.length > MAX_ID) throw invalid(`${where} must be a non-empty string of at most ${MAX_ID} characters`);
}

function checkLeaseMs(leaseMs: unknown): void {
  if (!Number.isSafeInteger(leaseMs) || (leaseMs as number) <= 0) throw invalid('leaseMs must be a positive integer');
}

/** Checks a lease (a task id and a token) named `where`. */
export function checkLease(lease: Lease, where: string): void {
  if (typeof lease !== 'object' || lease === null) throw invalid(`${where} must be an object`);
  checkId(lease.taskId, `${where}.taskId`);
  if (!Number.isSafeInteger(lease.token) || lease.token <= 0) throw invalid(`${where}.token must be a positive integer`);
}

function invalid(message: string): TroupeError {
  return new TroupeError('INVALID_INPUT', message);
}
