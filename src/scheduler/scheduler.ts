/**
 * Cron schedules (`rt.schedules`). A schedule's `nextRunAt` is its durable timer: at open every
 * active schedule is armed on a timer wheel from it, so no XState or `setTimeout` state has to
 * survive a restart.
 *
 * Firing is one step, the fire step (src/steps/fire.ts) run through the pipeline: a
 * compare-and-swap on the stored `nextRunAt` (the tick being fired must still be the stored one),
 * the advanced schedule, the submitted task with idempotency key `schedule:<id>:<tick ISO>`, and a
 * `schedule.fired` event per tick. So a crash either loses the whole step (the tick fires again
 * after the restart) or keeps all of it (the tick is done): a tick is never skipped by a crash and
 * never doubled. The step's `arm-schedule` effect puts the next tick on this scheduler's wheel
 * ({@link Scheduler.armSchedule}) once the step is durable.
 *
 * Every change to one schedule (fire, update, pause, delete) runs on that schedule's own promise
 * chain, so the CAS reads a value whose commit has landed.
 */
import { isTerminal } from '../../machines/index.js';
import { TroupeError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Clock } from '../clock.js';
import type { Store } from '../store/port.js';
import type { CatchUpPolicy, OverlapPolicy, ScheduleRecord, TaskRecord } from '../store/records.js';
import { createTimerWheel, type TimerWheel } from '../timers/timer-wheel.js';
import type { Pipeline } from '../pipeline/pipeline.js';
import { decideFire, type FireInput, type FireTemplate } from '../steps/fire.js';
import type { StepResult } from '../steps/types.js';
import type { TaskSpec } from '../tasks/spec.js';
import { compileCron, type CronSchedule } from './cron.js';
import { checkUpdate, validateSchedule, type Schedule, type ScheduleSpec, type ScheduleUpdate } from './schedule-spec.js';

export type { Schedule, ScheduleSpec, ScheduleUpdate } from './schedule-spec.js';

/** What the scheduler needs from the runtime. */
export interface SchedulerDeps {
  store: Store;
  clock: Clock;
  log: Logger;
  /** Where fire steps are decided and joined to the turn's batch. */
  pipeline: Pick<Pipeline, 'decide' | 'apply'>;
  /** Validates a task template (throws like submit would), storing nothing. */
  checkTask(task: TaskSpec): void;
  /** A template validated and routed the way submit would, for the ticks a fire submits; or why it fails. */
  template(task: TaskSpec): FireTemplate;
  /** The task holding an idempotency key, if any (a tick's task is never submitted twice). */
  taskOfKey(key: string): TaskRecord | undefined;
  /** Admission as submit sees it: tasks queued now, and `maxQueued`. */
  admission(): { queued: number; maxQueued: number };
  /** Where per-task workspaces are made. */
  workspacesDir: string;
  /** The current state of a task, or undefined if unknown. */
  taskState(id: string): TaskRecord['state'] | undefined;
}

/** `rt.schedules`. */
export interface SchedulesApi {
  /** Stores a new schedule. Throws INVALID_CRON, INVALID_TIMEZONE, INVALID_INPUT or UNKNOWN_AGENT; stores nothing then. */
  create(spec: ScheduleSpec): Promise<Schedule>;
  /** Changes fields of a schedule; a new cron or zone recomputes `nextRunAt` from now. */
  update(id: string, patch: ScheduleUpdate): Promise<Schedule>;
  delete(id: string): Promise<void>;
  get(id: string): Schedule;
  list(): Schedule[];
  /** Stops firing; ticks while paused are not caught up. */
  pause(id: string): Promise<Schedule>;
  /** Fires again from the next tick after now. */
  resume(id: string): Promise<Schedule>;
}

interface Live {
  record: ScheduleRecord;
  cron: CronSchedule;
  chain: Promise<unknown>;
}

/** See the module comment. */
export class Scheduler implements SchedulesApi {
  readonly #d: SchedulerDeps;
  readonly #live = new Map<string, Live>();
  /** lastTaskId → schedule id, for queue_one schedules waiting on their previous run. */
  readonly #waitingOn = new Map<string, string>();
  readonly #wheel: TimerWheel<{ id: string; due: number }>;
  /** Ticks before this instant fell due while the runtime was down: the catch-up policy applies to them. */
  readonly #openedAt: number;
  #stopped = false;

  constructor(deps: SchedulerDeps) {
    this.#d = deps;
    this.#openedAt = deps.clock.now();
    this.#wheel = createTimerWheel<{ id: string; due: number }>(deps.clock, (timer) => this.#background(timer.id, () => this.#fire(timer.id)));
  }

