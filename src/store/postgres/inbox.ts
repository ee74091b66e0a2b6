/**
 * Inputs on the PostgreSQL queue (schema version 15): `rt.sendInput` and an agent's
 * `ctx.waitForInput`, with the LMDB runtime's semantics (src/steps/park.ts, src/steps/resume.ts),
 * each transition one transaction with its event.
 *
 * - {@link sendInput}: the input is stored in the task's inbox (`troupe_inbox`, seq = the task's
 *   `inbox` + 1). An agent parked on an input (the task `waiting` with its attempt on its row) gets
 *   it at once: the task runs again, the input counts as delivered, and a NOTIFY on
 *   {@link INPUT_CHANNEL} names the task, so the node that runs the attempt reads it and answers
 *   the agent ({@link readDelivered}; its lease renewals see it too, should the NOTIFY be missed).
 *   A task waiting for input with no attempt (its node closed or died while it waited) resumes
 *   with a new run, queued, whose agent sees the pending inputs. Otherwise the input waits in the
 *   inbox for the next `waitForInput`. A key sent again returns the first item, stored once.
 * - {@link parkForInput}: an attempt asks for its next input. A pending one is handed over at once
 *   (the delivered counter moves on); otherwise the task becomes `waiting` with what it waits for.
 *   Fenced by the attempt's token.
 * - {@link unwaitInput}: the parked agent stopped waiting on its own (its input timeout): the task
 *   runs again, unless an input reached it first.
 *
 * An input handed to an attempt that never took it (its node was stopping it) is given back when
 * that attempt ends (settle.ts: the end's `handed`), so the next attempt receives it.
 */
import type pg from 'pg';
import { isTerminal, type TaskState } from '../../../machines/index.js';
import { TroupeError } from '../../errors.js';
import type { InboxItem } from '../../tasks/interact.js';
import { checkLease, type Lease } from './checks.js';
import { appendEvents, eventOf } from './events.js';
import { jsonOf, storeFailed, transaction } from './transaction.js';

/** The channel a delivered input notifies with its task's id: the node that runs the parked attempt reads it. */
export const INPUT_CHANNEL = 'troupe_input';

/** An input as stored in a task's inbox: the public InboxItem (`at` on the database's clock here). */
export type { InboxItem } from '../../tasks/interact.js';

/** What a task waits for while `waiting` (`troupe_tasks.waiting_for`). */
export interface WaitingFor {
  kind: 'input';
  prompt?: unknown;
}

interface ItemRow {
  seq: number;
  message: unknown;
  idempotency_key: string | null;
  at: number;
}

const ITEM_COLUMNS = 'seq, message, idempotency_key, (extract(epoch FROM at) * 1000)::float8 AS at';

/**
 * Stores an input for `taskId` (see the module comment); `message` must be plain JSON data (the
 * caller checked the spec). NOT_FOUND for an unknown task; ILLEGAL_TRANSITION for a settled one,
 * unless `idempotencyKey` was sent to it before (its item comes back). Nothing is written then.
 */
export async function sendInput(pool: pg.Pool, taskId: string, message: unknown, idempotencyKey?: string): Promise<InboxItem> {
  if (taskId.includes('\u0000')) throw new TroupeError('NOT_FOUND', `no task ${taskId}`);
  const json = jsonOf(message, 'sendInput: message');
  return transaction(pool, 'sending an input', async (client) => {
    type Row = { state: TaskState; run: number; owner_node: string | null; waiting_for: WaitingFor | null; inbox: number; delivered: number; cancel_reason: string | null };
    const { rows } = await client.query<Row>('SELECT state, run, owner_node, waiting_for, inbox, delivered, cancel_reason FROM troupe_tasks WHERE id = $1 FOR UPDATE', [taskId]);
    const task = rows[0];
    if (!task) throw new TroupeError('NOT_FOUND', `no task ${taskId}`);
    // A repeated key returns its item even after the task settled: the send already happened.
    if (idempotencyKey !== undefined) {
      const sent = await client.query<ItemRow>(`SELECT ${ITEM_COLUMNS} FROM troupe_inbox WHERE task_id = $1 AND idempotency_key = $2`, [taskId, idempotencyKey]);
      if (sent.rows[0]) return itemOf(taskId, sent.rows[0], task.delivered);
    }
    if (isTerminal(task.state)) throw new TroupeError('ILLEGAL_TRANSITION', `task ${taskId} is ${task.state}; it takes no more input`);
    const seq = task.inbox + 1;
    const waitsForInput = task.state === 'waiting' && task.waiting_for?.kind === 'input';
    // Never to an attempt being cancelled: its wait is being aborted.
    const deliverNow = waitsForInput && task.owner_node !== null && task.cancel_reason === null && task.delivered + 1 === seq;
    // No attempt waits for it: the input itself resumes the task with a new run.
    const resumeRun = waitsForInput && task.owner_node === null;
    const { rows: stored } = await client.query<ItemRow>(`INSERT INTO troupe_inbox (task_id, seq, message, idempotency_key) VALUES ($1, $2, $3, $4) RETURNING ${ITEM_COLUMNS}`, [taskId, seq, json, idempotencyKey ?? null]);
    if (deliverNow) {
      await client.query(`UPDATE troupe_tasks SET inbox = $2, delivered = $2, state = 'running', waiting_for = NULL, updated_at = now() WHERE id = $1`, [taskId, seq]);
      await client.query('SELECT pg_notify($1, $2)', [INPUT_CHANNEL, taskId]);
    } else if (resumeRun) {
      await client.query(
        `UPDATE troupe_tasks SET inbox = $2, state = 'queued', waiting_for = NULL, run = run + 1, attempts = 0, attempt_seq = 0, result = NULL, error = NULL,
                queued_order = nextval('troupe_queued_order'), queued_at = now(), run_at = now(), updated_at = now()
          WHERE id = $1`,
        [taskId, seq],
      );
    } else {
      await client.query('UPDATE troupe_tasks SET inbox = $2, updated_at = now() WHERE id = $1', [taskId, seq]);
    }
    const events = [eventOf('task.input', idempotencyKey === undefined ? { seq, delivered: deliverNow } : { seq, idempotencyKey, delivered: deliverNow }, taskId)];
    if (resumeRun) events.push(eventOf('task.queued', { run: task.run + 1, reason: 'resume' }, taskId));
    await appendEvents(client, events);
    return itemOf(taskId, stored[0]!, deliverNow ? seq : task.delivered);
  });
}

