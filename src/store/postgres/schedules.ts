/**
 * Cron schedules of the whole cluster on PostgreSQL (issue #15): each tick fires once, on whichever
 * node takes the schedule's row, whatever the number of nodes calling {@link fireDue}.
 *
 * A fire is one transaction: it takes the due schedules' rows `FOR UPDATE SKIP LOCKED` (a row
 * another node is firing is skipped, not waited for), advances each with a compare-and-swap on
 * `next_run_at` (the tick fired must still be the one stored), submits each fired tick's task
 * through the queue's insert with the idempotency key `schedule:<id>:<tick ISO>` (so a tick cannot
 * make a second task, even if the first two guards were gone), and appends `schedule.fired` per
 * tick. Ticks are computed by src/scheduler/cron.ts (cron-parser, with its DST policy) from the
 * database's `now()`. The overlap policies are src/steps/fire.ts's `skip` and `allow`: with `skip`,
 * a tick while the schedule's last task is not terminal is recorded as skipped. Schedules fire
 * while the cluster is frozen: like submits, they only queue work.
 *
 * Not here yet: `queue_one`, and the catch-up policies (every due tick fires, up to
 * MAX_TICKS_PER_FIRE per schedule and call, as fire.ts fires ticks that fell due while it ran).
 */
import type pg from 'pg';
import { isTerminal, type TaskState } from '../../../machines/index.js';
import { TroupeError } from '../../errors.js';
import { createIdGenerator } from '../../ids.js';
import { compileCron, tickIso, type CronSchedule } from '../../scheduler/cron.js';
import { MAX_TICKS_PER_FIRE } from '../../steps/fire.js';
import { checkNode, checkTask, INT4_MAX, invalid, type NewTask, type TaskRow } from './checks.js';
import { appendEvents, eventOf, type NewEvent } from './events.js';
import { insertTasks } from './queue.js';
import { epochMs, storeFailed, transaction } from './transaction.js';

/** What a tick does while the schedule's last task is not terminal: `skip` it, or `allow` it. */
export type ClusterOverlap = 'skip' | 'allow';

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
  /** @default 'skip' */
  overlap?: ClusterOverlap;
  /** Create it paused. @default false */
  paused?: boolean;
}

/** A schedule as stored. Times are epoch ms on the database's clock. */
export interface ClusterSchedule {
  id: string;
  cron: string;
  tz: string;
  task: ScheduleTemplate;
  overlap: ClusterOverlap;
  paused: boolean;
  nextRunAt: number;
  lastTickAt?: number;
  lastTaskId?: string;
  /** Ticks fired (a task submitted, or found under the tick's key) and skipped, so far. */
  fired: number;
  skipped: number;
  createdAt: number;
  updatedAt: number;
}

/** What one {@link fireDue} did. */
export interface FireResult {
  fired: Array<{ scheduleId: string; tick: number; taskId: string; created: boolean }>;
  skipped: Array<{ scheduleId: string; tick: number; reason: 'overlap' | 'error'; error?: string }>;
  /** Schedules whose stored cron no longer compiles: left as they are, not fired. */
  unusable: Array<{ scheduleId: string; error: string }>;
}

/** Options of {@link fireDue}. */
export interface FireOptions {
  /** Most schedules one call fires. @default 100 */
  limit?: number;
  /** Most ticks of one schedule one call looks at; the rest are left due. @default MAX_TICKS_PER_FIRE */
  maxTicks?: number;
}

