/**
 * The cluster's event log on PostgreSQL, read with no gap and no duplicate (issue #15).
 *
 * A `bigserial` is handed out when a row is inserted, not when its transaction commits, so a
 * reader that follows `seq` can pass an event whose transaction commits later, and never see it.
 * Readers here order events by (writer's transaction id, seq) and read only below the snapshot's
 * xmin: every transaction with an older id has ended, and any transaction still to write gets an
 * id at or above it, so nothing can appear behind a cursor once read past. The cursor is that
 * pair, `<xid>:<seq>`. Each statement's events are stored as one row of troupe_event_batches
 * (schema version 6), every event with its own seq, and a reader expands them: a cursor inside a
 * row resumes after its event. NOTIFY (sent with the writer's commit) only wakes readers; a poll backs it
 * up, and a reader whose LISTEN connection breaks connects again. Its payload carries hints (see
 * {@link HINTS}) for listeners that do not read the log: that a task was queued, that the
 * controls changed.
 */
import pg from 'pg';
import type { EventData, EventType } from '../../api/events.js';
import { TroupeError } from '../../errors.js';
import { unrefClient } from './unref-client.js';

/** One event as the log holds it. */
export interface StoredEvent {
  /** Opaque, sorts in read order: `<xid>:<seq>`, zero-padded. */
  cursor: string;
  seq: number;
  at: number;
  type: string;
  taskId?: string;
  attemptId?: string;
  data?: unknown;
}

/** What an event is given as. */
export interface NewEvent {
  type: string;
  taskId?: string;
  attemptId?: string;
  data?: unknown;
}

/**
 * An event of the runtime's catalogue (src/api/events.ts), its payload typed by its type: what the
 * queue's transitions append, so a name or a payload that strays from the catalogue does not compile.
 */
export function eventOf<K extends EventType>(type: K, data: EventData<K>, taskId?: string, attemptId?: string): NewEvent {
  const event: NewEvent = { type, data };
  if (taskId !== undefined) event.taskId = taskId;
  if (attemptId !== undefined) event.attemptId = attemptId;
  return event;
}

const CHANNEL = 'troupe_events';
const WIDTH = 20;

/** The cursor of the event of transaction `xid` numbered `seq`. */
export function cursorOf(xid: string | bigint, seq: string | number | bigint): string {
  return `${String(xid).padStart(WIDTH, '0')}:${String(seq).padStart(WIDTH, '0')}`;
}

/** The (xid, seq) of a cursor; INVALID_INPUT for anything else. The start of the log is ''. */
export function parseCursor(cursor: string): { xid: string; seq: string } {
  if (cursor === '') return { xid: '0', seq: '0' };
  const match = /^(\d{1,20}):(\d{1,20})$/.exec(cursor);
  if (!match) throw new TroupeError('INVALID_INPUT', `invalid event cursor ${JSON.stringify(cursor)}`);
  return { xid: BigInt(match[1]!).toString(), seq: BigInt(match[2]!).toString() };
}

/**
 * The hints a NOTIFY on the event channel carries, comma-separated in its payload (empty: none):
 * `queued`, the commit queued a task (a submit, a retry, a requeue: a node may claim it now);
 * `control`, it froze or unfroze the cluster; `agents`, it paused an agent or ended a pause
 * (backoff.ts), or stored an agent's limits (limits.ts). A runtime that reads no event (nothing listens to its events) still wakes its
 * claimer and keeps its freeze flag and its agents' pauses by them.
 */
export const HINTS = { queued: 'queued', control: 'control', agents: 'agents' } as const;

/** The NOTIFY payload for events of these types (see {@link HINTS}). */
export function hintsOf(types: Iterable<string>): string {
  const hints = new Set<string>();
  for (const type of types) {
    if (type === 'task.queued') hints.add(HINTS.queued);
    else if (type === 'runtime.frozen' || type === 'runtime.unfrozen') hints.add(HINTS.control);
    else if (type === 'agent.paused' || type === 'agent.resumed') hints.add(HINTS.agents);
  }
  return [...hints].join(',');
}

/** Appends events in the caller's transaction (they appear once it commits) and wakes readers then. */
export async function appendEvents(client: Pick<pg.PoolClient, 'query'>, events: readonly NewEvent[]): Promise<void> {
  if (events.length === 0) return;
  await client.query(
    insertEvents(`SELECT type, task_id, attempt_id, data FROM unnest($1::text[], $2::text[], $3::text[], $4::json[]) WITH ORDINALITY AS u(type, task_id, attempt_id, data, ord) ORDER BY ord`),
    [events.map((e) => e.type), events.map((e) => e.taskId ?? null), events.map((e) => e.attemptId ?? null), events.map((e) => (e.data === undefined ? null : JSON.stringify(e.data)))],
  );
  await notifyHints(client, hintsOf(events.map((e) => e.type)));
}

