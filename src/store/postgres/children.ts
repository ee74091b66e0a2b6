/**
 * Subtasks on the PostgreSQL queue (schema version 16): an agent's `ctx.spawn` and `ctx.join`,
 * with the LMDB runtime's semantics (src/tasks/interact.ts, src/steps/park.ts, resume.ts), each
 * transition one transaction with its event.
 *
 * - {@link spawnChild}: a submit with `parent_id` set, fenced by the parent's attempt token (a
 *   stopping attempt, one whose task a user cancelled, spawns nothing). The parent's row is
 *   share-locked: a cancel of the parent waits for the spawn, so its cascade sees the child.
 * - {@link parkForJoin}: the attempt joins some of its task's children: settled already, their
 *   outcomes come back at once; otherwise the task becomes `waiting` (`{ kind: 'join', ids }`).
 * - A child's settle (settle.ts, input-ends.ts, a cancel in tasks.ts) sends a NOTIFY on
 *   {@link JOIN_CHANNEL} naming its parent; only rows with a parent send one, in the statement that
 *   settles them (no extra statement, nothing for tasks without a parent). The NOTIFY only wakes:
 *   the parent's node reads the truth with {@link resumeJoin} (its agent runs again with the
 *   outcomes), and a parent waiting with no attempt (its node closed or died) resumes with a new
 *   run through {@link resumeDetachedJoins}. Both are also polled (the NOTIFY's backstop).
 */
import type pg from 'pg';
import { isTerminal, type TaskState } from '../../../machines/index.js';
import { TroupeError } from '../../errors.js';
import { checkLease, type Lease, type TaskRow } from './checks.js';
import { appendEvents, eventOf, HINTS, insertEvents, notifyIfAny } from './events.js';
import { insertTasks } from './queue.js';
import { SETTLED_SQL, storeFailed, transaction } from './transaction.js';

/** The channel a settled child notifies with its parent's id. */
export const JOIN_CHANNEL = 'troupe_join';

/**
 * A select-list expression for a settle statement: a NOTIFY on {@link JOIN_CHANNEL} per parent of
 * the rows of `cte` (with `parent_id` and `state` columns) that settled. Rows without a parent
 * are filtered out of what the statement already returns: no read, no write.
 */
export function notifyParents(cte: string): string {
  return `(SELECT count(pg_notify('${JOIN_CHANNEL}', parent_id)) FROM ${cte} WHERE parent_id IS NOT NULL AND state IN ${SETTLED_SQL})`;
}

/** An SQL condition: `waitingFor` (a waiting_for jsonb expression) is a join whose tasks are all settled (or gone). */
export function joinSettled(waitingFor: string): string {
  return `(${waitingFor} ->> 'kind' = 'join' AND NOT EXISTS (SELECT 1 FROM troupe_tasks j WHERE j.id IN (SELECT jsonb_array_elements_text(${waitingFor} -> 'ids')) AND j.state NOT IN ${SETTLED_SQL}))`;
}

/** What a joined task came to, as `ctx.join` resolves with it. */
export interface JoinOutcome {
  id: string;
  state: string;
  output?: unknown;
  result?: unknown;
  error?: { code: string; message: string };
}

/** The spawned child, as `ctx.spawn` resolves with it. */
export interface SpawnedChild {
  id: string;
  agent: string;
  state: TaskState;
}

/**
 * Submits `child` (checked by queue.ts checkTasks; its `parentId` becomes the task of `lease`) in
 * one transaction fenced by the parent's attempt token. A child whose idempotency key is taken is
 * not stored: the holder comes back (`created` false). FENCED when the attempt is no longer
 * current, ABORTED when its task's cancel was asked for; with `maxQueued`, AT_CAPACITY when the
 * cluster's queued tasks are full (admission.ts).
 */
export async function spawnChild(pool: pg.Pool, lease: Lease, child: TaskRow, maxQueued?: number): Promise<{ row: SpawnedChild; created: boolean }> {
  checkLease(lease, 'lease');
  const rows = [{ ...child, parentId: lease.taskId }];
  return transaction(pool, 'spawning a task', async (client) => {
    const { rows: parent } = await client.query<{ state: TaskState; token: string; cancel_reason: string | null }>('SELECT state, token, cancel_reason FROM troupe_tasks WHERE id = $1 FOR SHARE', [lease.taskId]);
    const task = parent[0];
    if (!task || Number(task.token) !== lease.token || task.state !== 'running') throw new TroupeError('FENCED', 'this attempt is no longer current');
    if (task.cancel_reason !== null) throw new TroupeError('ABORTED', 'the attempt is stopping (cancelled)');
    const [submitted] = await insertTasks(client, rows, maxQueued);
    const { rows: read } = await client.query<SpawnedChild>('SELECT id, agent, state FROM troupe_tasks WHERE id = $1', [submitted!.id]);
    return { row: read[0]!, created: submitted!.created };
  });
}

