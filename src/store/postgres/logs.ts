/**
 * The lines agents write with `ctx.log`, on PostgreSQL (schema version 10, `troupe_logs`): stored
 * by the node that runs the attempt, a turn's lines in one statement fenced by each attempt's
 * token, and read back per task in key order (src/cluster/logs-api.ts).
 *
 * A reader that reads after a cursor in key order never skips a line that commits later, because
 * one task's lines commit in key order: an attempt's lines come from the one node that runs it,
 * whose writes commit one after another (src/cluster/log-writer.ts); each write takes a share lock
 * on the task's row, so it commits before the attempt's end (which updates the row) or finds the
 * token moved on and writes nothing; the node stores an attempt's lines before it settles it; and
 * the next attempt starts only after that end.
 */
import type pg from 'pg';
import type { TaskState } from '../../../machines/index.js';
import { toLogCursor, type LogLine } from '../../events/logs.js';
import type { LogRecord } from '../records.js';
import { checkLease, INT4_MAX, invalid, staleLeases, type Lease } from './checks.js';
import { jsonOf, storeFailed } from './transaction.js';

/** One line to store: its attempt (task, token, run, attempt, id), its number in it, what it says. */
export interface LogWrite extends Lease, LogRecord {
  run: number;
  attempt: number;
  /** Its number within the attempt, from 0: the node numbers an attempt's lines in the order written. */
  seq: number;
}

/** What {@link writeLogLines} did: the lines it stored, and the attempts that are no longer current (none of their lines stored). */
export interface LogWriteResult {
  stored: number;
  stale: Lease[];
}

/** A task's state and its stored lines after a cursor, read in one snapshot. */
export interface LogPage {
  state: TaskState;
  lines: LogLine[];
}

const LEVELS: ReadonlySet<unknown> = new Set(['debug', 'info', 'warn', 'error']);

/**
 * Stores `lines` in one statement. Each line is fenced by its attempt's token, as every write of
 * an attempt is (settle.ts, queue.ts renewLeases): the lines of an attempt that is no longer
 * current (its token moved on, or its task is not running, or waiting with its agent parked on an input) are not stored, and the attempt comes
 * back in `stale`. The task rows are share-locked in id order, as settles and renewals lock them.
 * A line stored already (a write tried again after its answer was lost) is left as it is.
 * INVALID_INPUT, with nothing stored, for a malformed line: a message or fields PostgreSQL cannot
 * hold (a NUL character, values that are not JSON) are for the caller to make storable first.
 */
export async function writeLogLines(pool: Pick<pg.Pool, 'query'>, lines: readonly LogWrite[]): Promise<LogWriteResult> {
  if (!Array.isArray(lines)) throw invalid('lines must be an array');
  const fields = lines.map((line, i) => checkLine(line, `lines[${i}]`));
  if (lines.length === 0) return { stored: 0, stale: [] };
  let rows: Array<{ id: string; token: string; stored: number }>;
  try {
    ({ rows } = await pool.query({
      name: 'troupe-write-logs',
      text: WRITE_LOGS,
      values: [
        lines.map((l) => l.taskId),
        lines.map((l) => l.token),
        lines.map((l) => l.run),
        lines.map((l) => l.attempt),
        lines.map((l) => l.seq),
        lines.map((l) => l.attemptId),
        lines.map((l) => l.level),
        lines.map((l) => l.message),
        lines.map((l) => l.at),
        fields,
      ],
    }));
  } catch (error) {
    throw storeFailed('writing log lines', error);
  }
  return { stored: rows[0]?.stored ?? 0, stale: staleLeases(rows, lines) };
}

/**
 * The lines' rows, the current attempts among theirs (share-locked: an end of one waits for this
 * write, and a write that waited for an end finds the token moved on), and the insert of the lines
 * of those. The final select answers the current attempts and how many lines were stored.
 */
