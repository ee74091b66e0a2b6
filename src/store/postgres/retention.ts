/**
 * The retention sweep's durable verbs on PostgreSQL (the runtime's background sweep is
 * src/cluster/retention.ts), applying the LMDB runtime's rules (src/tasks/retention.ts): settled
 * tasks past their rule are removed with their attempt rows, log lines and inputs, and the event
 * log's batches older than `eventsMs` from its start.
 *
 * The rule of a settled task, as on LMDB: its own for the state it settled in (the task's
 * `retention` column, an age: it goes once its expiry, settle time plus age, has passed), else its
 * agent's for that state as stored on the agent's troupe_agents row by whichever runtime
 * registered it last ({@link setAgentRetention}), else the sweeping runtime's. An agent's or the
 * runtime's rule is `{ ageMs, count }`: a task goes once it settled longer than `ageMs` ago, or is
 * no longer among the `count` most recently settled (settle time, then id) of its agent in that
 * state under those rules (a task with its own rule for the state is not counted), whichever
 * comes first. A parent stays while any of its children is stored (troupe_tasks_children), and
 * goes in the sweep that removes the last of them (the statement after it: a statement does not
 * see its own deletes), as on LMDB.
 *
 * Every runtime of the cluster sweeps, one at a time: each transaction of a sweep first takes a
 * transaction-level advisory lock on {@link RETENTION_LOCK} with `pg_try_advisory_xact_lock`, and a
 * sweep that finds it taken stops there (`'skipped'` when that was its first). What is due is
 * decided by the database's clock (`now()`), never a node's. Each transaction is one statement of
 * at most `batch` rows, so none holds locks for long; a sweep goes on while a statement removed a
 * full batch. Tasks with rules of their own are read by expiry from troupe_tasks_expiring, the
 * others per agent and state from troupe_tasks_retained (schema version 19). Its rows in the
 * tables without a foreign key to it (troupe_attempt_rows, troupe_logs, troupe_inbox) go in the
 * same statement; the attempt its row holds (version 22) goes with the row, and is counted with
 * them. Its events stay in the log, as on LMDB.
 *
 * The log loses a prefix, in cursor order, of the batches below the read watermark (the snapshot's
 * xmin: no transaction still running can commit a batch into it), up to the first younger than
 * `eventsMs`; the control row keeps the cursor of the last batch removed and the greatest seq
 * removed, written in the same statement, and a reader whose cursor is before it is refused
 * ({@link checkEventCursor}, {@link checkEventSeq}): CURSOR_EXPIRED, as on LMDB.
 */
import type pg from 'pg';
import { TroupeError } from '../../errors.js';
import { resolveAgentRetention, SETTLED_STATES, type ResolvedPolicy, type ResolvedRule, type SettledState } from '../../tasks/retention-rules.js';
import { checkAgent } from './checks.js';
import { cursorExpired, cursorOf } from './events.js';
import { SETTLED_SQL, storeFailed, transaction } from './transaction.js';

/** The advisory lock key of the retention sweep: 'troupr' in ASCII (migrations hold 'troupe', controls 'troupc'). */
export const RETENTION_LOCK = 0x74726f757072;

/** Rows (tasks, or event batches) one statement removes at most. */
export const SWEEP_BATCH = 1_000;