/** What {@link parkForInput} did. */
export type Parked =
  /** A pending input was handed over: the agent gets `message` now. `before`: inputs delivered before it. */
  | { kind: 'delivered'; seq: number; message: unknown; before: number }
  /** The task is `waiting`; `before`: inputs delivered so far. */
  | { kind: 'parked'; before: number }
  /** The attempt is no longer current (or its task is not running): nothing was written. */
  | { kind: 'stale' };

/**
 * The attempt of `lease` waits for its next input (see the module comment), with `prompt` shown
 * while it waits. INVALID_INPUT (nothing written) when the prompt is not plain JSON data.
 */
export async function parkForInput(pool: pg.Pool, lease: Lease, attemptId: string, prompt: unknown): Promise<Parked> {
  checkLease(lease, 'lease');
  const waitingFor = jsonOf(prompt === undefined ? { kind: 'input' } : { kind: 'input', prompt }, 'waitForInput: prompt');
  return transaction(pool, 'waiting for input', async (client) => {
    const { rows } = await client.query<{ state: TaskState; token: string; inbox: number; delivered: number }>('SELECT state, token, inbox, delivered FROM troupe_tasks WHERE id = $1 FOR UPDATE', [lease.taskId]);
    const task = rows[0];
    if (!task || Number(task.token) !== lease.token || task.state !== 'running') return { kind: 'stale' };
    const before = task.delivered;
    if (before < task.inbox) {
      // An input is pending: hand it over now, recording the delivery.
      const item = await client.query<{ message: unknown }>('SELECT message FROM troupe_inbox WHERE task_id = $1 AND seq = $2', [lease.taskId, before + 1]);
      if (!item.rows[0]) throw new TroupeError('STORE_FAILED', `inbox item ${before + 1} of task ${lease.taskId} is missing`);
      await client.query('UPDATE troupe_tasks SET delivered = $2, updated_at = now() WHERE id = $1', [lease.taskId, before + 1]);
      return { kind: 'delivered', seq: before + 1, message: item.rows[0].message, before };
    }
    await client.query(`UPDATE troupe_tasks SET state = 'waiting', waiting_for = $2, updated_at = now() WHERE id = $1`, [lease.taskId, waitingFor]);
    await appendEvents(client, [eventOf('task.waiting', prompt === undefined ? { for: 'input' } : { for: 'input', prompt }, lease.taskId, attemptId)]);
    return { kind: 'parked', before };
  });
}

/**
 * The parked attempt of `lease` stopped waiting (its input timeout): its task runs again. False
 * when it is not waiting any more (an input reached it first, or the attempt is no longer current).
 */
export async function unwaitInput(pool: Pick<pg.Pool, 'query'>, lease: Lease): Promise<boolean> {
  try {
    const { rowCount } = await pool.query(`UPDATE troupe_tasks SET state = 'running', waiting_for = NULL, updated_at = now() WHERE id = $1 AND token = $2 AND state = 'waiting'`, [lease.taskId, lease.token]);
    return rowCount === 1;
  } catch (error) {
    throw storeFailed('ending a wait for input', error);
  }
}

/**
 * The input after the `handed` first ones, when {@link sendInput} delivered it to the attempt of
 * `lease` (its task runs again, and its delivered counter passed `handed`); undefined otherwise.
 */
export async function readDelivered(pool: Pick<pg.Pool, 'query'>, lease: Lease, handed: number): Promise<{ seq: number; message: unknown } | undefined> {
  try {
    const { rows } = await pool.query<{ seq: number; message: unknown }>(
      `SELECT i.seq, i.message FROM troupe_tasks t JOIN troupe_inbox i ON i.task_id = t.id AND i.seq = $3 + 1
        WHERE t.id = $1 AND t.token = $2 AND t.state <> 'waiting' AND t.delivered > $3`,
      [lease.taskId, lease.token, handed],
    );
    return rows[0];
  } catch (error) {
    throw storeFailed('reading a delivered input', error);
  }
}

function itemOf(taskId: string, row: ItemRow, delivered: number): InboxItem {
  const item: InboxItem = { taskId, seq: row.seq, message: row.message, at: Math.round(row.at), delivered: row.seq <= delivered };
  if (row.idempotency_key !== null) item.idempotencyKey = row.idempotency_key;
  return item;
}
