/**
 * What the runtime on PostgreSQL (src/cluster/runtime.ts) reads and changes of tasks beyond the
 * queue's own verbs: a task's row and pages of rows, a user's cancel and retry (each one
 * transaction with its event, as every transition on this store), and where the event log ends.
 *
 * A cancel of a queued, sleeping or unmatched (needs_attention) task, or of a waiting one whose agent is gone, cancels it at once. A cancel of a running task, whichever node runs
 * it, records its reason in the row (`cancel_reason`, schema version 8) and sends a NOTIFY on
 * CANCEL_CHANNEL with the task's id in the same transaction: the node that runs the attempt hears
 * it on its membership connection and stops the attempt, which then settles `cancelled`. Its lease
 * renewals see the request too (queue.ts renewLeases), should the NOTIFY be missed, and an end of
 * the attempt that would requeue the task cancels it instead (settle.ts), so a cancel is never
 * lost to a retry, an interruption or a crash of the node.
 */
import type pg from 'pg';
import type { TaskState } from '../../../machines/index.js';
import { TroupeError } from '../../errors.js';
import { appendEvents, cursorOf, END_OF_LOG, eventOf } from './events.js';
import { CANCEL_CHANNEL } from './nodes.js';
import { JOIN_CHANNEL } from './children.js';
import type { TaskRow as CheckedTask } from './checks.js';
import { insertTasks } from './queue.js';
import { routeAgain } from './routing.js';
import { epochMs, storeFailed, transaction } from './transaction.js';
import { RELEASE_HELD_ATTEMPT } from './held-attempt.js';

/** A task's row as the runtime shows it (times in epoch ms on the database's clock). */
export interface TaskRow {
  id: string;
  agent: string;
  state: TaskState;
  priority: number;
  run: number;
  attempts: number;
  max_attempts: number;
  idempotency_key: string | null;
  input: unknown;
  output: unknown;
  /** The settled task's `result` (schema version 9), or null. */
  result: unknown;
  error: unknown;
  labels: Record<string, string>;
  cancel_reason: string | null;
  created_at: number;
  updated_at: number;
  started_at: number | null;
  settled_at: number | null;
  queued_at: number;
  run_at: number;
  attempt_started_at: number | null;
  lease_until: number | null;
  /** The task's own timeout and retry fields (schema version 12), or null for its agent's. */
  timeout_ms: string | null;
  retry: Record<string, unknown> | null;
  /** What a waiting task waits for (schema version 15), or null. */
  waiting_for: { kind: 'input'; prompt?: unknown } | { kind: 'join'; ids: string[] } | null;
  /** The task that spawned it (schema version 16), or null. */
  parent_id: string | null;
  /** The capabilities it requires (schema version 18), or null. */
  requires: string[] | null;
  /** The task's own retention (schema version 19: ms per settled state, null for for good), or null. */
  retention: Record<string, number | null> | null;
  /** The last `ctx.progress` of its run (schema version 20: progress.ts), or null. */
  progress: { value: number; message?: string; at: number } | null;
  /** The directory its agent works in (schema version 23), or null. */
  workspace: string | null;
}

const COLUMNS = [
  'id, agent, state, priority, run, attempts, max_attempts, idempotency_key, input, output, result, error, labels, cancel_reason, timeout_ms, retry, waiting_for, parent_id, requires, retention, progress, workspace',
  ...['created_at', 'updated_at', 'started_at', 'settled_at', 'queued_at', 'run_at', 'attempt_started_at', 'lease_until'].map((c) => epochMs(c)),
].join(', ');

/** The task's row, or undefined. */
export async function readTask(pool: Pick<pg.Pool, 'query'>, id: string): Promise<TaskRow | undefined> {
  if (unstorable(id)) return undefined;
  return (await query<TaskRow>(pool, 'reading a task', `SELECT ${COLUMNS} FROM troupe_tasks WHERE id = $1`, [id]))[0];
}

/** The rows of `ids` that exist, in no particular order. */
export async function readTasks(pool: Pick<pg.Pool, 'query'>, ids: readonly string[]): Promise<TaskRow[]> {
  return query<TaskRow>(pool, 'reading tasks', `SELECT ${COLUMNS} FROM troupe_tasks WHERE id = ANY($1::text[])`, [ids]);
}