/** What a sweep applies. */
export interface SweepRules {
  /** The runtime's rule per settled state (an agent's or a task's own replaces it, see the module comment). */
  rules: Readonly<Record<SettledState, ResolvedRule>>;
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

/**
 * troupe_tasks_retained's predicate: a settled task under its agent's or the runtime's rule. A
 * query states an index's predicate (`state IN SETTLED_SQL` alone for troupe_tasks_settled) for
 * the planner to use the index: the state it gives is a parameter.
 */
const RETAINED = `t.state IN ${SETTLED_SQL} AND NOT coalesce(t.retention ? t.state, false)`;
/** troupe_tasks_expiring's predicate (a settled task with a rule of its own for its state) and key. */
const OWN = `t.state IN ${SETTLED_SQL} AND t.retention ? t.state`;
const EXPIRY = 'troupe_expiry(t.settled_at, t.state, t.retention)';
/** A task none of whose children is stored (troupe_tasks_children): a parent stays until they have all gone, as on LMDB. */
const CHILDLESS = 'NOT EXISTS (SELECT 1 FROM troupe_tasks c WHERE c.parent_id = t.id)';
/**
 * The instant `age` ms before now(). Ages beyond 1e14 ms (3,000 years, which no settle since 1970
 * is older than) are taken as that, so the subtraction stays in timestamptz's range.
 */
const before = (age: string) => `now() - least(${age}, 1e14::float8) * interval '1 millisecond'`;

/**
 * A statement that removes the tasks `withs` finds (its last query is `due`, of ids), each only if
 * `recheck` still holds on the row it locks (with `using` joined: a task retried meanwhile stays),
 * with their attempt rows, log lines and inputs, counted; `freed` counts the removed tasks that
 * had a parent (which may be due once they are gone).
 */
function removeDue(withs: string, recheck: string, using = ''): string {
  return `
  WITH ${withs},
  gone AS (
    DELETE FROM troupe_tasks t USING due${using}
     WHERE t.id = due.id AND ${recheck}
    RETURNING t.id, t.parent_id, t.attempt_exit IS NOT NULL AS held
  ),
  attempts AS (DELETE FROM troupe_attempt_rows a USING gone WHERE a.task_id = gone.id RETURNING 1),
  logs AS (DELETE FROM troupe_logs l USING gone WHERE l.task_id = gone.id RETURNING 1),
  inputs AS (DELETE FROM troupe_inbox i USING gone WHERE i.task_id = gone.id RETURNING 1)
  SELECT (SELECT count(*) FROM gone)::int AS n, ((SELECT count(*) FROM attempts) + (SELECT count(*) FROM gone WHERE held))::int AS attempts, (SELECT count(*) FROM logs)::int AS log_lines,
         (SELECT count(*) FROM inputs)::int AS inputs, (SELECT count(*) FROM gone WHERE parent_id IS NOT NULL)::int AS freed`;
}

/**
 * Up to $1 tasks with a rule of their own for the state they settled in, past their expiry on the
 * database's clock, soonest expired first (troupe_tasks_expiring). Exported for its plan's test.
 */
export const REMOVE_EXPIRED = removeDue(`due AS (SELECT t.id FROM troupe_tasks t WHERE ${OWN} AND ${EXPIRY} < now() AND ${CHILDLESS} ORDER BY ${EXPIRY} LIMIT $1)`, `t.state IN ${SETTLED_SQL} AND ${EXPIRY} < now()`);

/**
 * Up to $4 tasks past their agent's rule, or the runtime's ($1 states, $2 ages in ms and $3 counts,
 * null where a side does not limit), read per agent and state from troupe_tasks_retained: `pairs`
 * lists the agents and states it holds (one index probe each, as LMDB's sweep steps from one to
 * the next); `rules` gives each its rule (the agent's stored one for the state, else the
 * runtime's); `bounds` the newest task due, the later of the newest settled before the age's
 * horizon and the one after the `count` newest (the index read newest first, `count` entries
 * skipped), and everything at or before it (settle time, then id) goes, oldest first. Exported for
 * its plan's test.
 */
export const REMOVE_RETAINED = removeDue(
  `RECURSIVE pairs AS (
    (SELECT t.agent, t.state FROM troupe_tasks t WHERE ${RETAINED} ORDER BY t.agent, t.state LIMIT 1)
    UNION ALL
    SELECT n.agent, n.state FROM pairs p CROSS JOIN LATERAL (
      SELECT t.agent, t.state FROM troupe_tasks t WHERE ${RETAINED} AND (t.agent, t.state) > (p.agent, p.state) ORDER BY t.agent, t.state LIMIT 1) n
  ),
  rules AS (
    SELECT p.agent, p.state,
           CASE WHEN a.retention ? p.state THEN (a.retention -> p.state ->> 'ageMs')::float8 ELSE r.age_ms END AS age_ms,
           CASE WHEN a.retention ? p.state THEN (a.retention -> p.state ->> 'count')::bigint ELSE r.keep END AS keep
      FROM pairs p JOIN unnest($1::text[], $2::float8[], $3::bigint[]) AS r(state, age_ms, keep) ON r.state = p.state
      LEFT JOIN troupe_agents a ON a.name = p.agent
  ),
  bounds AS MATERIALIZED (
    SELECT rules.agent, rules.state, b.settled_at, b.id FROM rules CROSS JOIN LATERAL (
      SELECT c.settled_at, c.id FROM (
        (SELECT t.settled_at, t.id FROM troupe_tasks t
          WHERE ${RETAINED} AND t.agent = rules.agent AND t.state = rules.state AND t.settled_at < ${before('rules.age_ms')}
          ORDER BY t.settled_at DESC, t.id DESC LIMIT 1)
        UNION ALL
        (SELECT t.settled_at, t.id FROM troupe_tasks t
          WHERE ${RETAINED} AND t.agent = rules.agent AND t.state = rules.state AND rules.keep IS NOT NULL
          ORDER BY t.settled_at DESC, t.id DESC OFFSET rules.keep LIMIT 1)
      ) c ORDER BY c.settled_at DESC, c.id DESC LIMIT 1) b
  ),
  due AS (
    SELECT d.id FROM bounds b CROSS JOIN LATERAL (
      SELECT t.id FROM troupe_tasks t
       WHERE ${RETAINED} AND t.agent = b.agent AND t.state = b.state AND (t.settled_at, t.id) <= (b.settled_at, b.id) AND ${CHILDLESS}
       ORDER BY t.settled_at, t.id LIMIT $4) d
    LIMIT $4
  )`,
  // A task's `retention` never changes: the state and settle time say whether it is still due.
  't.agent = b.agent AND t.state = b.state AND (t.settled_at, t.id) <= (b.settled_at, b.id)',
  ', bounds b',
);

/**
 * Up to $3 tasks in the states $1 settled before $2, oldest settled first within a state, whatever
 * their rule (troupe_tasks_settled). Exported for its plan's test.
 */
export const PRUNE_TASKS = removeDue(
  `r AS (SELECT * FROM unnest($1::text[]) AS r(state)),
  due AS (
    SELECT d.id FROM r CROSS JOIN LATERAL (
      SELECT t.id FROM troupe_tasks t
       WHERE t.state IN ${SETTLED_SQL} AND t.state = r.state AND t.settled_at < $2::timestamptz
       ORDER BY t.settled_at LIMIT $3) d
    LIMIT $3
  )`,
  't.state = r.state AND t.settled_at < $2::timestamptz',
  ', r',
);

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
  const tasks = async (what: string, sql: string, values: unknown[]): Promise<boolean> => {
    // On while a statement was full, or removed children whose parents may now go (in the next one:
    // a statement does not see its own deletes).
    for (let more = true; more && !stopped(); ) {
      const row = await locked<{ n: number; freed: number }>(what, sql, [...values, batch]);
      if (!row) return false;
      out.tasks += row.n;
      more = row.n >= batch || row.freed > 0;
    }
    return true;
  };
  const limits = (side: 'ageMs' | 'count') => SETTLED_STATES.map((state) => finite(rules.rules[state][side]));
  if (!(await tasks('removing settled tasks past their own retention', REMOVE_EXPIRED, []))) return first ? 'skipped' : out;
  if (!(await tasks('removing settled tasks past their retention', REMOVE_RETAINED, [SETTLED_STATES, limits('ageMs'), limits('count')]))) return first ? 'skipped' : out;
  for (let full = rules.eventsMs < Infinity; full && !stopped(); ) {
    const row = await locked<{ batches: number; events: number }>('removing old events from the event log', REMOVE_EVENTS, [rules.eventsMs, batch]);
    if (!row) return first ? 'skipped' : out;
    out.events += row.events;
    full = row.batches >= batch;
  }
  return out;
}

