/**
 * `rt.schedules` on PostgreSQL: the cluster's cron schedules (src/store/postgres/schedules.ts),
 * fired once per tick by whichever node takes the row. `create`, `pause`, `resume` and `delete`
 * write through to the database; `get` and `list` are synchronous in the API, so they answer from
 * this runtime's copy of the table: loaded at start, updated by this runtime's own writes, and
 * read again about once a second while the node fires schedules (what other runtimes created,
 * paused or fired shows within about that). `create` and `update` check a spec with the LMDB
 * runtime's own validation (src/scheduler/schedule-spec.ts: the same codes, in the same order),
 * its task as submit checks one here; the store checks it again as it writes.
 */
import type pg from 'pg';
import { TroupeError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Schedule, SchedulesApi, ScheduleSpec, ScheduleUpdate } from '../scheduler/scheduler.js';
import { checkUpdate, validateSchedule, type ScheduleTask } from '../scheduler/schedule-spec.js';
import type { ScheduleRecord } from '../store/records.js';
import type { TaskSpec } from '../tasks/spec.js';
import { retentionFromJson, type NewTask } from '../store/postgres/checks.js';
import {
  createSchedule,
  deleteSchedule,
  listSchedules,
  setSchedulePaused,
  updateSchedule,
  type ClusterSchedule,
  type ClusterScheduleSpec,
  type ScheduleTemplate,
} from '../store/postgres/schedules.js';

/** How often the copy is read again, at most (on the node's fire loop). */
const REFRESH_MS = 1_000;

/** What the schedules need from their runtime. */
export interface ClusterSchedulesDeps {
  pool: pg.Pool;
  log: Logger;
  /** Throws unless the runtime is running (names the call). */
  assertOpen(call: string): void;
  /** A template checked as submit checks a task (UNKNOWN_AGENT, INVALID_INPUT, UNSUPPORTED_STORE). */
  task(task: ScheduleTask, where: string): NewTask;
}

/** See the module comment. */
export class ClusterSchedules implements SchedulesApi {
  readonly #k: ClusterSchedulesDeps;
  #copy = new Map<string, Schedule>();
  #readAt = 0;
  #reading: Promise<void> | undefined;

  constructor(deps: ClusterSchedulesDeps) {
    this.#k = deps;
  }

  /** Reads the table into the copy. */
  async load(): Promise<void> {
    const rows = await listSchedules(this.#k.pool);
    this.#copy = new Map(rows.map((row) => [row.id, scheduleOf(row)]));
    this.#readAt = performance.now();
  }

  /** Reads the table again if the copy is older than a second (the node's fire loop calls it). */
  refreshSoon(): void {
    if (this.#reading || performance.now() - this.#readAt < REFRESH_MS) return;
    this.#reading = this.load()
      .catch((error: unknown) => this.#k.log.warn({ err: error }, 'reading the schedules failed'))
      .finally(() => (this.#reading = undefined));
  }

  /** Resolves once a read under way is over (close). */
  async idle(): Promise<void> {
    await this.#reading;
  }

  create(spec: ScheduleSpec): Promise<Schedule> {
    return this.#call('create', async () => {
      const { id, ...fields } = this.#checked(spec);
      return this.#keep(await createSchedule(this.#k.pool, { id, ...fields }));
    });
  }

  update(id: string, patch: ScheduleUpdate): Promise<Schedule> {
    return this.#call('update', async () => {
      checkUpdate(patch);
      if (typeof id !== 'string' || id.length === 0) throw new TroupeError('INVALID_INPUT', 'a schedule id must be a non-empty string');
      // Checked against the schedule as stored, its row locked: another runtime's update waits.
      const row = await updateSchedule(this.#k.pool, id, (current) => {
        const view = scheduleOf(current);
        const { id: _id, ...fields } = this.#checked({ ...view, ...patch, id }, view);
        return fields;
      });
      return this.#keep(row);
    });
  }

