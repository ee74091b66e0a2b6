/**
 * Cron schedules of the whole cluster on PostgreSQL (issue #15): their definitions, as
 * `rt.schedules` keeps them (create, update, pause, resume, list, delete). Each tick fires once,
 * on whichever node takes the schedule's row: see schedule-fire.ts. Every write validates first,
 * names what is wrong, and then writes nothing; times come from the database's `now()`.
 */
import type pg from 'pg';
import { TroupeError } from '../../errors.js';
import { DEFAULT_CATCH_UP_WINDOW_MS } from '../../scheduler/schedule-spec.js';
import { compileCron, type CronSchedule } from '../../scheduler/cron.js';
import { checkTask, invalid, type NewTask, type TaskRow } from './checks.js';
import type { ScheduleRecord } from '../records.js';
import type { ClusterCatchUp, ClusterOverlap } from './schedule-plan.js';
import { epochMs, storeFailed, transaction } from './transaction.js';

export type { ClusterCatchUp, ClusterOverlap } from './schedule-plan.js';

/** The task each tick submits: a task without what each tick sets (its id, key and delay). */
export type ScheduleTemplate = Omit<NewTask, 'id' | 'idempotencyKey' | 'delayMs'>;

/** What {@link createSchedule} takes. */
export interface ClusterScheduleSpec {
  /** Letters, digits, `.`, `_`, `:`, `-`; up to 128 characters (as `rt.schedules`). */
  id: string;
  /** 5 fields (minute first) or 6 (seconds first). */
  cron: string;
  /** IANA time zone the expression is read in. @default 'UTC' */
  tz?: string;
  task: ScheduleTemplate;
  /** A tick while the last run is not terminal: `skip` it, `allow` it, or hold one (`queue_one`). @default 'skip' */
  overlap?: ClusterOverlap;
  /** Ticks that fell due while no node ran: fire none (`skip`), the latest (`once`) or `all`. @default 'skip' */
  catchUp?: ClusterCatchUp;
  /** Only such ticks this recent are caught up. @default 86_400_000 (a day) */
  catchUpWindowMs?: number;
  /** Create it paused. @default false */
  paused?: boolean;
}

/** What {@link updateSchedule} may change: a spec without its id. A field given as `undefined` goes back to its default. */
export type ClusterSchedulePatch = Partial<Omit<ClusterScheduleSpec, 'id'>>;

/**
 * A schedule as stored: the fields of the LMDB store's schedule record (src/store/records.ts), its
 * task a cluster template. Times are epoch ms on the database's clock.
 */
export interface ClusterSchedule extends Omit<ScheduleRecord, 'task'> {
  task: ScheduleTemplate;
}

const ID = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;
const KNOWN = new Set(['id', 'cron', 'tz', 'task', 'overlap', 'catchUp', 'catchUpWindowMs', 'paused']);
const UPDATABLE = [...KNOWN].filter((key) => key !== 'id');
const PER_TICK = ['id', 'idempotencyKey', 'delayMs'];
const OVERLAP: readonly ClusterOverlap[] = ['skip', 'allow', 'queue_one'];
const CATCH_UP: readonly ClusterCatchUp[] = ['skip', 'once', 'all'];
/** The columns a {@link ScheduleRow} holds, of the table as `alias`. */
export const columns = (alias = 'troupe_schedules') =>
  `${['id', 'cron', 'tz', 'task', 'overlap', 'catch_up', 'catch_up_window_ms', 'paused'].map((c) => `${alias}.${c}`).join(', ')}, ${epochMs(`${alias}.next_run_at`, 'next_run_at')}, ${epochMs(`${alias}.last_tick_at`, 'last_tick_at')}, ${alias}.last_task_id, ${epochMs(`${alias}.pending_tick`, 'pending_tick')}, ${alias}.fired, ${alias}.skipped, ${epochMs(`${alias}.created_at`, 'created_at')}, ${epochMs(`${alias}.updated_at`, 'updated_at')}`;

