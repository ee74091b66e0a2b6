/**
 * What one due schedule's fire does on PostgreSQL (schedules.ts), decided with no I/O: the LMDB
 * runtime's src/steps/fire.ts, told in the cluster's terms.
 *
 * - **Catch-up.** A tick that fell due before every node alive now had started (`openedAt`) fell
 *   due while no node ran (or while the node that should have fired it was dying), as a tick
 *   before the LMDB runtime's open did: the catch-up policy decides it (`skip` none, the latest
 *   `once`, or `all`, within `catchUpWindowMs` of now). Ticks that fell due while a node ran fire,
 *   however late.
 * - **Overlap.** The LMDB runtime decides a tick's overlap when its timer goes off, at the tick; a
 *   node looks at most a fire interval later. So each tick is decided against the schedule's last
 *   run as it was at the tick: busy until it settled (its `settled_at`), for good while it is not
 *   terminal. A `queue_one` tick held back (`pendingTick`) fires as its previous run settles, as
 *   the LMDB runtime's settle notification fires it: before any later tick is decided, and on its
 *   own when no tick is due (even while paused, as on LMDB).
 */
import { isTerminal, type TaskState } from '../../../machines/index.js';
import type { CronSchedule } from '../../scheduler/cron.js';
import { dueTicks } from '../../steps/fire.js';
import type { CatchUpPolicy, OverlapPolicy } from '../records.js';
import type { TaskRow } from './checks.js';

/** What a tick does while the schedule's last run is not terminal: the LMDB runtime's policies (src/steps/fire.ts). */
export type ClusterOverlap = OverlapPolicy;
/** What becomes of ticks that fell due while no node ran: the LMDB runtime's policies (src/steps/fire.ts). */
export type ClusterCatchUp = CatchUpPolicy;

/** What a plan reads of a stored schedule. Times are epoch ms on the database's clock. */
export interface PlannedSchedule {
  id: string;
  overlap: ClusterOverlap;
  catchUp: ClusterCatchUp;
  catchUpWindowMs: number;
  paused: boolean;
  nextRunAt: number;
  lastTaskId?: string;
  pendingTick?: number;
}

/** The schedule's last task as the fire reads it: its state and settle time (null: gone, or never settled). */
export interface LastRun {
  state: TaskState | null;
  settledAt: number | null;
}

/** Why a tick fired no task. */
export type SkipReason = 'overlap' | 'catch_up' | 'error';

/** One schedule's fire, decided. */
export interface Plan {
  id: string;
  /** The tick stored when it was read, and the held one (null: none): the compare-and-swap's expected values. */
  expected: number;
  held: number | null;
  next: number;
  /** The `queue_one` tick held back after this fire (null: none). */
  pending: number | null;
  /** The tasks to submit, in the order their ticks fire. */
  tasks: Array<{ tick: number; row: TaskRow }>;
  /** In the order fire.ts records them: catch-up, then overlap, then errors. */
  skipped: Array<{ tick: number; reason: SkipReason; error?: string }>;
}

/** What {@link planFire} is given besides the schedule. */
export interface PlanContext {
  cron: CronSchedule;
  last: LastRun | null;
  /** The database's `now()`. */
  now: number;
  /** When the earliest node alive now started: ticks before it are caught up by the policy. */
  openedAt: number;
  /** Most due ticks looked at; the rest are left due. */
  maxTicks: number;
  /** The task row of a tick, or a throw when the template no longer validates. */
  rowOf(tick: number): TaskRow;
}

/** Decides a schedule's fire (see the module comment). */
export function planFire(schedule: PlannedSchedule, k: PlanContext): Plan {
  const plan: Plan = { id: schedule.id, expected: schedule.nextRunAt, held: schedule.pendingTick ?? null, next: schedule.nextRunAt, pending: null, tasks: [], skipped: [] };
  let ticks: number[] = [];
  if (!schedule.paused && schedule.nextRunAt <= k.now) {
    const looked = dueTicks(k.cron, schedule.nextRunAt, k.now, k.openedAt, k.maxTicks, schedule);
    plan.next = looked.next;
    for (const tick of looked.skipped) plan.skipped.push({ tick, reason: 'catch_up' });
    ticks = looked.ticks;
  }
  let busyUntil = busyUntilOf(schedule, k.last);
  let pending = schedule.pendingTick;
  const submit: number[] = [];
  // The held tick fires once the run it waits on has settled, before any later tick is decided.
  const firePending = (at: number) => {
    if (pending === undefined || busyUntil > at) return;
    submit.push(pending);
    pending = undefined;
    busyUntil = Infinity;
  };
  for (const tick of ticks) {
    firePending(tick);
    if (tick >= busyUntil || schedule.overlap === 'allow') {
      submit.push(tick);
      busyUntil = Infinity;
    } else if (schedule.overlap === 'queue_one') {
      if (pending !== undefined) plan.skipped.push({ tick: pending, reason: 'overlap' });
      pending = tick;
    } else {
      plan.skipped.push({ tick, reason: 'overlap' });
    }
  }
  // A run that settled after the last tick (or with none due) lets the held tick go now.
  if (busyUntil !== Infinity) firePending(busyUntil);
  plan.pending = pending ?? null;
  for (const tick of submit) {
    try {
      plan.tasks.push({ tick, row: k.rowOf(tick) });
    } catch (error) {
      // A template that no longer validates skips its ticks, and the schedule still advances.
      plan.skipped.push({ tick, reason: 'error', error: (error as Error).message });
    }
  }
  return plan;
}

/**
 * Until when the schedule's last run kept it busy: for good while not terminal, until its settle
 * once terminal, and never with no run (or its task gone: unknown, as on LMDB).
 */
function busyUntilOf(schedule: PlannedSchedule, last: LastRun | null): number {
  if (schedule.lastTaskId === undefined || last === null || last.state === null) return -Infinity;
  if (!isTerminal(last.state)) return Infinity;
  return last.settledAt ?? -Infinity;
}
