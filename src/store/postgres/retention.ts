/**
 * The retention sweep's durable verbs on PostgreSQL (the runtime's background sweep is
 * src/cluster/retention.ts): settled tasks past their state's age are removed with their attempt
 * rows and log lines, and the event log's batches older than `eventsMs` from its start.
 *
 * Every runtime of the cluster sweeps, one at a time: each transaction of a sweep first takes a
 * transaction-level advisory lock on {@link RETENTION_LOCK} with `pg_try_advisory_xact_lock`, and a
 * sweep that finds it taken stops there (`'skipped'` when that was its first). What is due is
 * decided by the database's clock (`now()`), never a node's. Each transaction is one statement of
 * at most `batch` rows, so none holds locks for long; a sweep goes on while a statement removed a
 * full batch.
 *
 * A task goes only in a settled state (done, failed, dropped, cancelled), by its settle time, read
 * through troupe_tasks_settled (schema version 11). Its rows in the tables without a foreign key to
 * it (troupe_attempts since version 5, troupe_logs) go in the same statement. Its events stay in
 * the log, as on LMDB.
 *
 * The log loses a prefix, in cursor order, of the batches below the read watermark (the snapshot's
 * xmin: no transaction still running can commit a batch into it), up to the first younger than
 * `eventsMs`; the control row keeps the cursor of the last batch removed and the greatest seq
 * removed, written in the same statement, and a reader whose cursor is before it is refused
 * ({@link checkEventCursor}, {@link checkEventSeq}): CURSOR_EXPIRED, as on LMDB.
 */
import type pg from 'pg';
import { TroupeError } from '../../errors.js';
import type { SettledState } from '../../tasks/retention-rules.js';
import { cursorExpired, cursorOf } from './events.js';
import { storeFailed, transaction } from './transaction.js';

/** The advisory lock key of the retention sweep: 'troupr' in ASCII (migrations hold 'troupe', controls 'troupc'). */
export const RETENTION_LOCK = 0x74726f757072;

/** Rows (tasks, or event batches) one statement removes at most. */
export const SWEEP_BATCH = 1_000;

/** What a sweep applies. */
export interface SweepRules {
  /** Per settled state, the age (ms since its settle) past which a task goes; Infinity keeps them. */
  ages: Readonly<Record<SettledState, number>>;
  /** Events older than this (ms) go; Infinity keeps them. */
  eventsMs: number;
}

/** What a sweep removed. */
export interface SweepOutcome {
  tasks: number;
  events: number;
}

/** Options of {@link sweepRetention}. */
export interface SweepOptions {
  /** Rows a statement removes at most. @default SWEEP_BATCH */
  batch?: number;
  /** Asked before each transaction: true stops the sweep there (the runtime closes). */
  stopped?: () => boolean;
}

const AGE = `r.age_ms * interval '1 millisecond'`;
/** troupe_tasks_settled's predicate: a query must state it for the planner to use the index (the state it gives is a parameter). */
const SETTLED = `('done', 'failed', 'dropped', 'cancelled')`;

/**
 * The statement that removes up to $3 settled tasks, `rules` giving the states (a relation `r` of
 * `state`, and whatever `horizon` reads of it), each task settled before `horizon`, oldest settled
 * first within a state, with their attempt rows and log lines, counted. The delete checks state
 * and horizon again on the row it locks: a task retried meanwhile (queued again) stays. The sweep
 * ({@link REMOVE_TASKS}) and rt.prune() ({@link pruneSettled}) differ only in `rules` and `horizon`.
 */
function removeSettled(rules: string, horizon: string): string {
  return `
  WITH r AS (${rules}),
  due AS (
    SELECT d.id FROM r CROSS JOIN LATERAL (
      SELECT t.id FROM troupe_tasks t
       WHERE t.state IN ${SETTLED} AND t.state = r.state AND t.settled_at < ${horizon}
       ORDER BY t.settled_at LIMIT $3) d
    LIMIT $3
  ),
  gone AS (
    DELETE FROM troupe_tasks t USING due, r
     WHERE t.id = due.id AND t.state = r.state AND t.settled_at < ${horizon}
    RETURNING t.id
  ),
  attempts AS (DELETE FROM troupe_attempts a USING gone WHERE a.task_id = gone.id RETURNING 1),
  logs AS (DELETE FROM troupe_logs l USING gone WHERE l.task_id = gone.id RETURNING 1),
  inputs AS (DELETE FROM troupe_inbox i USING gone WHERE i.task_id = gone.id RETURNING 1)
  SELECT (SELECT count(*) FROM gone)::int AS n, (SELECT count(*) FROM attempts)::int AS attempts, (SELECT count(*) FROM logs)::int AS log_lines,
         (SELECT count(*) FROM inputs)::int AS inputs`;
}

