/**
 * Cron schedules (`rt.schedules`). A schedule's `nextRunAt` is its durable timer: at open every
 * active schedule is armed on a timer wheel from it, so no XState or `setTimeout` state has to
 * survive a restart.
 *
 * Firing is one step: a compare-and-swap on the stored `nextRunAt` (the tick being fired must still
 * be the stored one), the advanced schedule, the submitted task with idempotency key
 * `schedule:<id>:<tick ISO>`, and a `schedule.fired` event per tick. So a crash either loses the
 * whole step (the tick fires again after the restart) or keeps all of it (the tick is done): a tick
 * is never skipped by a crash and never doubled.
 *
 * Every change to one schedule (fire, update, pause, delete) runs on that schedule's own promise
 * chain, so the CAS reads a value whose commit has landed.
 */
import { isTerminal } from '../../machines/index.js';
import { TroupeError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Clock } from '../clock.js';
import type { Store, StepWriter } from '../store/port.js';
import type { CatchUpPolicy, OverlapPolicy, ScheduleRecord, TaskRecord } from '../store/records.js';
import { createTimerWheel, type TimerWheel } from '../timers/timer-wheel.js';
import type { TaskSpec } from '../tasks/spec.js';
import { compileCron, tickIso, type CronSchedule } from './cron.js';
import { validateSchedule, type Schedule, type ScheduleSpec, type ScheduleUpdate } from './schedule-spec.js';

export type { Schedule, ScheduleSpec, ScheduleUpdate } from './schedule-spec.js';

/** Most ticks one fire looks at (catch-up `all` after a long downtime with a fast cron). */
const MAX_TICKS_PER_FIRE = 1_000;