  /** Loads and arms every stored schedule (open). */
  start(): void {
    for (const { value } of this.#d.store.read.schedules.range()) {
      let cron: CronSchedule;
      try {
        cron = compileCron(value.cron, value.tz);
      } catch (error) {
        this.#d.log.error({ err: error, scheduleId: value.id }, 'a stored schedule no longer compiles; it stays unarmed');
        continue;
      }
      const live: Live = { record: value, cron, chain: Promise.resolve() };
      this.#live.set(value.id, live);
      this.#arm(live);
      if (value.pendingTick !== undefined && value.lastTaskId !== undefined) this.#waitingOn.set(value.lastTaskId, value.id);
      // A queue_one tick waiting on a run that settled while the runtime was down fires now.
      if (value.pendingTick !== undefined) this.#background(value.id, () => this.#firePending(value.id));
    }
  }

  /** A task reached a terminal state: a queue_one schedule waiting on it fires its pending tick. */
  onSettled(taskId: string): void {
    const id = this.#waitingOn.get(taskId);
    if (id === undefined || this.#stopped) return;
    this.#waitingOn.delete(taskId);
    this.#background(id, () => this.#firePending(id));
  }

  /**
   * Puts a schedule's next tick on the wheel at `due`, or takes it off (`null`: paused): the fire
   * step's `arm-schedule` effect, run once the step is durable.
   */
  armSchedule(id: string, due: number | null): void {
    if (due === null || !this.#live.has(id)) this.#wheel.remove(id);
    else this.#wheel.add({ id, due });
  }

  /** Fires every tick due by the clock now (`rt.poke()`: the wall clock may have been stepped). */
  check(): void {
    if (!this.#stopped) this.#wheel.check();
  }

  /** Stops firing (close) and waits for changes in flight. */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#wheel.stop();
    await Promise.all([...this.#live.values()].map((live) => live.chain));
  }

  async create(spec: ScheduleSpec): Promise<Schedule> {
    const now = this.#d.clock.now();
    const { record, cron } = validateSchedule(spec, now, (task) => this.#d.checkTask(task));
    if (this.#live.has(record.id) || this.#d.store.read.schedules.has(record.id)) {
      throw new TroupeError('INVALID_INPUT', `schedule ${record.id} already exists; use schedules.update()`);
    }
    const live: Live = { record, cron, chain: Promise.resolve() };
    this.#live.set(record.id, live);
    try {
      await this.#d.store.commit((w) => w.putSchedule(record));
    } catch (error) {
      this.#live.delete(record.id);
      throw error;
    }
    this.#arm(live);
    return viewOf(record);
  }

  update(id: string, patch: ScheduleUpdate): Promise<Schedule> {
    checkUpdate(patch);
    const live = this.#require(id);
    return this.#enqueue(id, async () => {
      const now = this.#d.clock.now();
      const { record: current } = live;
      // A field given as undefined goes back to its default (the contract on both stores).
      const { record, cron } = validateSchedule({ ...viewOf(current), ...patch, id }, now, (task) => this.#d.checkTask(task), current);
      await this.#put(live, record, cron);
      return viewOf(record);
    });
  }

  delete(id: string): Promise<void> {
    this.#require(id);
    return this.#enqueue(id, async () => {
      this.#wheel.remove(id);
      await this.#d.store.commit((w) => w.removeSchedule(id));
      this.#live.delete(id);
    });
  }

  get(id: string): Schedule {
    return viewOf(this.#require(id).record);
  }

  list(): Schedule[] {
    return [...this.#live.values()].map((live) => viewOf(live.record)).sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  pause(id: string): Promise<Schedule> {
    const live = this.#require(id);
    return this.#enqueue(id, async () => {
      if (live.record.paused) return viewOf(live.record);
      await this.#put(live, { ...live.record, paused: true, updatedAt: this.#d.clock.now() }, live.cron);
      return viewOf(live.record);
    });
  }

  resume(id: string): Promise<Schedule> {
    const live = this.#require(id);
    return this.#enqueue(id, async () => {
      if (!live.record.paused) return viewOf(live.record);
      const now = this.#d.clock.now();
      await this.#put(live, { ...live.record, paused: false, nextRunAt: live.cron.next(now), updatedAt: now }, live.cron);
      return viewOf(live.record);
    });
  }