/**
 * Submits `rows` (tasks checked by queue.ts checkTasks) as queue.ts submitTasks does (one
 * transaction, idempotency keys, INVALID_INPUT with nothing stored), and reads each one's row in
 * that same transaction: a new task as it was stored, `queued`, before any node can claim it; a
 * duplicate key's holder as it is (`created` false). (Read after the commit, a new task may
 * already be running.) The rows come in the order of `rows`. With `maxQueued`, AT_CAPACITY with
 * nothing stored when the new queued tasks would take the cluster's past it (admission.ts).
 */
export async function submitAndRead(pool: pg.Pool, rows: readonly CheckedTask[], where: (i: number) => string = (i) => `tasks[${i}]`, maxQueued?: number): Promise<Array<{ row: TaskRow; created: boolean }>> {
  if (rows.length === 0) return [];
  return transaction(pool, 'submitting tasks', async (client) => {
    await checkParents(client, rows, where);
    const submitted = await insertTasks(client, rows, maxQueued);
    const read = new Map((await readTasks(client, submitted.map((s) => s.id))).map((row) => [row.id, row]));
    return submitted.map(({ id, created }) => {
      const row = read.get(id);
      if (!row) throw new TroupeError('STORE_FAILED', `task ${id} was submitted but cannot be read in its own transaction`);
      return { row, created };
    });
  });
}

/** NOT_FOUND (nothing written) when a task names a parent that is not stored, as on LMDB. */
async function checkParents(client: Pick<pg.Pool, 'query'>, rows: ReadonlyArray<{ parentId: string | null }>, where: (i: number) => string): Promise<void> {
  const parents = [...new Set(rows.map((r) => r.parentId).filter((id): id is string => id !== null))];
  if (parents.length === 0) return;
  const { rows: found } = await client.query<{ id: string }>('SELECT id FROM troupe_tasks WHERE id = ANY($1::text[])', [parents]);
  const stored = new Set(found.map((r) => r.id));
  const i = rows.findIndex((r) => r.parentId !== null && !stored.has(r.parentId));
  if (i >= 0) throw new TroupeError('NOT_FOUND', `${where(i)}.parentId: no task ${rows[i]!.parentId}`);
}

/** A filter and page of {@link listTaskRows}: ids after `after`, in id (submit) order. */
export interface TaskFilter {
  state?: TaskState | undefined;
  agent?: string | undefined;
  /** The children of this task (through `troupe_tasks_children`). */
  parentId?: string | undefined;
  /** Tasks that have every one of these labels with these values. */
  labels?: Readonly<Record<string, string>> | undefined;
  after?: string | undefined;
  limit: number;
}

/**
 * Up to `limit` rows in id order after `after`, of `state` and `agent` when given, and with every
 * label of `labels` (the primary key's order).
 *
 * Labels are matched by jsonb containment (`labels @> $5`) on the rows the primary key yields from
 * `after` on, as `state` and `agent` are: the page's cost is the rows read up to its `limit`
 * matches, small for a common label, up to the rest of the table for a rare one. No index serves
 * labels: a GIN index on `labels` would be written on every submit, and again on every claim,
 * settle and requeue that cannot be a HOT update, the writes the queue is measured by (schema
 * version 5 took index entries out of that path for the same reason), to serve a listing that
 * is not on any hot path.
 */
export async function listTaskRows(pool: Pick<pg.Pool, 'query'>, filter: TaskFilter): Promise<TaskRow[]> {
  if ((filter.agent !== undefined && unstorable(filter.agent)) || (filter.parentId !== undefined && unstorable(filter.parentId))) return [];
  const labels = Object.entries(filter.labels ?? {});
  // jsonb holds no NUL: no stored task has a label with one.
  if (labels.some(([label, value]) => unstorable(label) || unstorable(value))) return [];
  // No id holds a NUL, so the ids after `a\0b` are those after `a`.
  const after = filter.after?.split('\u0000')[0];
  return query<TaskRow>(
    pool,
    'listing tasks',
    `SELECT ${COLUMNS} FROM troupe_tasks
      WHERE id > $1 AND ($2::text IS NULL OR state = $2) AND ($3::text IS NULL OR agent = $3) AND ($5::jsonb IS NULL OR labels @> $5::jsonb)
            ${filter.parentId !== undefined ? 'AND parent_id = $6' : ''}
      ORDER BY ${filter.parentId !== undefined ? 'parent_id, id' : 'id'} LIMIT $4`,
    [after ?? '', filter.state ?? null, filter.agent ?? null, filter.limit, labels.length > 0 ? JSON.stringify(Object.fromEntries(labels)) : null, ...(filter.parentId !== undefined ? [filter.parentId] : [])],
  );
}