const WRITE_LOGS = `WITH l AS MATERIALIZED (
     SELECT * FROM unnest($1::text[], $2::bigint[], $3::integer[], $4::integer[], $5::integer[], $6::text[], $7::text[], $8::text[], $9::float8[], $10::jsonb[])
       AS l(task_id, token, run, attempt, seq, attempt_id, level, message, at, fields)
   ), current AS MATERIALIZED (
     SELECT t.id, t.token FROM troupe_tasks t
      WHERE t.id IN (SELECT task_id FROM l) AND t.state IN ('running', 'waiting')
      ORDER BY t.id FOR SHARE OF t
   ), written AS (
     INSERT INTO troupe_logs (task_id, run, attempt, seq, attempt_id, level, message, at, fields)
     SELECT l.task_id, l.run, l.attempt, l.seq, l.attempt_id, l.level, l.message, l.at, l.fields
       FROM l JOIN current c ON c.id = l.task_id AND c.token = l.token
     ON CONFLICT DO NOTHING
     RETURNING 1
   )
   SELECT c.id, c.token, (SELECT count(*) FROM written)::integer AS stored FROM current c`;

/**
 * The task's state and up to `limit` of its lines after (run, attempt, seq) `after` (all of them
 * without), in key order, from one snapshot: a task settled in it has all its lines there (the
 * module comment). Undefined when there is no such task.
 */
export async function readLogPage(pool: Pick<pg.Pool, 'query'>, taskId: string, after: readonly [number, number, number] | undefined, limit: number): Promise<LogPage | undefined> {
  // PostgreSQL text cannot hold NUL: no task has such an id.
  if (taskId.includes('\u0000')) return undefined;
  const [run, attempt, seq] = after ?? [0, 0, -1];
  let rows: LogRow[];
  try {
    ({ rows } = await pool.query<LogRow>({ name: 'troupe-read-logs', text: READ_LOGS, values: [taskId, run, attempt, seq, limit] }));
  } catch (error) {
    throw storeFailed('reading log lines', error);
  }
  if (rows.length === 0) return undefined;
  const lines: LogLine[] = [];
  for (const row of rows) {
    if (row.seq === null) continue;
    const line: LogLine = { level: row.level, message: row.message, at: row.at, attemptId: row.attempt_id, taskId, cursor: toLogCursor(row.run, row.attempt, row.seq) };
    if (row.fields !== null) line.fields = row.fields;
    lines.push(line);
  }
  return { state: rows[0]!.state, lines };
}

/** A row of {@link READ_LOGS}: the task's state, with one line (or none: the line's columns NULL). */
interface LogRow {
  state: TaskState;
  run: number;
  attempt: number;
  seq: number | null;
  attempt_id: string;
  level: LogRecord['level'];
  message: string;
  at: number;
  fields: Record<string, unknown> | null;
}

/** The task's row joined with its lines after the cursor: one statement, one snapshot. */
const READ_LOGS = `SELECT t.state, l.run, l.attempt, l.seq, l.attempt_id, l.level, l.message, l.at, l.fields
     FROM troupe_tasks t
     LEFT JOIN LATERAL (
       SELECT * FROM troupe_logs l WHERE l.task_id = t.id AND (l.run, l.attempt, l.seq) > ($2, $3, $4)
        ORDER BY l.run, l.attempt, l.seq LIMIT $5
     ) l ON true
    WHERE t.id = $1
    ORDER BY l.run, l.attempt, l.seq`;

/** Checks a line named `where`; returns its fields as the text of a jsonb parameter. */
function checkLine(line: LogWrite, where: string): string | null {
  checkLease(line, where);
  for (const key of ['run', 'attempt'] as const) {
    if (!Number.isSafeInteger(line[key]) || line[key] <= 0 || line[key] > INT4_MAX) throw invalid(`${where}.${key} must be a positive integer`);
  }
  if (!Number.isSafeInteger(line.seq) || line.seq < 0 || line.seq > INT4_MAX) throw invalid(`${where}.seq must be a non-negative integer`);
  if (typeof line.attemptId !== 'string' || line.attemptId.length === 0 || line.attemptId.includes('\u0000')) throw invalid(`${where}.attemptId must be a non-empty string without NUL`);
  if (!LEVELS.has(line.level)) throw invalid(`${where}.level must be one of debug, info, warn, error`);
  if (typeof line.message !== 'string' || line.message.includes('\u0000')) throw invalid(`${where}.message must be a string without NUL`);
  if (typeof line.at !== 'number' || !Number.isFinite(line.at)) throw invalid(`${where}.at must be a finite number`);
  if (line.fields !== undefined && (typeof line.fields !== 'object' || line.fields === null || Array.isArray(line.fields))) throw invalid(`${where}.fields must be an object`);
  return jsonOf(line.fields, `${where}.fields`);
}