  #require(id: string): Live {
    if (typeof id !== 'string' || id.length === 0) throw new TroupeError('INVALID_INPUT', 'a schedule id must be a non-empty string');
    const live = this.#live.get(id);
    if (!live) throw new TroupeError('NOT_FOUND', `no schedule ${id}`);
    return live;
  }

  /** Queues a fire nobody awaits; its failures are logged by the chain. */
  #background(id: string, fn: () => Promise<void>): void {
    this.#enqueue(id, fn).catch(() => undefined);
  }

  /** Runs `fn` after every earlier change to the same schedule. */
  #enqueue<T>(id: string, fn: () => Promise<T>): Promise<T> {
    if (this.#stopped) return Promise.reject(new TroupeError('CLOSED', 'the scheduler has stopped'));
    const live = this.#live.get(id);
    if (!live) return fn();
    const run = live.chain.then(fn);
    live.chain = run.catch((error: unknown) => this.#d.log.error({ err: error, scheduleId: id }, 'a schedule change failed'));
    return run;
  }

  async #put(live: Live, record: ScheduleRecord, cron: CronSchedule): Promise<void> {
    await this.#d.store.commit((w) => w.putSchedule(record));
    live.record = record;
    live.cron = cron;
    this.#arm(live);
  }

  #arm(live: Live): void {
    if (live.record.paused) this.#wheel.remove(live.record.id);
    else this.#wheel.add({ id: live.record.id, due: live.record.nextRunAt });
  }

  /** The previous run is still going (not terminal, or unknown while its submit is in flight). */
  #busy(record: ScheduleRecord): boolean {
    if (record.lastTaskId === undefined) return false;
    const state = this.#d.taskState(record.lastTaskId);
    return state !== undefined && !isTerminal(state);
  }

  /** Fires the due ticks of a schedule whose timer went off. */
  async #fire(id: string): Promise<void> {
    const live = this.#live.get(id);
    if (!live || live.record.paused) return;
    await this.#step(live, { kind: 'due', expected: live.record.nextRunAt });
  }

  /** Fires a queue_one schedule's pending tick once its previous run has settled. */
  async #firePending(id: string): Promise<void> {
    const live = this.#live.get(id);
    if (!live || live.record.pendingTick === undefined) return;
    await this.#step(live, { kind: 'pending' });
  }

  /** Decides the fire step against the stored schedule, joins it to the batch, and follows its outcome once durable. */
  async #step(live: Live, kind: { kind: 'due'; expected: number } | { kind: 'pending' }): Promise<void> {
    const { store, pipeline, log } = this.#d;
    const id = live.record.id;
    const schedule = store.read.schedules.get(id);
    if (!schedule) return;
    const template = this.#d.template(schedule.task as unknown as TaskSpec);
    const input: FireInput = { template, ...this.#d.admission(), ...kind };
    const view = {
      schedule,
      cron: live.cron,
      openedAt: this.#openedAt,
      lastTaskState: schedule.lastTaskId === undefined ? undefined : this.#d.taskState(schedule.lastTaskId),
      taskOfKey: (key: string) => this.#d.taskOfKey(key),
      workspacesDir: this.#d.workspacesDir,
    };
    const result = pipeline.decide(decideFire, view, input);
    if (kind.kind === 'due' && !schedule.paused && schedule.nextRunAt !== kind.expected) log.warn({ scheduleId: id }, 'schedule changed under a fire; re-arming from the stored tick');
    for (const event of result.events) {
      if (event.data?.skipped === 'error') log.error({ scheduleId: id, tick: event.data.tick, error: event.data.error }, 'a schedule tick could not submit its task; recording it as skipped');
    }
    if (result.changes.length === 0 && result.effects.length === 0) return;
    await pipeline.apply(result);
    const updated = scheduleOf(result);
    // A failed CAS re-arms from the stored tick: the stored record is the one to follow.
    live.record = updated ?? schedule;
    if (updated?.pendingTick !== undefined && updated.lastTaskId !== undefined) {
      this.#waitingOn.set(updated.lastTaskId, id);
      // The previous run may have settled between the check and the commit.
      if (!this.#busy(updated)) this.onSettled(updated.lastTaskId);
    }
  }
}

/** The public face of the runtime's current scheduler: every call first checks that the runtime is open. */
export function guardedSchedules(current: () => SchedulesApi, assertOpen: (call: string) => void): SchedulesApi {
  // The async calls reject rather than throw, like every other async call of the runtime.
  const guard =
    <A extends unknown[], T>(call: string, fn: (...args: A) => Promise<T>) =>
    async (...args: A): Promise<T> => {
      assertOpen(call);
      return fn(...args);
    };
  return {
    create: guard('create', (spec) => current().create(spec)),
    update: guard('update', (id, patch) => current().update(id, patch)),
    delete: guard('delete', (id) => current().delete(id)),
    pause: guard('pause', (id) => current().pause(id)),
    resume: guard('resume', (id) => current().resume(id)),
    get: (id) => {
      assertOpen('get');
      return current().get(id);
    },
    list: () => {
      assertOpen('list');
      return current().list();
    },
  };
}

/** The schedule record a fire step wrote, if it wrote one. */
function scheduleOf(result: StepResult): ScheduleRecord | undefined {
  for (const change of result.changes) if (change.kind === 'schedule') return change.schedule;
  return undefined;
}

function viewOf(record: ScheduleRecord): Schedule {
  return structuredClone(record) as Schedule;
}

export type { CatchUpPolicy, OverlapPolicy };
