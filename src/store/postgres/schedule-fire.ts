/**
 * Firing the cluster's cron schedules on PostgreSQL (issue #15): each tick fires once, on whichever
 * node takes the schedule's row, whatever the number of nodes calling {@link fireDue}.
 *
 * A fire is one transaction: it takes the rows of the schedules that are due, or that hold a
 * `queue_one` tick whose previous run has settled, `FOR UPDATE SKIP LOCKED` (a row another node is
 * firing is skipped, not waited for), advances each with a compare-and-swap on `next_run_at` (the
 * tick fired must still be the one stored), submits each fired tick's task through the queue's
 * insert with the idempotency key `schedule:<id>:<tick ISO>` (so a tick cannot make a second task,
 * even if the first two guards were gone), and appends `schedule.fired` per tick, fired or skipped.
 * What each schedule's fire does (the overlap and catch-up policies of src/steps/fire.ts) is
 * decided by schedule-plan.ts, from the database's `now()`, with ticks from src/scheduler/cron.ts
 * (cron-parser, with its DST policy). Schedules fire while the cluster is frozen: like submits,
 * they only queue work.
 */
import type pg from 'pg';
import type { TaskState } from '../../../machines/index.js';
import { createIdGenerator } from '../../ids.js';
import { compileCron, tickIso, type CronSchedule } from '../../scheduler/cron.js';
import { MAX_TICKS_PER_FIRE } from '../../steps/fire.js';
import { checkNode, checkTask, INT4_MAX, invalid } from './checks.js';
import { admitFires } from './admission.js';
import { appendEvents, eventOf, type NewEvent } from './events.js';
import { NODE_LOCK_CLASS } from './nodes.js';
import { insertTasks, notMember } from './queue.js';
import { planFire, type Plan, type SkipReason } from './schedule-plan.js';
import { columns, scheduleOf, type ScheduleRow } from './schedules.js';
import { epochMs, SETTLED_SQL, storeFailed, transaction } from './transaction.js';

/** What one {@link fireDue} did. */
export interface FireResult {
  fired: Array<{ scheduleId: string; tick: number; taskId: string; created: boolean }>;
  skipped: Array<{ scheduleId: string; tick: number; reason: SkipReason; error?: string }>;
  /** Schedules whose stored cron no longer compiles: left as they are, not fired. */
  unusable: Array<{ scheduleId: string; error: string }>;
}