/**
 * Up to $3 tasks past their state's age ($1 states, $2 ages in ms) on the database's clock (see
 * {@link removeSettled}). Exported for its plan's test.
 */
export const REMOVE_TASKS = removeSettled('SELECT * FROM unnest($1::text[], $2::float8[]) AS r(state, age_ms)', `now() - ${AGE}`);

/** Up to $3 tasks in the states $1 settled before $2 (see {@link removeSettled}). Exported for its plan's test. */
export const PRUNE_TASKS = removeSettled('SELECT * FROM unnest($1::text[]) AS r(state)', '$2::timestamptz');

/**
 * The log's first $2 batches below the read watermark, in cursor order, up to the first whose
 * events are not all older than $1 ms, removed; the control row's removal point moved past them.
 */
const REMOVE_EVENTS = `
  WITH head AS (
    SELECT xid, last_seq, bool_and(at < now() - $1::float8 * interval '1 millisecond') OVER (ORDER BY xid, last_seq) AS old
      FROM (SELECT xid, last_seq, at FROM troupe_event_batches
             WHERE xid < pg_snapshot_xmin(pg_current_snapshot())
             ORDER BY xid, last_seq LIMIT $2) b
  ),
  gone AS (
    DELETE FROM troupe_event_batches e USING head
     WHERE head.old AND e.xid = head.xid AND e.last_seq = head.last_seq
    RETURNING e.xid, e.last_seq, e.n
  ),
  last AS (SELECT xid, last_seq, (SELECT max(last_seq) FROM gone) AS max_seq FROM gone ORDER BY xid DESC, last_seq DESC LIMIT 1),
  mark AS (
    UPDATE troupe_control c SET events_removed_xid = last.xid, events_removed_seq = last.last_seq,
           events_removed_max_seq = greatest(c.events_removed_max_seq, last.max_seq)
      FROM last WHERE c.id = 1 AND (c.events_removed_xid, c.events_removed_seq) < (last.xid, last.last_seq)
  )
  SELECT count(*)::int AS batches, coalesce(sum(n), 0)::int AS events FROM gone`;

/**
 * Removes what is due under `rules` (see the module comment). `'skipped'` when another runtime
 * held the lock at its first transaction; a sweep that loses it later stops with what it removed.
 */
export async function sweepRetention(pool: pg.Pool, rules: SweepRules, options: SweepOptions = {}): Promise<SweepOutcome | 'skipped'> {
  const batch = options.batch ?? SWEEP_BATCH;
  const stopped = options.stopped ?? (() => false);
  const out: SweepOutcome = { tasks: 0, events: 0 };
  let first = true;
  /** One statement in a transaction of its own, under the lock; undefined when the lock was taken. */
  const locked = async <R extends pg.QueryResultRow>(what: string, sql: string, values: unknown[]): Promise<R | undefined> => {
    const row = await transaction(pool, what, async (client) => {
      const { rows } = await client.query<{ got: boolean }>('SELECT pg_try_advisory_xact_lock($1) AS got', [RETENTION_LOCK]);
      return rows[0]!.got ? (await client.query<R>(sql, values)).rows[0]! : undefined;
    });
    if (row !== undefined) first = false;
    return row;
  };
  const states = (Object.keys(rules.ages) as SettledState[]).filter((state) => rules.ages[state] < Infinity);
  const ages = states.map((state) => rules.ages[state]);
  for (let full = states.length > 0; full && !stopped(); ) {
    const row = await locked<{ n: number }>('removing settled tasks past their retention', REMOVE_TASKS, [states, ages, batch]);
    if (!row) return first ? 'skipped' : out;
    out.tasks += row.n;
    full = row.n >= batch;
  }
  for (let full = rules.eventsMs < Infinity; full && !stopped(); ) {
    const row = await locked<{ batches: number; events: number }>('removing old events from the event log', REMOVE_EVENTS, [rules.eventsMs, batch]);
    if (!row) return first ? 'skipped' : out;
    out.events += row.events;
    full = row.batches >= batch;
  }
  return out;
}