/** Wakes readers at the caller's commit with `hints` (comma-separated {@link HINTS}; '' for none). */
export async function notifyHints(client: Pick<pg.PoolClient, 'query'>, hints: string): Promise<void> {
  await client.query('SELECT pg_notify($1, $2)', [CHANNEL, hints]);
}

/**
 * A data-modifying statement (or CTE body) that appends the events `select` yields, as (type,
 * task_id, attempt_id, data) rows in log order, as one row of troupe_event_batches (schema version
 * 6): each event takes its seq from the log's sequence in that order. For a statement that writes
 * them with the change they describe (one round trip): pair it with {@link notifyIfAny}. Writes
 * nothing when `select` yields no row.
 */
export function insertEvents(select: string): string {
  // `select` sorts, so it is not flattened into this query: its rows reach nextval() in log order.
  return `INSERT INTO troupe_event_batches (last_seq, n, events)
     SELECT max(seq), count(*), json_agg(json_build_array(seq, type, task_id, attempt_id, data) ORDER BY seq)
       FROM (SELECT nextval('troupe_event_seq') AS seq, s.* FROM (${select}) AS s(type, task_id, attempt_id, data)) q
     HAVING count(*) > 0
     RETURNING last_seq`;
}

/**
 * A select-list expression that wakes readers at commit when the CTE `cte` (an {@link insertEvents}) wrote any
 * event; `hints`: an SQL text expression for the payload (see {@link HINTS}), none by default.
 */
export function notifyIfAny(cte: string, hints = "''"): string {
  return `(SELECT pg_notify('${CHANNEL}', ${hints}) WHERE EXISTS (SELECT 1 FROM ${cte}))`;
}

/** The removal point of the log (retention.ts), as columns of a read (InitPlans: read once per statement). */
const REMOVED = `(SELECT events_removed_xid::text FROM troupe_control WHERE id = 1) AS removed_xid, (SELECT events_removed_seq::text FROM troupe_control WHERE id = 1) AS removed_seq`;

/** One event as a batch's json holds it: [seq, type, task_id, attempt_id, data]. */
type BatchedEvent = [number, string, string | null, string | null, unknown];

/**
 * CURSOR_EXPIRED for a reader at `cursor` when retention removed the events through `removed`,
 * past it: the reader would miss them. The message names the oldest cursor still available.
 */
export function cursorExpired(cursor: string, removed: string): TroupeError {
  return new TroupeError(
    'CURSOR_EXPIRED',
    `events: cursor ${cursor === '' ? "'' (the start of the log)" : cursor} is older than what the event log keeps (retention removed the events through ${removed}); the oldest cursor still available is ${removed}, or omit after to read from the oldest event kept`,
  );
}

/**
 * Up to `limit` events after `after`, in cursor order, from transactions that have all ended.
 * `expire`: a read that finds events also reads, in its snapshot, how far retention removed the
 * log, and rejects with CURSOR_EXPIRED when that is past `after` (the events it returns would
 * follow a gap). A read that finds none leaves its cursor where it was, so the read that finds
 * the next events sees the removal: every event before them has ended, and a removal of one is in
 * that read's snapshot with the removal point it moved (one statement: retention.ts).
 */