/** What {@link cancelTask} did. */
export type CancelOutcome = 'cancelled' | 'requested' | 'already';

/**
 * Cancels a task (see the module comment): `cancelled` (it was queued, asleep, needed attention, or waiting with no
 * attempt), `requested` (it runs, or its agent waits for input on a node: that node stops it), or `already` (it was cancelled before). NOT_FOUND for an unknown
 * id, ILLEGAL_TRANSITION for a task that settled otherwise.
 */
export async function cancelTask(pool: pg.Pool, id: string, reason: string): Promise<CancelOutcome> {
  if (unstorable(id)) throw new TroupeError('NOT_FOUND', `no task ${id}`);
  return transaction(pool, 'cancelling a task', async (client) => {
    const { rows } = await client.query<{ state: TaskState; run: number; cancel_reason: string | null; owner_node: string | null; parent_id: string | null }>('SELECT state, run, cancel_reason, owner_node, parent_id FROM troupe_tasks WHERE id = $1 FOR UPDATE', [id]);
    const row = rows[0];
    if (!row) throw new TroupeError('NOT_FOUND', `no task ${id}`);
    if (row.state === 'cancelled') return 'already';
    // A waiting task with its agent parked on a node (inbox.ts) is stopped there, as a running one.
    if (row.state === 'running' || (row.state === 'waiting' && row.owner_node !== null)) {
      if (row.cancel_reason === null) await client.query('UPDATE troupe_tasks SET cancel_reason = $2, updated_at = now() WHERE id = $1', [id, reason]);
      await client.query('SELECT pg_notify($1, $2)', [CANCEL_CHANNEL, id]);
      return 'requested';
    }
    if (row.state !== 'queued' && row.state !== 'sleeping' && row.state !== 'waiting' && row.state !== 'needs_attention') throw new TroupeError('ILLEGAL_TRANSITION', `task ${id} is ${row.state}; it cannot be cancelled`);
    await client.query(
      `UPDATE troupe_tasks SET state = 'cancelled', token = token + 1, cancel_reason = $2, waiting_for = NULL, settled_at = now(), updated_at = now() WHERE id = $1`,
      [id, reason],
    );
    await appendEvents(client, [eventOf('task.cancelled', { run: row.run, reason, from: row.state }, id)]);
    // A child settled: a parent joined on it may be ready (children.ts).
    if (row.parent_id !== null) await client.query('SELECT pg_notify($1, $2)', [JOIN_CHANNEL, row.parent_id]);
    return 'cancelled';
  });
}

/** States a user retry starts a new run from. */
const RETRYABLE: ReadonlySet<TaskState> = new Set<TaskState>(['failed', 'dropped', 'cancelled']);

/**
 * Starts a new run of a failed, dropped or cancelled task: queued at the back of its priority,
 * with a fresh attempt budget and without the last run's output, result, error, cancel or sleep's follow-up or progress, and a
 * `task.queued` event (`reason: 'retry'`, `from`: the state it left). A task that needs attention
 * (unmatched: no agent covered its `requires`) is routed again (routing.ts) and queued in the same
 * run (`reason: 'operator'`), as on LMDB; UNKNOWN_AGENT, changing nothing, while still no agent
 * covers it. NOT_FOUND for an unknown id, ILLEGAL_TRANSITION for any other state. Resolves with
 * the task's row as the retry left it.
 */