/** The latest instant a Date holds (epoch ms): a later `before` removes what it would. */
const MAX_DATE_MS = 8.64e15;

/** What {@link pruneSettled} removed: tasks, and their attempt rows and log lines. */
export interface Pruned {
  tasks: number;
  attempts: number;
  logLines: number;
  /** Inbox rows (troupe_inbox). */
  inputs: number;
}

/**
 * rt.prune() on PostgreSQL: removes the tasks in `states` settled before `before` (epoch ms; a
 * fraction is rounded up, so a task goes exactly when the whole milliseconds its `settledAt` shows
 * are before it, as on LMDB), or before the database's `now()` (read once, to the microsecond: a
 * settle that committed before the call is before it) when `before` is undefined, with their
 * attempt rows, log lines and inputs, one statement of at most `batch` tasks per transaction, going on
 * while one was full. Each
 * transaction waits for the sweep's lock (it does not skip, as a sweep does): a prune and a sweep
 * never remove the same rows at once, so neither waits on the other's row locks in an order that
 * could deadlock, and a sweep that meets a prune skips, as it skips another's sweep.
 */
export async function pruneSettled(pool: pg.Pool, states: readonly SettledState[], before: number | undefined, batch = SWEEP_BATCH): Promise<Pruned> {
  const out: Pruned = { tasks: 0, attempts: 0, logLines: 0, inputs: 0 };
  if (states.length === 0) return out;
  let horizon: Date | string;
  try {
    horizon = before === undefined ? (await pool.query<{ now: string }>('SELECT now()::text AS now')).rows[0]!.now : new Date(Math.min(Math.ceil(before), MAX_DATE_MS));
  } catch (error) {
    throw storeFailed('reading the database clock', error);
  }
  for (let full = true; full; ) {
    const row = await transaction(pool, 'pruning settled tasks', async (client) => {
      await client.query('SELECT pg_advisory_xact_lock($1)', [RETENTION_LOCK]);
      return (await client.query<{ n: number; attempts: number; log_lines: number; inputs: number }>(PRUNE_TASKS, [states, horizon, batch])).rows[0]!;
    });
    out.tasks += row.n;
    out.attempts += row.attempts;
    out.logLines += row.log_lines;
    out.inputs += row.inputs;
    full = row.n >= batch;
  }
  return out;
}

/** How far the event log was removed: the cursor of the last batch removed ('' for none), and the greatest seq removed. */
export async function eventsRemovedThrough(pool: Pick<pg.Pool, 'query'>): Promise<{ cursor: string; maxSeq: number }> {
  try {
    const { rows } = await pool.query<{ xid: string; seq: string; max_seq: string }>(
      'SELECT events_removed_xid::text AS xid, events_removed_seq::text AS seq, events_removed_max_seq::text AS max_seq FROM troupe_control WHERE id = 1',
    );
    const row = rows[0]!;
    return { cursor: row.xid === '0' ? '' : cursorOf(row.xid, row.seq), maxSeq: Number(row.max_seq) };
  } catch (error) {
    throw storeFailed('reading how far the event log was removed', error);
  }
}

/**
 * CURSOR_EXPIRED when retention removed events after `cursor` (the log was removed past it): a
 * reader from there would miss them. Call it after reading from the cursor: the removal point
 * only moves forward, so one read after a page says whether that page's read had a gap.
 */
export async function checkEventCursor(pool: Pick<pg.Pool, 'query'>, cursor: string): Promise<void> {
  const removed = (await eventsRemovedThrough(pool)).cursor;
  if (cursor >= removed) return;
  throw cursorExpired(cursor, removed);
}

/** CURSOR_EXPIRED for `events({ after: seq })` of an event no longer in the log because retention removed it. */
export async function checkEventSeq(pool: Pick<pg.Pool, 'query'>, seq: number): Promise<void> {
  const removed = await eventsRemovedThrough(pool);
  if (seq > removed.maxSeq) return;
  throw new TroupeError(
    'CURSOR_EXPIRED',
    `events: seq ${seq} is older than what the event log keeps (retention removed the events through ${removed.cursor}); the oldest cursor still available is ${removed.cursor}, or omit after to read from the oldest event kept`,
  );
}
