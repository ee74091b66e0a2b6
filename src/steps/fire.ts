/**
 * Fire: a schedule's tick comes due (`due`), or a queue_one schedule's held tick may run because its
 * previous run settled (`pending`). One step: the compare-and-swap on `nextRunAt` (the tick fired
 * must still be the one stored), the overlap and catch-up policies, a task per fired tick with key
 * `schedule:<id>:<tick ISO>` (through the submit step), the advanced schedule, and a
 * `schedule.fired` event per tick. A tick whose task cannot be submitted (the template no longer
 * validates, admission is full) is recorded as skipped, and the schedule still advances.
 */
import { isTerminal, type TaskState } from '../../machines/index.js';
import type { ScheduleRecord, TaskRecord } from '../store/records.js';
import type { ValidSpec } from '../tasks/spec.js';
import { tickIso, type CronSchedule } from '../scheduler/cron.js';
import { decideSubmit } from './submit.js';
import { emit } from './common.js';
import { nothing, type StepContext, type StepResult } from './types.js';

/** Most ticks one fire looks at (catch-up `all` after a long downtime with a fast cron). */
export const MAX_TICKS_PER_FIRE = 1_000;

/** What fire reads. */
export interface FireView {
  /** The schedule as stored (memory holds the committed value). */
  schedule: ScheduleRecord;
  cron: CronSchedule;
  /** When the runtime opened: ticks before it fell due while it was down (catch-up applies). */
  openedAt: number;
  /** The state of the schedule's last task (undefined: none, or unknown). */
  lastTaskState: TaskState | undefined;
  /** The task holding an idempotency key, if any (a tick's task submitted before is not submitted twice). */
  taskOfKey(key: string): TaskRecord | undefined;
  /** Where per-task workspaces are made. */
  workspacesDir: string;
}

/** The schedule's task template, validated by the caller the way submit would, or why it fails. */
export type FireTemplate = { spec: ValidSpec } | { error: string };

/** What the caller observed. */
export type FireInput = {
  template: FireTemplate;
  /** Admission: tasks queued now, and `maxQueued`. */
  queued: number;
  maxQueued: number;
} & ({ kind: 'due'; expected: number } | { kind: 'pending' });

interface Skip {
  tick: number;
  reason: 'overlap' | 'catch_up' | 'error';
  error?: string;
}

/** Decides a fire. A failed CAS (the schedule changed) decides nothing but re-arming it from the stored tick. */
export function decideFire(view: FireView, input: FireInput, ctx: StepContext): StepResult {
  const { schedule } = view;
  const { now } = ctx;
  if (input.kind === 'pending') {
    const tick = schedule.pendingTick;
    // A held tick fires as its run settles, paused or not: it fell due before the pause (as on
    // PostgreSQL). A paused schedule's own ticks wait.
    if (tick === undefined || busy(view)) return nothing();
    return fire(view, input, schedule.nextRunAt, [tick], [], undefined, ctx);
  }
  if (schedule.paused) return nothing();
  if (schedule.nextRunAt !== input.expected) return rearm(schedule);
  const first = schedule.nextRunAt;
  if (first > now) return rearm(schedule);
  const looked = dueTicks(view.cron, first, now, view.openedAt, MAX_TICKS_PER_FIRE, schedule);
  const skipped: Skip[] = looked.skipped.map((tick) => ({ tick, reason: 'catch_up' }));
  return fire(view, input, looked.next, looked.ticks, skipped, schedule.pendingTick, ctx);
}

/**
 * One look at a schedule's due ticks, from `first` to `now` (at most `maxTicks` of them): where
 * it goes next, the ticks that fire (the missed ones its catch-up policy keeps, then those on
 * time) and the missed ones it skips. Both stores decide a fire with it (PostgreSQL:
 * src/store/postgres/schedule-plan.ts).
 */
export function dueTicks(cron: CronSchedule, first: number, now: number, openedAt: number, maxTicks: number, policy: Pick<ScheduleRecord, 'catchUp' | 'catchUpWindowMs'>): { next: number; ticks: number[]; skipped: number[] } {
  const due = [first, ...cron.between(first, now, maxTicks - 1)];
  const last = due[due.length - 1]!;
  // A capped look continues from its last tick: the next fire takes the rest, at once.
  const next = cron.next(due.length === maxTicks ? last : Math.max(now, last));
  // Ticks that fell due while no runtime ran obey the catch-up policy, within its window.
  const missed = due.filter((t) => t < openedAt);
  const onTime = due.filter((t) => t >= openedAt);
  const inWindow = missed.filter((t) => now - t <= policy.catchUpWindowMs);
  // `once` fires the latest missed tick of the whole downtime: a capped look holds it only when
  // the tick after its last is no longer missed.
  const holdsLatest = onTime.length > 0 || due.length < maxTicks || next >= openedAt;
  const caughtUp = policy.catchUp === 'all' ? inWindow : policy.catchUp === 'once' && holdsLatest ? inWindow.slice(-1) : [];
  return { next, ticks: [...caughtUp, ...onTime], skipped: missed.filter((t) => !caughtUp.includes(t)) };
}