/** A spec checked (in the order the LMDB runtime checks one: id, zone, expression, task, the rest), as its columns. */
interface Checked {
  cron: CronSchedule;
  template: ScheduleTemplate;
  overlap: ClusterOverlap;
  catchUp: ClusterCatchUp;
  catchUpWindowMs: number;
  paused: boolean;
}

function checkSpec(spec: ClusterScheduleSpec): Checked {
  if (typeof spec !== 'object' || spec === null || Array.isArray(spec)) throw invalid('a schedule must be an object');
  for (const key of Object.keys(spec)) if (!KNOWN.has(key)) throw invalid(`schedule.${key} is not a schedule field`);
  if (typeof spec.id !== 'string' || !ID.test(spec.id)) throw invalid(`schedule.id must match ${ID.source}`);
  const cron = compileCron(spec.cron, spec.tz ?? 'UTC');
  const task = spec.task;
  if (typeof task !== 'object' || task === null || Array.isArray(task)) throw invalid('schedule.task must be a task object');
  for (const key of PER_TICK) if (key in task) throw invalid(`schedule.task.${key} is set per tick; leave it out`);
  const template = templateOf(checkTask({ ...task, id: 'template' }, 'schedule.task'));
  const overlap = spec.overlap ?? 'skip';
  if (!OVERLAP.includes(overlap)) throw invalid(`schedule.overlap must be one of ${OVERLAP.join(', ')}`);
  const catchUp = spec.catchUp ?? 'skip';
  if (!CATCH_UP.includes(catchUp)) throw invalid(`schedule.catchUp must be one of ${CATCH_UP.join(', ')}`);
  const catchUpWindowMs = spec.catchUpWindowMs ?? DEFAULT_CATCH_UP_WINDOW_MS;
  if (!Number.isSafeInteger(catchUpWindowMs) || catchUpWindowMs < 0) throw invalid('schedule.catchUpWindowMs must be a non-negative integer');
  const paused = spec.paused ?? false;
  if (typeof paused !== 'boolean') throw invalid('schedule.paused must be a boolean');
  return { cron, template, overlap, catchUp, catchUpWindowMs, paused };
}

/**
 * Stores a new schedule; its first tick is the first after the database's `now()`. INVALID_CRON or
 * INVALID_TIMEZONE (as `rt.schedules.create`) for the expression or the zone, INVALID_INPUT for the
 * rest (an id already taken included), and then nothing is stored.
 */
export async function createSchedule(pool: pg.Pool, spec: ClusterScheduleSpec): Promise<ClusterSchedule> {
  const c = checkSpec(spec);
  return transaction(pool, 'creating a schedule', async (client) => {
    const next = c.cron.next(await dbNow(client));
    const { rows } = await client.query<ScheduleRow>(
      `INSERT INTO troupe_schedules (id, cron, tz, task, overlap, catch_up, catch_up_window_ms, paused, next_run_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, to_timestamp($9::float8 / 1000))
       ON CONFLICT (id) DO NOTHING
       RETURNING ${columns()}`,
      [spec.id, c.cron.expression, c.cron.tz, JSON.stringify(c.template), c.overlap, c.catchUp, c.catchUpWindowMs, c.paused, next],
    );
    if (rows.length === 0) throw invalid(`schedule ${spec.id} already exists`);
    return scheduleOf(rows[0]!);
  });
}

/**
 * Changes fields of a schedule, as `rt.schedules.update` on LMDB: the patch is laid over the
 * stored spec (a field given as `undefined` goes back to its default) and the whole is checked as
 * create checks it. `nextRunAt` becomes the first tick after the database's `now()` when the cron
 * or the zone changed, or the patch resumes a paused schedule; otherwise it stays, as do the
 * counters, the last tick and task, and a held `queue_one` tick. A function `patch` is given the
 * schedule as it is stored, its row locked, and returns the patch (its throw writes nothing).
 * INVALID_INPUT for a patch naming the id or a field a schedule does not have, NOT_FOUND for an
 * unknown id, then what create throws; nothing is written then.
 */