/** Options of {@link fireDue}. */
export interface FireOptions {
  /** Most schedules one call fires. @default 100 */
  limit?: number;
  /** Most ticks of one schedule one call looks at; the rest are left due. @default MAX_TICKS_PER_FIRE */
  maxTicks?: number;
  /** The runtime's `maxQueued`: a schedule whose new tasks would pass it skips its ticks (admission.ts). @default no limit */
  maxQueued?: number;
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
  if (options.maxQueued !== undefined && (!Number.isSafeInteger(options.maxQueued) || options.maxQueued <= 0)) throw invalid('options.maxQueued must be a positive integer');
  // A look first, with no lock and no transaction: every node fires four times a second, and the
  // fire's transaction (its lock on the node's row makes its commit flush the WAL) almost always
  // finds nothing due. A due tick the look misses (it fell due just after) is the next call's.
  let look: { member: boolean; due: boolean };
  try {
    look = (await pool.query<{ member: boolean; due: boolean }>({ name: 'troupe-fire-look', text: FIRE_LOOK, values: [node] })).rows[0]!;
  } catch (error) {
    throw storeFailed('firing schedules', error);
  }
  if (!look.member) throw notMember(node, 'it must not fire schedules');
  if (!look.due) return { fired: [], skipped: [], unusable: [] };
  return transaction(pool, 'firing schedules', async (client) => {
    const member = await client.query<{ started_at: number }>(`SELECT ${epochMs('started_at')} FROM troupe_nodes WHERE id = $1::uuid FOR KEY SHARE`, [node]);
    if (member.rows.length === 0) throw notMember(node, 'it must not fire schedules');
    // The first condition is the second's outline on the schedules alone, which their two partial
    // indexes (due, and holding a tick) answer without reading every schedule.
    const { rows } = await client.query<ScheduleRow & { now: number }>(
      `SELECT ${columns('s')}, ${epochMs('now()', 'now')}
         FROM troupe_schedules s LEFT JOIN troupe_tasks t ON t.id = s.last_task_id
        WHERE ((NOT s.paused AND s.next_run_at <= now()) OR s.pending_tick IS NOT NULL)
          AND ((NOT s.paused AND s.next_run_at <= now()) OR t.id IS NULL OR t.state IN ${SETTLED_SQL})
        ORDER BY s.next_run_at, s.id
        LIMIT $1
        FOR UPDATE OF s SKIP LOCKED`,
      [limit],
    );
    const result: FireResult = { fired: [], skipped: [], unusable: [] };
    if (rows.length === 0) return result;
    // The last tasks are read now that the schedules are locked, not in the join above: a schedule
    // another node fired after that statement's snapshot is locked as that node's commit left it,
    // and the join's recheck finds no row for its new last task in the snapshot and null-extends
    // it, so a held `queue_one` tick would look free to fire beside the open task. Locked,
    // last_task_id stays as read.
    const last = await lastTasksOf(client, rows);
    const openedAt = await openedAtFor(client, rows, member.rows[0]!.started_at);
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
      const rowOf = (tick: number) => checkTask({ ...schedule.task, id: mintId(), idempotencyKey: `schedule:${schedule.id}:${tickIso(tick)}` }, `schedule ${schedule.id}'s task`);
      plans.push(planFire(schedule, { cron, last: last.get(row.id) ?? { state: null, settledAt: null }, now: row.now, openedAt, maxTicks, rowOf }));
    }
    if (plans.length === 0) return result;
    if (options.maxQueued !== undefined) await admitFires(client, plans, options.maxQueued);
    // The compare-and-swap first: a schedule whose stored tick, or held tick, moved on submits nothing.
    const swapped = await client.query<{ id: string }>(
      `UPDATE troupe_schedules s
          SET next_run_at = to_timestamp(u.next / 1000), fired = s.fired + u.fired, skipped = s.skipped + u.skipped,
              last_tick_at = coalesce(to_timestamp(u.last_tick / 1000), s.last_tick_at), pending_tick = to_timestamp(u.pending / 1000), updated_at = now()
         FROM unnest($1::text[], $2::float8[], $3::float8[], $4::int[], $5::int[], $6::float8[], $7::float8[], $8::float8[])
              AS u(id, expected, next, fired, skipped, last_tick, pending, held)
        WHERE s.id = u.id AND s.next_run_at = to_timestamp(u.expected / 1000) AND s.pending_tick IS NOT DISTINCT FROM to_timestamp(u.held / 1000)
       RETURNING s.id`,
      [
        plans.map((p) => p.id),
        plans.map((p) => p.expected),
        plans.map((p) => p.next),
        plans.map((p) => p.tasks.length),
        plans.map((p) => p.skipped.length),
        plans.map((p) => p.tasks.at(-1)?.tick ?? null),
        plans.map((p) => p.pending),
        plans.map((p) => p.held),
      ],
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


/** The state and settle time of each locked schedule's last task, by schedule id (none for a schedule without one, or whose task is gone). */
async function lastTasksOf(client: pg.PoolClient, rows: ReadonlyArray<Pick<ScheduleRow, 'id' | 'last_task_id'>>): Promise<Map<string, { state: TaskState; settledAt: number | null }>> {
  const ids = rows.flatMap((r) => (r.last_task_id === null ? [] : [r.last_task_id]));
  if (ids.length === 0) return new Map();
  const { rows: tasks } = await client.query<{ id: string; state: TaskState; settled_at: number | null }>(`SELECT id, state, ${epochMs('settled_at')} FROM troupe_tasks WHERE id = ANY($1::text[])`, [ids]);
  const byId = new Map(tasks.map((t) => [t.id, { state: t.state, settledAt: t.settled_at }]));
  const last = new Map<string, { state: TaskState; settledAt: number | null }>();
  for (const r of rows) {
    const task = r.last_task_id === null ? undefined : byId.get(r.last_task_id);
    if (task) last.set(r.id, task);
  }
  return last;
}
/**
 * When the earliest node alive now started (src/store/postgres/schedule-plan.ts: ticks before it
 * are caught up by each schedule's policy). A node is alive while its session holds its advisory
 * lock (nodes.ts); `pg_locks` names those sessions' locks in this database, so a dead node whose
 * row no sweep has removed yet does not count. The lock table is read only when a due tick is older
 * than this node (`mine`, its own start): any later tick fell due while this node ran.
 */
async function openedAtFor(client: pg.PoolClient, rows: ReadonlyArray<ScheduleRow & { now: number }>, mine: number): Promise<number> {
  if (!rows.some((row) => !row.paused && row.next_run_at <= row.now && row.next_run_at < mine)) return mine;
  const { rows: found } = await client.query<{ opened_at: number | null }>(
    `SELECT ${epochMs('min(n.started_at)', 'opened_at')}
       FROM troupe_nodes n
       JOIN pg_locks l ON l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
        AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
        AND l.classid = $1::bigint::oid AND l.objid = n.lock::oid`,
    [NODE_LOCK_CLASS],
  );
  return Math.min(found[0]?.opened_at ?? mine, mine);
}

/** The look before a fire: whether `node` is a member, and whether a schedule is due or holds a tick (the fire's first condition, through the same two partial indexes). */
const FIRE_LOOK = `SELECT EXISTS (SELECT 1 FROM troupe_nodes WHERE id = $1::uuid) AS member,
    EXISTS (SELECT 1 FROM troupe_schedules WHERE NOT paused AND next_run_at <= now())
      OR EXISTS (SELECT 1 FROM troupe_schedules WHERE pending_tick IS NOT NULL) AS due`;

let nextId: ((at?: number) => string) | undefined;

/** A new task id (time-ordered, as the runtime's), from a generator made on first use. */
function mintId(): string {
  nextId ??= createIdGenerator(() => Date.now());
  return nextId();
}