/** The previous run is still going (not terminal, or unknown while its submit is in flight). */
function busy(view: FireView): boolean {
  return view.schedule.lastTaskId !== undefined && view.lastTaskState !== undefined && !isTerminal(view.lastTaskState);
}

function rearm(schedule: ScheduleRecord): StepResult {
  const out = nothing();
  out.effects.push({ kind: 'arm-schedule', scheduleId: schedule.id, due: schedule.paused ? null : schedule.nextRunAt });
  return out;
}

/** Applies the overlap policy to `ticks`, submits their tasks, and advances the schedule to `next`. */
function fire(view: FireView, input: FireInput, next: number, ticks: readonly number[], skipped: Skip[], held: number | undefined, ctx: StepContext): StepResult {
  const { schedule } = view;
  const submit: number[] = [];
  let running = busy(view);
  let pendingTick = held;
  // A held tick whose previous run has settled (its settle's own fire has not run yet) goes first,
  // as it would have at the settle, and the ticks due now come after it: never a newer tick
  // before it. (As on PostgreSQL: src/store/postgres/schedule-plan.ts.)
  if (held !== undefined && !running && ticks.length > 0) {
    submit.push(held);
    pendingTick = undefined;
    running = true;
  }
  for (const tick of ticks) {
    if (!running || schedule.overlap === 'allow') {
      submit.push(tick);
      running = true;
    } else if (schedule.overlap === 'queue_one') {
      if (pendingTick !== undefined) skipped.push({ tick: pendingTick, reason: 'overlap' });
      pendingTick = tick;
    } else {
      skipped.push({ tick, reason: 'overlap' });
    }
  }
  // Each fired tick's task: one submitted before under its key, or a new one. Decided up front, so
  // a template or admission failure skips every tick before any seq or id is taken.
  const keys = submit.map((tick) => `schedule:${schedule.id}:${tickIso(tick)}`);
  const existing = keys.map((key) => view.taskOfKey(key));
  const failure = 'error' in input.template ? input.template.error : admissionError(input, existing);
  const out = nothing();
  const fired: Array<{ tick: number; taskId: string }> = [];
  if (failure === undefined) {
    const { spec } = input.template as { spec: ValidSpec };
    for (let i = 0; i < submit.length; i++) {
      const found = existing[i];
      if (found !== undefined) {
        fired.push({ tick: submit[i]!, taskId: found.id });
        continue;
      }
      const made = decideSubmit({ workspacesDir: view.workspacesDir }, { spec: { ...spec, idempotencyKey: keys[i]! } }, ctx);
      for (const change of made.changes) {
        if (change.kind === 'task') fired.push({ tick: submit[i]!, taskId: change.task.id });
        out.changes.push(change);
      }
      out.events.push(...made.events);
      out.effects.push(...made.effects);
    }
  } else {
    for (const tick of submit) skipped.push({ tick, reason: 'error', error: failure });
  }
  const { now } = ctx;
  const updated: ScheduleRecord = { ...schedule, nextRunAt: next, fired: schedule.fired + fired.length, skipped: schedule.skipped + skipped.length, updatedAt: now };
  if (pendingTick === undefined) delete updated.pendingTick;
  else updated.pendingTick = pendingTick;
  for (const { tick, taskId } of fired) {
    updated.lastTickAt = tick;
    updated.lastTaskId = taskId;
    emit(out, ctx, 'schedule.fired', taskId, undefined, { scheduleId: schedule.id, tick, tickIso: tickIso(tick) });
  }
  for (const s of skipped) {
    const data = { scheduleId: schedule.id, tick: s.tick, tickIso: tickIso(s.tick), skipped: s.reason };
    emit(out, ctx, 'schedule.fired', undefined, undefined, s.error === undefined ? data : { ...data, error: s.error });
  }
  out.changes.push({ kind: 'schedule', schedule: updated });
  out.effects.push({ kind: 'arm-schedule', scheduleId: schedule.id, due: updated.paused ? null : updated.nextRunAt });
  return out;
}

/** AT_CAPACITY's message when the new queued tasks would pass `maxQueued`, as submit words it. */
function admissionError(input: FireInput, existing: ReadonlyArray<TaskRecord | undefined>): string | undefined {
  const { spec } = input.template as { spec: ValidSpec };
  let admitted = 0;
  if (!spec.unmatched) for (const found of existing) if (found === undefined) admitted++;
  if (admitted === 0 || input.queued + admitted <= input.maxQueued) return undefined;
  return atCapacityMessage(input.queued, input.maxQueued);
}

/** AT_CAPACITY's message, on both stores: `queued` tasks were queued before the refused ones. */
export function atCapacityMessage(queued: number, maxQueued: number): string {
  return `admission is full: ${queued} tasks queued, maxQueued is ${maxQueued}`;
}