/** What {@link parkForJoin} did. */
export type JoinParked =
  /** Every joined task has settled: their outcomes, in the order asked. */
  | { kind: 'ready'; outcomes: JoinOutcome[] }
  /** The task is `waiting`; `before`: inputs its agents have taken so far (see inbox.ts). */
  | { kind: 'parked'; before: number }
  /** The attempt is no longer current: nothing was written. */
  | { kind: 'stale' };

/**
 * The attempt of `lease` joins `ids` (see the module comment). NOT_FOUND for an unknown id,
 * INVALID_INPUT for a task that is not a child of this one (a child joining its parent would wait
 * forever), ILLEGAL_TRANSITION while the agent waits already; nothing is written then.
 */
export async function parkForJoin(pool: pg.Pool, lease: Lease, attemptId: string, ids: readonly string[]): Promise<JoinParked> {
  checkLease(lease, 'lease');
  return transaction(pool, 'joining tasks', async (client) => {
    const { rows } = await client.query<{ state: TaskState; token: string; delivered: number }>('SELECT state, token, delivered FROM troupe_tasks WHERE id = $1 FOR UPDATE', [lease.taskId]);
    const task = rows[0];
    if (!task || Number(task.token) !== lease.token) return { kind: 'stale' };
    if (task.state === 'waiting') throw new TroupeError('ILLEGAL_TRANSITION', 'the agent is already waiting');
    if (task.state !== 'running') return { kind: 'stale' };
    const joined = await readJoined(client, ids);
    for (const id of ids) {
      const row = joined.get(id);
      if (!row) throw new TroupeError('NOT_FOUND', `join: no task ${id}`);
      if (row.parent_id !== lease.taskId) throw new TroupeError('INVALID_INPUT', `join: task ${id} is not a child of ${lease.taskId}`);
    }
    if (ids.every((id) => isTerminal(joined.get(id)!.state))) return { kind: 'ready', outcomes: outcomesOf(ids, joined) };
    await client.query(`UPDATE troupe_tasks SET state = 'waiting', waiting_for = $2, updated_at = now() WHERE id = $1`, [lease.taskId, JSON.stringify({ kind: 'join', ids })]);
    await appendEvents(client, [eventOf('task.waiting', { for: 'join', ids: [...ids] }, lease.taskId, attemptId)]);
    return { kind: 'parked', before: task.delivered };
  });
}

/** What {@link resumeJoin} found. */
export type JoinResumed = { kind: 'ready'; outcomes: JoinOutcome[] } | { kind: 'waiting' } | { kind: 'stale' };

/**
 * The agent of `lease`, parked in a join: when every joined task has settled, its task runs again
 * (in the same transaction) and their outcomes come back; `waiting` while one has not; `stale`
 * when the attempt no longer waits in a join (ended, or taken back).
 */
export async function resumeJoin(pool: pg.Pool, lease: Lease): Promise<JoinResumed> {
  return transaction(pool, 'resuming a join', async (client) => {
    const { rows } = await client.query<{ state: TaskState; token: string; waiting_for: { kind: string; ids?: string[] } | null }>('SELECT state, token, waiting_for FROM troupe_tasks WHERE id = $1 FOR UPDATE', [lease.taskId]);
    const task = rows[0];
    if (!task || Number(task.token) !== lease.token || task.state !== 'waiting' || task.waiting_for?.kind !== 'join') return { kind: 'stale' };
    const ids = task.waiting_for.ids ?? [];
    const joined = await readJoined(client, ids);
    if (!ids.every((id) => !joined.has(id) || isTerminal(joined.get(id)!.state))) return { kind: 'waiting' };
    await client.query(`UPDATE troupe_tasks SET state = 'running', waiting_for = NULL, updated_at = now() WHERE id = $1`, [lease.taskId]);
    return { kind: 'ready', outcomes: outcomesOf(ids, joined) };
  });
}