export async function retryTask(pool: pg.Pool, id: string): Promise<TaskRow> {
  if (unstorable(id)) throw new TroupeError('NOT_FOUND', `no task ${id}`);
  return transaction(pool, 'retrying a task', async (client) => {
    const { rows } = await client.query<{ state: TaskState; run: number; agent: string; requires: string[] | null }>('SELECT state, run, agent, requires FROM troupe_tasks WHERE id = $1 FOR UPDATE', [id]);
    const row = rows[0];
    if (!row) throw new TroupeError('NOT_FOUND', `no task ${id}`);
    if (row.state === 'needs_attention') return requeueUnmatched(client, id, row);
    if (!RETRYABLE.has(row.state)) throw new TroupeError('ILLEGAL_TRANSITION', `task ${id} is ${row.state}; only failed, dropped or cancelled tasks can be retried`);
    await client.query(RELEASE_HELD_ATTEMPT, [id]);
    await client.query(
      `UPDATE troupe_tasks SET state = 'queued', run = run + 1, attempts = 0, attempt_seq = 0, queued_order = nextval('troupe_queued_order'),
              queued_at = now(), run_at = now(), output = NULL, result = NULL, error = NULL, cancel_reason = NULL, follow_up = NULL, progress = NULL, started_at = NULL, settled_at = NULL, updated_at = now()
        WHERE id = $1`,
      [id],
    );
    await appendEvents(client, [eventOf('task.queued', { run: row.run + 1, reason: 'retry', from: row.state }, id)]);
    // Read in the retry's own transaction: queued, as no node can claim it before the commit.
    return (await readTask(client, id))!;
  });
}

/** An unmatched task routed again and queued in its run (see {@link retryTask}), in the retry's transaction. */
async function requeueUnmatched(client: pg.PoolClient, id: string, row: { run: number; agent: string; requires: string[] | null }): Promise<TaskRow> {
  const requires = row.requires ?? [];
  const agent = await routeAgain(client, row.agent, requires);
  if (agent === undefined) throw new TroupeError('UNKNOWN_AGENT', `task ${id}: no registered agent ${row.agent ? `named ${row.agent} ` : ''}covers [${requires.join(', ')}]`);
  await client.query(
    `UPDATE troupe_tasks SET state = 'queued', agent = $2, queued_order = nextval('troupe_queued_order'), queued_at = now(), run_at = now(), updated_at = now() WHERE id = $1`,
    [id, agent],
  );
  await appendEvents(client, [eventOf('task.queued', { run: row.run, reason: 'operator', from: 'needs_attention', agent }, id)]);
  return (await readTask(client, id))!;
}

/**
 * The cursor of the last event of the log that every reader can see now (below the snapshot's
 * xmin, as readEvents reads): a follower that starts there sees every event committed later, and
 * none before. '' for an empty log.
 */
export async function tailCursor(pool: Pick<pg.Pool, 'query'>): Promise<string> {
  const rows = await query<{ xid: string; last_seq: string }>(
    pool,
    'reading the end of the event log',
    END_OF_LOG,
  );
  return rows[0] ? cursorOf(rows[0].xid, rows[0].last_seq) : '';
}

/**
 * The cursor of the event numbered `seq`, for `events({ after: seq })`: found by scanning the
 * batches that may hold it (seqs are not in log order across transactions, so a number alone does
 * not say where in the log it is). INVALID_INPUT when no event has it.
 */
export async function cursorOfSeq(pool: Pick<pg.Pool, 'query'>, seq: number): Promise<string> {
  const rows = await query<{ xid: string }>(
    pool,
    'finding an event',
    `SELECT xid::text AS xid FROM troupe_event_batches b
      WHERE b.last_seq >= $1 AND EXISTS (SELECT 1 FROM json_array_elements(b.events) e WHERE (e->>0)::bigint = $1)
      LIMIT 1`,
    [seq],
  );
  if (!rows[0]) throw new TroupeError('INVALID_INPUT', `events: no event has seq ${seq}; pass an event's cursor or seq`);
  return cursorOf(rows[0].xid, seq);
}

/**
 * Whether `text` holds a NUL, which a PostgreSQL text column cannot: no task has such an id or
 * agent, so a lookup by one finds nothing (NOT_FOUND, as on LMDB) instead of failing the query.
 */
function unstorable(text: string): boolean {
  return text.includes('\u0000');
}

async function query<R extends pg.QueryResultRow>(pool: Pick<pg.Pool, 'query'>, what: string, text: string, values: unknown[] = []): Promise<R[]> {
  try {
    return (await pool.query<R>(text, values)).rows;
  } catch (error) {
    throw storeFailed(what, error);
  }
}