export async function updateSchedule(pool: pg.Pool, id: string, patch: ClusterSchedulePatch | ((current: ClusterSchedule) => ClusterSchedulePatch)): Promise<ClusterSchedule> {
  if (typeof patch !== 'function') checkPatch(patch);
  if (typeof id !== 'string' || id.length === 0) throw invalid('a schedule id must be a non-empty string');
  if (!ID.test(id)) throw new TroupeError('NOT_FOUND', `no schedule ${id}`);
  return transaction(pool, 'updating a schedule', async (client) => {
    const { rows } = await client.query<ScheduleRow & { now: number }>(`SELECT ${columns()}, ${epochMs('now()', 'now')} FROM troupe_schedules WHERE id = $1 FOR UPDATE`, [id]);
    if (rows.length === 0) throw new TroupeError('NOT_FOUND', `no schedule ${id}`);
    const current = scheduleOf(rows[0]!);
    const given = typeof patch === 'function' ? patch(structuredClone(current)) : patch;
    if (typeof patch === 'function') checkPatch(given);
    const { task, overlap, catchUp, catchUpWindowMs, paused, cron: expression, tz } = current;
    const c = checkSpec({ cron: expression, tz, task, overlap, catchUp, catchUpWindowMs, paused, ...given, id });
    const timing = c.cron.expression !== current.cron || c.cron.tz !== current.tz || (current.paused && !c.paused);
    const next = timing ? c.cron.next(rows[0]!.now) : current.nextRunAt;
    const updated = await client.query<ScheduleRow>(
      `UPDATE troupe_schedules SET cron = $2, tz = $3, task = $4, overlap = $5, catch_up = $6, catch_up_window_ms = $7, paused = $8,
              next_run_at = to_timestamp($9::float8 / 1000), updated_at = now()
        WHERE id = $1 RETURNING ${columns()}`,
      [id, c.cron.expression, c.cron.tz, JSON.stringify(c.template), c.overlap, c.catchUp, c.catchUpWindowMs, c.paused, next],
    );
    return scheduleOf(updated.rows[0]!);
  });
}

/** A patch is an object of updatable fields: the id and anything else a schedule holds are refused by name, not ignored. */
function checkPatch(patch: unknown): asserts patch is ClusterSchedulePatch {
  if (typeof patch !== 'object' || patch === null || Array.isArray(patch)) throw invalid('a schedule update must be an object of the fields to change');
  for (const key of Object.keys(patch)) {
    if (key === 'id') throw invalid('schedule.id cannot be updated; create a schedule under the new id and delete this one');
    if (!UPDATABLE.includes(key)) throw invalid(`schedule.${key} cannot be updated (updatable: ${UPDATABLE.join(', ')})`);
  }
}

/**
 * Pauses a schedule (it fires nothing), or resumes it from the first tick after the database's
 * `now()` (ticks while it was paused are not caught up), as `rt.schedules.pause/resume`.
 * NOT_FOUND for an unknown id.
 */
export async function setSchedulePaused(pool: pg.Pool, id: string, paused: boolean): Promise<ClusterSchedule> {
  if (typeof id !== 'string' || !ID.test(id)) throw invalid(`schedule id must match ${ID.source}`);
  if (typeof paused !== 'boolean') throw invalid('paused must be a boolean');
  return transaction(pool, paused ? 'pausing a schedule' : 'resuming a schedule', async (client) => {
    const { rows } = await client.query<ScheduleRow>(`SELECT ${columns()} FROM troupe_schedules WHERE id = $1 FOR UPDATE`, [id]);
    if (rows.length === 0) throw new TroupeError('NOT_FOUND', `no schedule ${id}`);
    const current = scheduleOf(rows[0]!);
    if (current.paused === paused) return current;
    const next = paused ? current.nextRunAt : compileCron(current.cron, current.tz).next(await dbNow(client));
    const updated = await client.query<ScheduleRow>(
      `UPDATE troupe_schedules SET paused = $2, next_run_at = to_timestamp($3::float8 / 1000), updated_at = now() WHERE id = $1 RETURNING ${columns()}`,
      [id, paused, next],
    );
    return scheduleOf(updated.rows[0]!);
  });
}