const ID = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;
const KNOWN = new Set(['id', 'cron', 'tz', 'task', 'overlap', 'paused']);
const PER_TICK = ['id', 'idempotencyKey', 'delayMs'];
const OVERLAP: readonly ClusterOverlap[] = ['skip', 'allow'];
/** The columns a {@link ScheduleRow} holds, of the table as `alias`. */
const columns = (alias = 'troupe_schedules') =>
  `${['id', 'cron', 'tz', 'task', 'overlap', 'paused'].map((c) => `${alias}.${c}`).join(', ')}, ${epochMs(`${alias}.next_run_at`, 'next_run_at')}, ${epochMs(`${alias}.last_tick_at`, 'last_tick_at')}, ${alias}.last_task_id, ${alias}.fired, ${alias}.skipped, ${epochMs(`${alias}.created_at`, 'created_at')}, ${epochMs(`${alias}.updated_at`, 'updated_at')}`;

/**
 * Stores a new schedule; its first tick is the first after the database's `now()`. INVALID_CRON or
 * INVALID_TIMEZONE (as `rt.schedules.create`) for the expression or the zone, INVALID_INPUT for the
 * rest (an id already taken included), and then nothing is stored.
 */
export async function createSchedule(pool: pg.Pool, spec: ClusterScheduleSpec): Promise<ClusterSchedule> {
  if (typeof spec !== 'object' || spec === null || Array.isArray(spec)) throw invalid('a schedule must be an object');
  for (const key of Object.keys(spec)) if (!KNOWN.has(key)) throw invalid(`schedule.${key} is not a schedule field`);
  if (typeof spec.id !== 'string' || !ID.test(spec.id)) throw invalid(`schedule.id must match ${ID.source}`);
  const cron = compileCron(spec.cron, spec.tz ?? 'UTC');
  const task = spec.task;
  if (typeof task !== 'object' || task === null || Array.isArray(task)) throw invalid('schedule.task must be a task object');
  for (const key of PER_TICK) if (key in task) throw invalid(`schedule.task.${key} is set per tick; leave it out`);
  const template = templateOf(checkTask({ ...task, id: 'template' }, 'schedule.task'));
  const overlap = spec.overlap ?? 'skip';
  if (!OVERLAP.includes(overlap)) throw invalid(`schedule.overlap must be one of ${OVERLAP.join(', ')} (queue_one is not there yet on PostgreSQL)`);
  const paused = spec.paused ?? false;
  if (typeof paused !== 'boolean') throw invalid('schedule.paused must be a boolean');
  return transaction(pool, 'creating a schedule', async (client) => {
    const next = cron.next(await dbNow(client));
    const { rows } = await client.query<ScheduleRow>(
      `INSERT INTO troupe_schedules (id, cron, tz, task, overlap, paused, next_run_at)
       VALUES ($1, $2, $3, $4, $5, $6, to_timestamp($7::float8 / 1000))
       ON CONFLICT (id) DO NOTHING
       RETURNING ${columns()}`,
      [spec.id, cron.expression, cron.tz, JSON.stringify(template), overlap, paused, next],
    );
    if (rows.length === 0) throw invalid(`schedule ${spec.id} already exists`);
    return scheduleOf(rows[0]!);
  });
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

/**
 * Fires the schedules that are due (see the module comment) for `node` (a member of the cluster),
 * in one transaction. Any number of nodes may call it at once, as often as they like: each tick
 * fires once. INVALID_INPUT for bad arguments; ILLEGAL_STATE when `node` is not a member.
 */
export async function fireDue(pool: pg.Pool, node: string, options: FireOptions = {}): Promise<FireResult> {
  checkNode(node);
  const limit = options.limit ?? 100;
  const maxTicks = options.maxTicks ?? MAX_TICKS_PER_FIRE;
  if (!Number.isSafeInteger(limit) || limit <= 0 || limit > INT4_MAX) throw invalid('options.limit must be a positive integer');
  if (!Number.isSafeInteger(maxTicks) || maxTicks <= 0 || maxTicks > MAX_TICKS_PER_FIRE) throw invalid(`options.maxTicks must be a positive integer of at most ${MAX_TICKS_PER_FIRE}`);
  return transaction(pool, 'firing schedules', async (client) => {
    const member = await client.query<{ member: boolean }>('SELECT EXISTS (SELECT 1 FROM troupe_nodes WHERE id = $1::uuid FOR KEY SHARE) AS member', [node]);
    if (!member.rows[0]!.member) throw new TroupeError('ILLEGAL_STATE', `node ${node} is not a member of the cluster: it must not fire schedules`);
    const { rows } = await client.query<ScheduleRow & { last_state: TaskState | null; now: number }>(
      `SELECT ${columns('s')}, t.state AS last_state, ${epochMs('now()', 'now')}
         FROM troupe_schedules s LEFT JOIN troupe_tasks t ON t.id = s.last_task_id
        WHERE NOT s.paused AND s.next_run_at <= now()
        ORDER BY s.next_run_at, s.id
        LIMIT $1
        FOR UPDATE OF s SKIP LOCKED`,
      [limit],
    );
    const result: FireResult = { fired: [], skipped: [], unusable: [] };
    const plans: Plan[] = [];
    for (const row of rows) {
      const schedule = scheduleOf(row);
      let cron: CronSchedule;
      try {
        cron = compileCron(schedule.cron, schedule.tz);
      } catch (error) {
        result.unusable.push({ scheduleId: schedule.id, error: (error as Error).message });
        continue;
      }
      plans.push(planFire(schedule, cron, row.last_state, row.now, maxTicks));
    }
    if (plans.length === 0) return result;
    // The compare-and-swap first: a schedule whose stored tick moved on submits nothing.
    const swapped = await client.query<{ id: string }>(
      `UPDATE troupe_schedules s
          SET next_run_at = to_timestamp(u.next / 1000), fired = s.fired + u.fired, skipped = s.skipped + u.skipped,
              last_tick_at = coalesce(to_timestamp(u.last_tick / 1000), s.last_tick_at), updated_at = now()
         FROM unnest($1::text[], $2::float8[], $3::float8[], $4::int[], $5::int[], $6::float8[]) AS u(id, expected, next, fired, skipped, last_tick)
        WHERE s.id = u.id AND s.next_run_at = to_timestamp(u.expected / 1000)
       RETURNING s.id`,
      [plans.map((p) => p.id), plans.map((p) => p.expected), plans.map((p) => p.next), plans.map((p) => p.tasks.length), plans.map((p) => p.skipped.length), plans.map((p) => p.tasks.at(-1)?.tick ?? null)],
    );
    const advanced = new Set(swapped.rows.map((r) => r.id));
    const firing = plans.filter((p) => advanced.has(p.id));
    const submitted = await insertTasks(client, firing.flatMap((p) => p.tasks.map((t) => t.row)));
    const events: NewEvent[] = [];
    const lastTasks = new Map<string, string>();
    let i = 0;
    for (const plan of firing) {
      for (const { tick } of plan.tasks) {
        const { id: taskId, created } = submitted[i++]!;
        result.fired.push({ scheduleId: plan.id, tick, taskId, created });
        lastTasks.set(plan.id, taskId);
        events.push(eventOf('schedule.fired', { scheduleId: plan.id, tick, tickIso: tickIso(tick) }, taskId));
      }
      for (const skip of plan.skipped) {
        result.skipped.push({ scheduleId: plan.id, ...skip });
        const data = { scheduleId: plan.id, tick: skip.tick, tickIso: tickIso(skip.tick), skipped: skip.reason };
        events.push(eventOf('schedule.fired', skip.error === undefined ? data : { ...data, error: skip.error }));
      }
    }
    if (lastTasks.size > 0) {
      await client.query('UPDATE troupe_schedules s SET last_task_id = u.task FROM unnest($1::text[], $2::text[]) AS u(id, task) WHERE s.id = u.id', [[...lastTasks.keys()], [...lastTasks.values()]]);
    }
    await appendEvents(client, events);
    return result;
  });
}

/** One schedule's fire, decided. */
interface Plan {
  id: string;
  /** The tick stored when it was read (the compare-and-swap's expected value). */
  expected: number;
  next: number;
  tasks: Array<{ tick: number; row: TaskRow }>;
  skipped: Array<{ tick: number; reason: 'overlap' | 'error'; error?: string }>;
}

/**
 * Decides a due schedule's fire at `now`, as src/steps/fire.ts does for ticks that fell due while
 * the runtime ran: every due tick from the stored one (at most `maxTicks`, the rest left due), the
 * overlap policy, a task per fired tick, and the next tick.
 */
function planFire(schedule: ClusterSchedule, cron: CronSchedule, lastState: TaskState | null, now: number, maxTicks: number): Plan {
  const first = schedule.nextRunAt;
  const due = [first, ...cron.between(first, now, maxTicks - 1)];
  const last = due[due.length - 1]!;
  const next = cron.next(due.length === maxTicks ? last : Math.max(now, last));
  const plan: Plan = { id: schedule.id, expected: first, next, tasks: [], skipped: [] };
  let running = schedule.lastTaskId !== undefined && lastState !== null && !isTerminal(lastState);
  for (const tick of due) {
    if (running && schedule.overlap === 'skip') {
      plan.skipped.push({ tick, reason: 'overlap' });
      continue;
    }
    running = true;
    try {
      const row = checkTask({ ...schedule.task, id: mintId(), idempotencyKey: `schedule:${schedule.id}:${tickIso(tick)}` }, `schedule ${schedule.id}'s task`);
      plan.tasks.push({ tick, row });
    } catch (error) {
      // A template that no longer validates skips its ticks, and the schedule still advances.
      plan.skipped.push({ tick, reason: 'error', error: (error as Error).message });
    }
  }
  return plan;
}

/** A row of {@link columns}. */
interface ScheduleRow {
  id: string;
  cron: string;
  tz: string;
  task: ScheduleTemplate;
  overlap: ClusterOverlap;
  paused: boolean;
  next_run_at: number;
  last_tick_at: number | null;
  last_task_id: string | null;
  fired: string;
  skipped: string;
  created_at: number;
  updated_at: number;
}

function scheduleOf(r: ScheduleRow): ClusterSchedule {
  const schedule: ClusterSchedule = {
    id: r.id,
    cron: r.cron,
    tz: r.tz,
    task: r.task,
    overlap: r.overlap,
    paused: r.paused,
    nextRunAt: r.next_run_at,
    fired: Number(r.fired),
    skipped: Number(r.skipped),
    createdAt: r.created_at,
    updatedAt: r.updated_at,
  };
  if (r.last_tick_at !== null) schedule.lastTickAt = r.last_tick_at;
  if (r.last_task_id !== null) schedule.lastTaskId = r.last_task_id;
  return schedule;
}

/** The template's fields of a checked task (the input as stored, the defaults filled in). */
function templateOf(row: TaskRow): ScheduleTemplate {
  const template: ScheduleTemplate = { agent: row.agent, priority: row.priority, maxAttempts: row.maxAttempts };
  if (row.input !== null) template.input = JSON.parse(row.input) as unknown;
  const labels = JSON.parse(row.labels) as Record<string, string>;
  if (Object.keys(labels).length > 0) template.labels = labels;
  if (row.timeoutMs !== null) template.timeoutMs = row.timeoutMs;
  if (row.retry !== null) template.retry = JSON.parse(row.retry) as ScheduleTemplate['retry'];
  return template;
}

/** The database's `now()` as epoch ms. */
async function dbNow(client: pg.PoolClient): Promise<number> {
  const { rows } = await client.query<{ now: number }>(`SELECT ${epochMs('now()', 'now')}`);
  return rows[0]!.now;
}

let nextId: ((at?: number) => string) | undefined;

/** A new task id (time-ordered, as the runtime's), from a generator made on first use. */
function mintId(): string {
  nextId ??= createIdGenerator(() => Date.now());
  return nextId();
}