export async function readEvents(pool: Pick<pg.Pool, 'query'>, after: string, limit = 1_000, expire = false): Promise<StoredEvent[]> {
  const { xid, seq } = parseCursor(after);
  // Batches that hold an event after the cursor, in order, as many as hold the first `limit` of
  // them (each holds at least one). The first may hold events up to the cursor too: dropped below.
  // Every order is by the table's xid8 (b.xid, w.xid), never by the text the outer select list
  // calls xid: as text, '1000' sorts before '999', and a page that spans a power of ten would pass
  // events by (test/cluster/ crosses one).
  const { rows } = await pool.query<{ xid: string; at: Date; events: BatchedEvent[]; removed_xid?: string; removed_seq?: string }>(
    `SELECT w.xid::text AS xid, w.at, w.events${expire ? `, ${REMOVED}` : ''} FROM (
       SELECT b.xid, b.last_seq, b.at, b.events, sum(b.n) OVER (ORDER BY b.xid, b.last_seq) - b.n AS before FROM (
         SELECT xid, last_seq, at, events, n FROM troupe_event_batches
          WHERE (xid, last_seq) > ($1::text::xid8, $2::bigint)
            AND xid < pg_snapshot_xmin(pg_current_snapshot())
          ORDER BY xid, last_seq
          LIMIT $3
       ) b
     ) w
     WHERE w.before < $3
     ORDER BY w.xid, w.last_seq`,
    [xid, seq, limit],
  );
  if (expire && rows.length > 0) {
    const removed = rows[0]!.removed_xid === '0' ? '' : cursorOf(rows[0]!.removed_xid!, rows[0]!.removed_seq!);
    const from = after === '' ? '' : cursorOf(xid, seq);
    if (from < removed) throw cursorExpired(from, removed);
  }
  const events: StoredEvent[] = [];
  const afterSeq = Number(seq);
  for (const batch of rows) {
    const inCursorXid = BigInt(batch.xid) === BigInt(xid);
    const at = batch.at.getTime();
    for (const [eventSeq, type, taskId, attemptId, data] of batch.events) {
      if (inCursorXid && eventSeq <= afterSeq) continue;
      if (events.length === limit) return events;
      const event: StoredEvent = { cursor: cursorOf(batch.xid, eventSeq), seq: eventSeq, at, type };
      if (taskId !== null) event.taskId = taskId;
      if (attemptId !== null) event.attemptId = attemptId;
      if (data !== null) event.data = data;
      events.push(event);
    }
  }
  return events;
}

/** Options of {@link followEvents}. */
export interface FollowOptions {
  /** Start after this cursor ('' or undefined: the start of the log). */
  after?: string | undefined;
  /** Read at least this often even when no NOTIFY comes. @default 1_000 */
  pollMs?: number | undefined;
  /** Wait before connecting again after the LISTEN connection broke. @default 250 */
  reconnectMs?: number | undefined;
  signal: AbortSignal;
  /**
   * Whether anyone reads events now. While it says no, none is read or delivered: at each poll the
   * cursor moves to the end of the log instead (one row), so reading again starts from about then,
   * not from where it stopped. A NOTIFY does not wake it then (only the poll does), but the first
   * after a quiet spell (see `quietMaxMs`). @default always
   */
  reading?: (() => boolean) | undefined;
  /**
   * While no one reads, a poll that finds the end of the log where it was doubles the wait before
   * the next one, from `pollMs` up to this: an idle runtime looked every `pollMs` at a log that did
   * not move (5 of the 27 statements a second it sent). A NOTIFY (a commit that appended events)
   * after such a spell makes it look at once and every `pollMs` again, so the cursor stays about
   * `pollMs` behind a log that moves, and a quiet log has nothing to catch up on. @default 2_000 (at least `pollMs`)
   */
  quietMaxMs?: number | undefined;
  /** Hears each NOTIFY's payload (its {@link HINTS}), reading or not. */
  onNotify?: ((payload: string) => void) | undefined;
  /** Hears the cursor when it moves to the end of the log without reading (see `reading`). */
  skipped?: ((cursor: string) => void) | undefined;
  /** Is given the follower's nudge: calling it makes the follower read now (a reader came). */
  nudge?: ((nudge: () => void) => void) | undefined;
  /**
   * Whether the LISTEN connection and the poll's timers hold the process; a runtime's follower
   * passes false (its KeepAlive decides: src/keep-alive.ts). Reads go through `pool`, whose sockets
   * hold the process as its options say (`allowExitOnIdle`). @default true
   */
  keepsProcessAlive?: boolean | undefined;
}

/** The cursor of the last event of the log that no running transaction can precede. */
export const END_OF_LOG = `SELECT e.xid::text AS xid, e.last_seq::text AS last_seq FROM (
      (SELECT xid, last_seq FROM troupe_event_batches
        WHERE xid < pg_snapshot_xmin(pg_current_snapshot())
        ORDER BY xid DESC, last_seq DESC LIMIT 1)
      UNION ALL
      -- A log that retention emptied ends where its removal did, not before its first event.
      (SELECT events_removed_xid, events_removed_seq FROM troupe_control WHERE id = 1 AND events_removed_xid <> '0'::xid8)
    ) e ORDER BY e.xid DESC, e.last_seq DESC LIMIT 1`;