  /** A spec checked as the LMDB runtime checks it (over `current`'s fields for an update), as the store's fields. */
  #checked(spec: ScheduleSpec, current?: Schedule): Required<ClusterScheduleSpec> {
    let template: ScheduleTemplate | undefined;
    const check = (task: TaskSpec) => {
      const { id: _task, ...rest } = this.#k.task(task as ScheduleTask, 'schedule.task');
      template = rest as ScheduleTemplate;
    };
    // The record's nextRunAt is the LMDB runtime's; the store computes the cluster's from now().
    const { record } = validateSchedule(spec, Date.now(), check, current as ScheduleRecord | undefined);
    const { id, cron, tz, overlap, catchUp, catchUpWindowMs, paused } = record;
    return { id, cron, tz, task: template!, overlap, catchUp, catchUpWindowMs, paused };
  }

  delete(id: string): Promise<void> {
    return this.#call('delete', async () => {
      await deleteSchedule(this.#k.pool, id);
      this.#copy.delete(id);
    });
  }

  get(id: string): Schedule {
    this.#k.assertOpen('schedules.get');
    if (typeof id !== 'string' || id.length === 0) throw new TroupeError('INVALID_INPUT', 'a schedule id must be a non-empty string');
    const schedule = this.#copy.get(id);
    if (!schedule) throw new TroupeError('NOT_FOUND', `no schedule ${String(id)}`);
    return structuredClone(schedule);
  }

  list(): Schedule[] {
    this.#k.assertOpen('schedules.list');
    return [...this.#copy.values()].sort((a, b) => (a.id < b.id ? -1 : 1)).map((s) => structuredClone(s));
  }

  pause(id: string): Promise<Schedule> {
    return this.#call('pause', async () => this.#keep(await setSchedulePaused(this.#k.pool, id, true)));
  }

  resume(id: string): Promise<Schedule> {
    return this.#call('resume', async () => this.#keep(await setSchedulePaused(this.#k.pool, id, false)));
  }

  #keep(row: ClusterSchedule): Schedule {
    const schedule = scheduleOf(row);
    this.#copy.set(schedule.id, schedule);
    return structuredClone(schedule);
  }

  #call<T>(call: string, fn: () => Promise<T>): Promise<T> {
    try {
      this.#k.assertOpen(`schedules.${call}`);
      return fn();
    } catch (error) {
      return Promise.reject(error);
    }
  }
}

/** The API's Schedule of a stored one. */
function scheduleOf(row: ClusterSchedule): Schedule {
  const { agent, requires, input, priority, maxAttempts, labels, timeoutMs, retry, retention, workspace } = row.task;
  const task: ScheduleTask = { priority, retry: { ...retry, ...(maxAttempts !== undefined && { maxAttempts }) } };
  // A template routed by `requires` names no agent: each tick's task is routed as a submit is.
  if (agent !== '') task.agent = agent;
  if (requires !== undefined) task.requires = requires;
  if (retention !== undefined) task.retention = retentionFromJson(retention as Record<string, number | null>);
  if (timeoutMs !== undefined) task.timeoutMs = timeoutMs;
  if (input !== undefined) task.input = input;
  if (labels !== undefined) task.labels = labels;
  if (workspace !== undefined) task.workspace = workspace;
  const schedule: Schedule = {
    id: row.id,
    cron: row.cron,
    tz: row.tz,
    task,
    overlap: row.overlap,
    catchUp: row.catchUp,
    catchUpWindowMs: row.catchUpWindowMs,
    paused: row.paused,
    nextRunAt: Math.round(row.nextRunAt),
    fired: row.fired,
    skipped: row.skipped,
    createdAt: Math.round(row.createdAt),
    updatedAt: Math.round(row.updatedAt),
  };
  if (row.lastTickAt !== undefined) schedule.lastTickAt = Math.round(row.lastTickAt);
  if (row.lastTaskId !== undefined) schedule.lastTaskId = row.lastTaskId;
  if (row.pendingTick !== undefined) schedule.pendingTick = Math.round(row.pendingTick);
  return schedule;
}