/** What the scheduler needs from the runtime. */
export interface SchedulerDeps {
  store: Store;
  clock: Clock;
  log: Logger;
  /** Submits specs in one step, with `extra` written into that step; one record per spec. */
  submit(specs: TaskSpec[], extra: (w: StepWriter, picked: readonly TaskRecord[]) => void): Promise<unknown>;
  /** Validates a task template (throws like submit would), storing nothing. */
  checkTask(task: TaskSpec): void;
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
    const live = this.#require(id);
    return this.#enqueue(id, async () => {
      const now = this.#d.clock.now();
      const { record: current } = live;
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
    const now = this.#d.clock.now();
    const first = live.record.nextRunAt;
    if (first > now) return this.#arm(live);
    const due = [first, ...live.cron.between(first, now, MAX_TICKS_PER_FIRE - 1)];
    // A capped batch continues from its last tick: the timer fires again at once for the rest.
    const next = live.cron.next(due.length === MAX_TICKS_PER_FIRE ? due[due.length - 1]! : Math.max(now, due[due.length - 1]!));
    const { record } = live;
    // Ticks that fell due while the runtime was down obey the catch-up policy, within its window.
    const missed = due.filter((t) => t < this.#openedAt);
    const onTime = due.filter((t) => t >= this.#openedAt);
    const inWindow = missed.filter((t) => now - t <= record.catchUpWindowMs);
    const caughtUp = record.catchUp === 'all' ? inWindow : record.catchUp === 'once' ? inWindow.slice(-1) : [];
    const fire = [...caughtUp, ...onTime];
    const skipped: Array<{ tick: number; reason: string }> = missed.filter((t) => !caughtUp.includes(t)).map((tick) => ({ tick, reason: 'catch_up' }));
    await this.#submitTicks(live, first, next, fire, skipped);
  }

  /** Fires a queue_one schedule's pending tick once its previous run has settled. */
  async #firePending(id: string): Promise<void> {
    const live = this.#live.get(id);
    const tick = live?.record.pendingTick;
    if (!live || tick === undefined || this.#busy(live.record)) return;
    await this.#submitTicks(live, live.record.nextRunAt, live.record.nextRunAt, [tick], [], true);
  }

  /**
   * Applies the overlap policy to `ticks`, then commits, in one step, the CAS from `expected` to
   * `next`, the tasks and the events. On a submit error (agent gone, admission full) the ticks are
   * recorded as skipped and the schedule still advances.
   */
  async #submitTicks(
    live: Live,
    expected: number,
    next: number,
    ticks: number[],
    skipped: Array<{ tick: number; reason: string; error?: unknown }>,
    pending = false,
    held?: { tick: number | undefined },
  ): Promise<void> {
    const { record } = live;
    const submit: number[] = [];
    let busy = this.#busy(record);
    let pendingTick = held ? held.tick : pending ? undefined : record.pendingTick;
    for (const tick of ticks) {
      if (!busy || record.overlap === 'allow') {
        submit.push(tick);
        busy = true;
      } else if (record.overlap === 'queue_one') {
        if (pendingTick !== undefined) skipped.push({ tick: pendingTick, reason: 'overlap' });
        pendingTick = tick;
      } else {
        skipped.push({ tick, reason: 'overlap' });
      }
    }
    const now = this.#d.clock.now();
    const updated: ScheduleRecord = { ...record, nextRunAt: next, fired: record.fired + submit.length, skipped: record.skipped + skipped.length, updatedAt: now };
    if (pendingTick === undefined) delete updated.pendingTick;
    else updated.pendingTick = pendingTick;
    const template = record.task as unknown as TaskSpec;
    const specs = submit.map((tick): TaskSpec => ({ ...template, idempotencyKey: `schedule:${record.id}:${tickIso(tick)}` }));
    const write = (w: StepWriter, picked: readonly TaskRecord[]) => {
      const stored = this.#d.store.read.schedules.get(record.id);
      if (!stored || stored.nextRunAt !== expected) throw new CasFailed();
      picked.forEach((task, i) => {
        updated.lastTickAt = submit[i]!;
        updated.lastTaskId = task.id;
        w.event('schedule.fired', { at: now, taskId: task.id, data: { scheduleId: record.id, tick: submit[i], tickIso: tickIso(submit[i]!) } });
      });
      for (const s of skipped) {
        w.event('schedule.fired', { at: now, data: { scheduleId: record.id, tick: s.tick, tickIso: tickIso(s.tick), skipped: s.reason, ...(s.error ? { error: String(s.error) } : {}) } });
      }
      w.putSchedule(updated);
    };
    try {
      if (specs.length > 0) await this.#d.submit(specs, write);
      else await this.#d.store.commit((w) => write(w, []));
    } catch (error) {
      if (error instanceof CasFailed) {
        this.#d.log.warn({ scheduleId: record.id }, 'schedule changed under a fire; re-arming from the stored tick');
        const stored = this.#d.store.read.schedules.get(record.id);
        if (stored) live.record = stored;
        return this.#arm(live);
      }
      if (submit.length === 0) throw error;
      this.#d.log.error({ err: error, scheduleId: record.id }, 'a schedule tick could not submit its task; recording it as skipped');
      // Keep the tick this batch held back (queue_one): only the ticks that failed to submit are skipped.
      return this.#submitTicks(live, expected, next, [], [...skipped, ...submit.map((tick) => ({ tick, reason: 'error', error: (error as Error).message }))], pending, { tick: pendingTick });
    }
    live.record = updated;
    if (updated.pendingTick !== undefined && updated.lastTaskId !== undefined) {
      this.#waitingOn.set(updated.lastTaskId, record.id);
      // The previous run may have settled between the check and the commit.
      if (!this.#busy(updated)) this.onSettled(updated.lastTaskId);
    }
    this.#arm(live);
  }
}

/** The public face of a scheduler: every call first checks that the runtime is open. */
export function guardedSchedules(scheduler: SchedulesApi, assertOpen: (call: string) => void): SchedulesApi {
  // The async calls reject rather than throw, like every other async call of the runtime.
  const guard =
    <A extends unknown[], T>(call: string, fn: (...args: A) => Promise<T>) =>
    async (...args: A): Promise<T> => {
      assertOpen(call);
      return fn(...args);
    };
  return {
    create: guard('create', (spec) => scheduler.create(spec)),
    update: guard('update', (id, patch) => scheduler.update(id, patch)),
    delete: guard('delete', (id) => scheduler.delete(id)),
    pause: guard('pause', (id) => scheduler.pause(id)),
    resume: guard('resume', (id) => scheduler.resume(id)),
    get: (id) => {
      assertOpen('get');
      return scheduler.get(id);
    },
    list: () => {
      assertOpen('list');
      return scheduler.list();
    },
  };
}

/** Thrown inside a fire step when the stored tick is not the one being fired: nothing is written. */
class CasFailed extends Error {}

function viewOf(record: ScheduleRecord): Schedule {
  return structuredClone(record) as Schedule;
}

export type { CatchUpPolicy, OverlapPolicy };