/** Of `taskIds`, those waiting in a join whose tasks have all settled (the poll behind the NOTIFY). */
export async function readyJoins(pool: Pick<pg.Pool, 'query'>, taskIds: readonly string[]): Promise<string[]> {
  try {
    const { rows } = await pool.query<{ id: string }>(`SELECT id FROM troupe_tasks t WHERE id = ANY($1::text[]) AND state = 'waiting' AND ${joinSettled('t.waiting_for')}`, [taskIds]);
    return rows.map((r) => r.id);
  } catch (error) {
    throw storeFailed('reading joins', error);
  }
}

/**
 * Tasks waiting in a join with no attempt (their node closed or died while the agent waited)
 * whose joined tasks have all settled resume with a new run, queued (`task.queued`, reason
 * `resume`), whose agent's join returns at once, as on LMDB. `parentIds`: only those (a NOTIFY
 * named them; their rows are waited for, so a detach in flight is seen once it commits); without,
 * up to 100 found through `troupe_tasks_detached` (rows another transaction holds are skipped).
 * Returns how many resumed.
 */
export async function resumeDetachedJoins(pool: Pick<pg.Pool, 'query'>, parentIds?: readonly string[]): Promise<number> {
  const which = parentIds === undefined ? 'ORDER BY id LIMIT 100 FOR UPDATE SKIP LOCKED' : 'AND id = ANY($1::text[]) ORDER BY id FOR UPDATE';
  try {
    const { rows } = await pool.query<{ id: string }>(
      `WITH ready AS (
         SELECT id FROM troupe_tasks t WHERE state = 'waiting' AND owner_node IS NULL AND ${joinSettled('t.waiting_for')} ${which}
       ), resumed AS (
         UPDATE troupe_tasks t SET state = 'queued', waiting_for = NULL, run = t.run + 1, attempts = 0, attempt_seq = 0, result = NULL, error = NULL,
                queued_order = nextval('troupe_queued_order'), queued_at = now(), run_at = now(), updated_at = now()
           FROM ready WHERE t.id = ready.id
         RETURNING t.id, t.run
       ), ev AS (
         ${insertEvents(`SELECT 'task.queued', id, NULL::text, jsonb_build_object('run', run, 'reason', 'resume') FROM resumed ORDER BY id`)}
       )
       SELECT id, ${notifyIfAny('ev', `'${HINTS.queued}'`)} AS notified FROM resumed`,
      parentIds === undefined ? [] : [parentIds],
    );
    return rows.length;
  } catch (error) {
    throw storeFailed('resuming detached joins', error);
  }
}

/** The children of `parentId` that have not settled (a cancel's cascade). */
export async function activeChildren(pool: Pick<pg.Pool, 'query'>, parentId: string): Promise<string[]> {
  try {
    const { rows } = await pool.query<{ id: string }>(`SELECT id FROM troupe_tasks WHERE parent_id = $1 AND state NOT IN ${SETTLED_SQL} ORDER BY parent_id, id`, [parentId]);
    return rows.map((r) => r.id);
  } catch (error) {
    throw storeFailed('reading a task\'s children', error);
  }
}

interface JoinedRow {
  id: string;
  parent_id: string | null;
  state: TaskState;
  output: unknown;
  result: unknown;
  error: { code: string; message: string } | null;
}

async function readJoined(client: Pick<pg.Pool, 'query'>, ids: readonly string[]): Promise<Map<string, JoinedRow>> {
  const stored = ids.filter((id) => !id.includes('\u0000'));
  const { rows } = await client.query<JoinedRow>('SELECT id, parent_id, state, output, result, error FROM troupe_tasks WHERE id = ANY($1::text[])', [stored]);
  return new Map(rows.map((r) => [r.id, r]));
}

/** The outcomes of `ids` as LMDB's join gives them (src/tasks/interact.ts #outcomes). */
function outcomesOf(ids: readonly string[], joined: ReadonlyMap<string, JoinedRow>): JoinOutcome[] {
  return ids.map((id) => {
    const row = joined.get(id);
    if (!row) return { id, state: 'unknown' };
    const out: JoinOutcome = { id, state: row.state };
    if (row.output !== null) out.output = row.output;
    if (row.result !== null) out.result = row.result;
    if (row.error !== null) out.error = { code: row.error.code, message: row.error.message };
    return out;
  });
}
