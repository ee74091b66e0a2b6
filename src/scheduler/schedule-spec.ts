/**
 * What `rt.schedules.create()` and `update()` take, and their validation: everything is checked
 * before anything is stored, and each problem names its field.
 */
import { types } from 'node:util';
import { TroupeError } from '../errors.js';
import type { CatchUpPolicy, OverlapPolicy, ScheduleRecord } from '../store/records.js';
import type { TaskSpec } from '../tasks/spec.js';
import { compileCron, type CronSchedule } from './cron.js';

/** The task a schedule submits on each tick: a task spec without the fields each tick sets. */
export type ScheduleTask = Omit<TaskSpec, 'idempotencyKey' | 'runAt' | 'delayMs'>;

/** What `rt.schedules.create()` takes. */
export interface ScheduleSpec {
  /** Letters, digits, `.`, `_`, `:`, `-`; up to 128 characters. */
  id: string;
  /** 5 fields (minute first) or 6 (seconds first). */
  cron: string;
  /** IANA time zone the expression is read in. @default 'UTC' */
  tz?: string;
  task: ScheduleTask;
  /** A tick while the previous run is not terminal: `skip` it, `allow` it, or `queue_one` (run it after). @default 'skip' */
  overlap?: OverlapPolicy;
  /** Ticks missed while the runtime was down: fire none (`skip`), the latest (`once`) or `all`. @default 'skip' */
  catchUp?: CatchUpPolicy;
  /** Only missed ticks this recent are caught up. @default 86_400_000 (a day) */
  catchUpWindowMs?: number;
  /** Create it paused. @default false */
  paused?: boolean;
}

/** Fields `rt.schedules.update()` may change. */
export type ScheduleUpdate = Partial<Omit<ScheduleSpec, 'id'>>;

/** A schedule as the API returns it: the stored record, with its template typed. Times are epoch ms. */
export type Schedule = Omit<ScheduleRecord, 'task'> & { task: ScheduleTask };

const ID = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;
const KNOWN = new Set(['id', 'cron', 'tz', 'task', 'overlap', 'catchUp', 'catchUpWindowMs', 'paused']);
const OVERLAP: readonly OverlapPolicy[] = ['skip', 'allow', 'queue_one'];
const CATCH_UP: readonly CatchUpPolicy[] = ['skip', 'once', 'all'];
const PER_TICK = ['idempotencyKey', 'runAt', 'delayMs'];

/** What an update may change: the spec without its id (everything else a schedule holds is kept or computed). */
const UPDATABLE = new Set([...KNOWN].filter((key) => key !== 'id'));

/**
 * Checks the patch of `schedules.update()` on its own, before it is merged over the schedule: an
 * object of updatable fields. The id, `nextRunAt` (computed from the cron) and the counters are
 * not settable, and a patch that names them is refused rather than quietly ignored.
 */
export function checkUpdate(patch: unknown): void {
  if (typeof patch !== 'object' || patch === null || Array.isArray(patch) || types.isProxy(patch)) throw bad('a schedule update must be an object of the fields to change');
  for (const key of Object.keys(patch)) {
    if (key === 'id') throw bad('schedule.id cannot be updated; create a schedule under the new id and delete this one');
    if (!UPDATABLE.has(key)) throw bad(`schedule.${key} cannot be updated (updatable: ${[...UPDATABLE].join(', ')})`);
  }
}

/** The default catch-up window: a day. */
export const DEFAULT_CATCH_UP_WINDOW_MS = 86_400_000;

/**
 * Validates a schedule spec (the zone first, then the expression, then the rest) and builds its
 * record. `checkTask` validates the template the way submit would. With `current`, counters and
 * history carry over, and `nextRunAt` is kept unless the cron or zone changed.
 */
export function validateSchedule(spec: ScheduleSpec, now: number, checkTask: (task: TaskSpec) => void, current?: ScheduleRecord): { record: ScheduleRecord; cron: CronSchedule } {
  if (typeof spec !== 'object' || spec === null || Array.isArray(spec)) throw bad('a schedule must be an object');
  for (const key of Object.keys(spec)) {
    if (!KNOWN.has(key) && !(current && ['nextRunAt', 'lastTickAt', 'lastTaskId', 'pendingTick', 'fired', 'skipped', 'createdAt', 'updatedAt'].includes(key))) {
      throw bad(`schedule.${key} is not a schedule field`);
    }
  }
  if (typeof spec.id !== 'string' || !ID.test(spec.id)) throw bad(`schedule.id must match ${ID.source}`);
  const cron = compileCron(spec.cron, spec.tz ?? 'UTC');
  const task = spec.task;
  if (typeof task !== 'object' || task === null || Array.isArray(task)) throw bad('schedule.task must be a task spec object');
  for (const key of PER_TICK) if (key in task) throw bad(`schedule.task.${key} is set per tick; leave it out`);
  checkTask(task as TaskSpec);
  const overlap = spec.overlap ?? 'skip';
  if (!OVERLAP.includes(overlap)) throw bad(`schedule.overlap must be one of ${OVERLAP.join(', ')}`);
  const catchUp = spec.catchUp ?? 'skip';
  if (!CATCH_UP.includes(catchUp)) throw bad(`schedule.catchUp must be one of ${CATCH_UP.join(', ')}`);
  const catchUpWindowMs = spec.catchUpWindowMs ?? DEFAULT_CATCH_UP_WINDOW_MS;
  if (!Number.isSafeInteger(catchUpWindowMs) || catchUpWindowMs < 0) throw bad('schedule.catchUpWindowMs must be a non-negative integer');
  const paused = spec.paused ?? false;
  if (typeof paused !== 'boolean') throw bad('schedule.paused must be a boolean');
  const timing = !current || current.cron !== cron.expression || current.tz !== cron.tz || (current.paused && !paused);
  const record: ScheduleRecord = {
    id: spec.id,
    cron: cron.expression,
    tz: cron.tz,
    task: structuredClone(task) as Record<string, unknown>,
    overlap,
    catchUp,
    catchUpWindowMs,
    paused,
    nextRunAt: timing ? cron.next(now) : current.nextRunAt,
    fired: current?.fired ?? 0,
    skipped: current?.skipped ?? 0,
    createdAt: current?.createdAt ?? now,
    updatedAt: now,
  };
  if (current?.lastTickAt !== undefined) record.lastTickAt = current.lastTickAt;
  if (current?.lastTaskId !== undefined) record.lastTaskId = current.lastTaskId;
  if (current?.pendingTick !== undefined) record.pendingTick = current.pendingTick;
  return { record, cron };
}

function bad(message: string): TroupeError {
  return new TroupeError('INVALID_INPUT', message);
}