/** A side of a rule as stored and bound: null where it does not limit. */
function finite(value: number): number | null {
  return value === Infinity ? null : value;
}

/**
 * Stores `agent`'s retention rules for the whole cluster, replacing those stored (a registration
 * that gives none does not call it, and leaves them): a sweep on any runtime applies them to the
 * agent's tasks, whether or not it runs the agent. Each rule is checked as a registration's is;
 * INVALID_INPUT and nothing written for a bad one.
 */
export async function setAgentRetention(pool: pg.Pool, agent: string, policy: ResolvedPolicy): Promise<void> {
  checkAgent(agent, 'agent');
  let rules: ResolvedPolicy;
  try {
    rules = resolveAgentRetention(policy, `agent ${agent}`) ?? {};
  } catch (error) {
    throw new TroupeError('INVALID_INPUT', (error as Error).message);
  }
  const stored = Object.fromEntries(Object.entries(rules).map(([state, rule]) => [state, { ageMs: finite(rule.ageMs), count: finite(rule.count) }]));
  try {
    await pool.query(
      `INSERT INTO troupe_agents (name, retention) VALUES ($1, $2::jsonb)
       ON CONFLICT (name) DO UPDATE SET retention = excluded.retention, updated_at = now()`,
      [agent, JSON.stringify(stored)],
    );
  } catch (error) {
    throw storeFailed('storing the agent retention', error);
  }
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