/** Every schedule, by id. */
export async function listSchedules(pool: Pick<pg.Pool, 'query'>): Promise<ClusterSchedule[]> {
  try {
    const { rows } = await pool.query<ScheduleRow>(`SELECT ${columns()} FROM troupe_schedules ORDER BY id`);
    return rows.map(scheduleOf);
  } catch (error) {
    throw storeFailed('listing schedules', error);
  }
}

/** Removes a schedule (the tasks it submitted stay). NOT_FOUND for an unknown id. */
export async function deleteSchedule(pool: Pick<pg.Pool, 'query'>, id: string): Promise<void> {
  if (typeof id !== 'string' || !ID.test(id)) throw invalid(`schedule id must match ${ID.source}`);
  let rowCount: number | null;
  try {
    ({ rowCount } = await pool.query('DELETE FROM troupe_schedules WHERE id = $1', [id]));
  } catch (error) {
    throw storeFailed('deleting a schedule', error);
  }
  if (rowCount === 0) throw new TroupeError('NOT_FOUND', `no schedule ${id}`);
}

/** A row of {@link columns}. */
export interface ScheduleRow {
  id: string;
  cron: string;
  tz: string;
  task: ScheduleTemplate;
  overlap: ClusterOverlap;
  catch_up: ClusterCatchUp;
  catch_up_window_ms: string;
  paused: boolean;
  next_run_at: number;
  last_tick_at: number | null;
  last_task_id: string | null;
  pending_tick: number | null;
  fired: string;
  skipped: string;
  created_at: number;
  updated_at: number;
}

/** The schedule of a row of {@link columns}. */
export function scheduleOf(r: ScheduleRow): ClusterSchedule {
  const schedule: ClusterSchedule = {
    id: r.id,
    cron: r.cron,
    tz: r.tz,
    task: r.task,
    overlap: r.overlap,
    catchUp: r.catch_up,
    catchUpWindowMs: Number(r.catch_up_window_ms),
    paused: r.paused,
    nextRunAt: r.next_run_at,
    fired: Number(r.fired),
    skipped: Number(r.skipped),
    createdAt: r.created_at,
    updatedAt: r.updated_at,
  };
  if (r.last_tick_at !== null) schedule.lastTickAt = r.last_tick_at;
  if (r.last_task_id !== null) schedule.lastTaskId = r.last_task_id;
  if (r.pending_tick !== null) schedule.pendingTick = r.pending_tick;
  return schedule;
}

/** The template's fields of a checked task (the input as stored, the defaults filled in). */
function templateOf(row: TaskRow): ScheduleTemplate {
  const template: ScheduleTemplate = { agent: row.agent, priority: row.priority };
  // A template routed by `requires` (routing.ts) takes its tick's agent's budget unless it gives one.
  if (row.ownMaxAttempts || row.requires === null) template.maxAttempts = row.maxAttempts;
  if (row.requires !== null) template.requires = row.requires;
  if (row.unmatched) template.unmatched = true;
  if (row.input !== null) template.input = JSON.parse(row.input) as unknown;
  const labels = JSON.parse(row.labels) as Record<string, string>;
  if (Object.keys(labels).length > 0) template.labels = labels;
  if (row.timeoutMs !== null) template.timeoutMs = row.timeoutMs;
  if (row.retry !== null) template.retry = JSON.parse(row.retry) as ScheduleTemplate['retry'];
  // As stored (null for Infinity): a fire checks it again as it is.
  if (row.retention !== null) template.retention = JSON.parse(row.retention) as ScheduleTemplate['retention'];
  if (row.workspace !== null) template.workspace = row.workspace;
  return template;
}

/** The database's `now()` as epoch ms. */
async function dbNow(client: pg.PoolClient): Promise<number> {
  const { rows } = await client.query<{ now: number }>(`SELECT ${epochMs('now()', 'now')}`);
  return rows[0]!.now;
}