async function endOfLog(pool: Pick<pg.Pool, 'query'>): Promise<string> {
  const { rows } = await pool.query<{ xid: string; last_seq: string }>(END_OF_LOG);
  return rows[0] ? cursorOf(rows[0].xid, rows[0].last_seq) : '';
}

/**
 * Calls `deliver` with every event after `after`, in order, each once, as transactions commit,
 * until `signal` aborts (while `reading` says so: see {@link FollowOptions}). `connectionString` is
 * for the LISTEN connection of its own. Rejects with CURSOR_EXPIRED, delivering nothing after its
 * cursor, when retention removed events past it before it read them (it fell behind the removal).
 */
export async function followEvents(pool: pg.Pool, connectionString: string, options: FollowOptions, deliver: (events: StoredEvent[]) => void): Promise<void> {
  const { signal } = options;
  const pollMs = options.pollMs ?? 1_000;
  const quietMaxMs = Math.max(pollMs, options.quietMaxMs ?? 2_000);
  /** The wait before the next look at the end of the log while no one reads. */
  let quietMs = pollMs;
  const reconnectMs = options.reconnectMs ?? 250;
  const reading = options.reading ?? (() => true);
  const holds = options.keepsProcessAlive ?? true;
  const timer = (fn: () => void, ms: number) => {
    const timeout = setTimeout(fn, ms);
    if (!holds) timeout.unref();
    return timeout;
  };
  let cursor = options.after ?? '';
  parseCursor(cursor);
  let wake: (() => void) | undefined;
  // A nudge while a read is under way is kept, so that read is followed by another (a wakeup must
  // not fall between a read that found nothing and the wait after it).
  let nudged = false;
  const nudge = () => {
    if (!wake) return void (nudged = true);
    wake();
    wake = undefined;
  };
  signal.addEventListener('abort', nudge);
  options.nudge?.(nudge);
  const notified = (message: pg.Notification) => {
    options.onNotify?.(message.payload ?? '');
    if (reading()) nudge();
    else if (quietMs > pollMs) {
      // The log moved after a quiet spell: look now, and every pollMs while it moves.
      quietMs = pollMs;
      nudge();
    }
  };
  // The LISTEN loop ends when the signal aborts or the follow ends otherwise (a read rejected).
  const over = new AbortController();
  const end = () => over.abort();
  signal.addEventListener('abort', end, { once: true });
  const aborted = new Promise<void>((resolve) => over.signal.addEventListener('abort', () => resolve(), { once: true }));
  const listen = async () => {
    while (!over.signal.aborted) {
      const client = new pg.Client({ connectionString, application_name: 'troupe-events' });
      const broken = new Promise<void>((resolve) => {
        client.once('error', () => resolve());
        client.once('end', () => resolve());
      });
      try {
        await client.connect();
        if (!holds) unrefClient(client);
        client.on('notification', notified);
        await client.query(`LISTEN ${CHANNEL}`);
        // Events committed while it was not listening are read by the poll this wakes.
        nudge();
        await Promise.race([broken, aborted]);
      } catch {
        // Connecting failed: try again below.
      }
      await client.end().catch(() => undefined);
      if (!over.signal.aborted) await new Promise<void>((resolve) => timer(resolve, reconnectMs));
    }
  };
  const listening = listen();
  try {
    while (!signal.aborted) {
      nudged = false;
      if (reading()) {
        quietMs = pollMs;
        for (;;) {
          const events = await readEvents(pool, cursor, 1_000, true);
          if (events.length === 0 || signal.aborted) break;
          cursor = events[events.length - 1]!.cursor;
          deliver(events);
        }
      } else {
        const end = await endOfLog(pool);
        // A nudge meanwhile may be a reader that came and read the log before this end's snapshot:
        // the older cursor stays, so what committed between the two is still delivered.
        const moved = end > cursor;
        if (!nudged && moved) {
          cursor = end;
          options.skipped?.(cursor);
        }
        // A log that moves is looked at every pollMs; one that does not, less and less often.
        quietMs = moved ? pollMs : Math.min(quietMs * 2, quietMaxMs);
      }
      if (nudged || signal.aborted) continue;
      await new Promise<void>((resolve) => {
        const poll = timer(nudge, reading() ? pollMs : quietMs);
        wake = () => {
          clearTimeout(poll);
          resolve();
        };
      });
    }
  } finally {
    signal.removeEventListener('abort', nudge);
    signal.removeEventListener('abort', end);
    over.abort();
    await listening;
  }
}
