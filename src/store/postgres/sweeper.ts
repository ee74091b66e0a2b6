/**
 * Taking attempts back on the PostgreSQL queue (issue #15). A node that dies lets its session
 * advisory lock go (nodes.ts), so {@link deadNodes} names it within milliseconds; a sweep then ends
 * each of its running attempts as `crashed` and requeues the task, or drops it when its attempt
 * budget is spent, and removes the node. A running attempt whose lease ran out on the database's
 * clock (a node that hangs, or is cut off but holds its lock) ends as `lease_expired` the same way.
 *
 * Every end goes through settle.ts's fenced writes and bumps the task's token, so a node that is
 * still running the attempt can write nothing more for it; a settle that committed first wins, and
 * the sweep leaves that task alone. Rows another transaction holds are skipped, not waited for:
 * the next sweep sees them again. Any number of sweepers may run, on any nodes. Each attempt taken
 * back gets its event (`task.retrying` or `task.dropped`, exit `crashed` or `lease_expired`) in the
 * sweep's transaction, and frees its slot of the agent's concurrency as it commits (limits.ts).
 */
import type pg from 'pg';
import type { WireError } from '../../../actors/wire.js';
import { coerceError } from '../../errors.js';
import { deadNodes } from './nodes.js';
import { decideEnd, runningOf, RUNNING_COLUMNS, writeEnds, type EndWrite, type RunningRow } from './settle.js';
import { storeFailed, transaction } from './transaction.js';

/** One attempt a sweep took back. */
export interface Reclaimed {
  taskId: string;
  /** The attempt's token (now stale) and id, and the node that ran it. */
  token: number;
  attemptId: string;
  node: string;
  exit: 'crashed' | 'lease_expired';
  /** `queued` (retried) or `dropped` (its budget was spent). */
  state: 'queued' | 'dropped';
}

/** What a sweep did. */
export interface SweepResult {
  reclaimed: Reclaimed[];
  /** Dead nodes removed from `troupe_nodes` (those with no running attempt left). */
  removedNodes: string[];
}

/**
 * In one transaction: ends the running attempts of the nodes `dead` (ids {@link deadNodes} found
 * dead) as `crashed`, and those of any node whose lease ran out as `lease_expired`, requeueing or
 * dropping each task per its budget; then removes the dead nodes that have no running attempt left.
 */
export async function reclaim(pool: pg.Pool, dead: readonly string[]): Promise<SweepResult> {
  return transaction(pool, 'reclaiming attempts', async (client) => {
    if (dead.length > 0) {
      // Waits for claims of these nodes still in flight (each holds its node's row until it
      // commits): their tasks are then visible below, and any later claim finds no node and fails.
      await client.query('SELECT id FROM troupe_nodes WHERE id::text = ANY($1::text[]) ORDER BY lock FOR UPDATE', [dead]);
    }
    const { rows } = await client.query<RunningRow & { dead: boolean }>(
      `SELECT ${RUNNING_COLUMNS}, owner_node = ANY($1::text[]) AS dead FROM troupe_tasks
        WHERE state = 'running' AND (owner_node = ANY($1::text[]) OR lease_until < now())
        ORDER BY id FOR UPDATE SKIP LOCKED`,
      [dead],
    );
    const writes = rows.map((row): EndWrite & { exit: Reclaimed['exit'] } => {
      const task = runningOf(row);
      const exit = row.dead ? 'crashed' : 'lease_expired';
      const error: WireError =
        exit === 'crashed'
          ? { code: 'PROCESS_CRASHED', message: `node ${task.ownerNode} died during the attempt`, retryable: true, fault: 'infrastructure' }
          : { code: 'LEASE_EXPIRED', message: `the attempt's lease ran out on node ${task.ownerNode}`, retryable: true, fault: 'infrastructure' };
      return { task, exit, decision: decideEnd(exit, error, task.attempts, task.maxAttempts), attemptError: error };
    });
    const ended = await writeEnds(client, writes);
    const reclaimed: Reclaimed[] = [];
    for (const { task, exit } of writes) {
      const state = ended.get(task.id);
      if (state === 'queued' || state === 'dropped') reclaimed.push({ taskId: task.id, token: task.token, attemptId: task.attemptId, node: task.ownerNode, exit, state });
    }
    await detachWaiting(client, dead);
    let removedNodes: string[] = [];
    if (dead.length > 0) {
      // A dead node with an attempt left running (its row was held by another transaction) stays,
      // so the next sweep finds it dead again and takes that attempt back.
      const removed = await client.query<{ id: string }>(
        `DELETE FROM troupe_nodes n WHERE n.id::text = ANY($1::text[])
            AND NOT EXISTS (SELECT 1 FROM troupe_tasks t WHERE t.state = 'running' AND t.owner_node = n.id::text)
            AND NOT EXISTS (SELECT 1 FROM troupe_tasks t WHERE t.state = 'waiting' AND t.owner_node = n.id::text)
         RETURNING n.id::text AS id`,
        [dead],
      );
      removedNodes = removed.rows.map((r) => r.id);
    }
    return { reclaimed, removedNodes };
  });
}

/**
 * Waiting tasks (an agent parked on an input, schema version 13) whose node is among `dead`, or
 * whose lease ran out, keep waiting with no attempt: the attempt ends interrupted, not counted,
 * with `task.waiting` (`detached`, reason `process_crashed` or `lease_expired`), and a task with an
 * input pending resumes at once with a new run (input-ends.ts), as the LMDB runtime does at open
 * for a waiting task whose process died. Rows another transaction holds are skipped.
 */
async function detachWaiting(client: pg.PoolClient, dead: readonly string[]): Promise<void> {
  const { rows } = await client.query<RunningRow & { dead: boolean }>(
    `SELECT ${RUNNING_COLUMNS}, owner_node = ANY($1::text[]) AS dead FROM troupe_tasks
      WHERE state = 'waiting' AND owner_node IS NOT NULL AND ${dead.length > 0 ? '(owner_node = ANY($1::text[]) OR lease_until < now())' : 'lease_until < now()'}
      ORDER BY id FOR UPDATE SKIP LOCKED`,
    [dead],
  );
  if (rows.length === 0) return;
  const writes = rows.map((row): EndWrite => {
    const task = runningOf(row);
    return { task, exit: 'interrupted', decision: decideEnd('interrupted', undefined, task.attempts, task.maxAttempts), reason: row.dead ? 'process_crashed' : 'lease_expired' };
  });
  await writeEnds(client, writes, true);
}

/** What a sweep that found nothing to do did. */
const NOTHING: SweepResult = Object.freeze({ reclaimed: [], removedNodes: [] }) as SweepResult;

/**
 * One sweep: finds the dead nodes, then {@link reclaim}s. When no node is dead it reclaims only
 * when a look finds a lease that ran out, and `leases: false` skips that look too: it reads every
 * running and waiting row (there is no index by lease, which every claim would pay for), so the
 * loop does it less often.
 */
export async function sweep(pool: pg.Pool, leases = true): Promise<SweepResult> {
  let dead: string[];
  try {
    dead = await deadNodes(pool);
  } catch (error) {
    throw storeFailed('looking for dead nodes', error);
  }
  if (dead.length === 0 && (!leases || !(await leasesRanOut(pool)))) return NOTHING;
  return reclaim(pool, dead);
}

/**
 * Whether any running or waiting attempt's lease ran out: a look through the partial indexes of
 * running and waiting tasks, with no lock and no transaction, before a sweep that found no dead
 * node opens one. The reclaim's transaction is four round trips, each node opened one every
 * second, and it almost always found nothing.
 */
async function leasesRanOut(pool: pg.Pool): Promise<boolean> {
  try {
    const { rows } = await pool.query<{ any: boolean }>({ name: 'troupe-leases-ran-out', text: LEASES_RAN_OUT });
    return rows[0]!.any;
  } catch (error) {
    throw storeFailed('looking for expired leases', error);
  }
}

const LEASES_RAN_OUT = `SELECT EXISTS (SELECT 1 FROM troupe_tasks WHERE state = 'running' AND lease_until < now())
    OR EXISTS (SELECT 1 FROM troupe_tasks WHERE state = 'waiting' AND owner_node IS NOT NULL AND lease_until < now()) AS any`;

/** Options of {@link runSweeper}. */
export interface SweeperOptions {
  /** Stops the loop (after the sweep under way, if any). */
  signal: AbortSignal;
  /** Time between the end of one sweep and the start of the next. @default 150 */
  intervalMs?: number | undefined;
  /**
   * Least time between two looks for expired leases (a sweep that finds no dead node looks only
   * once this much has passed since the last look). @default intervalMs: every sweep
   */
  leaseCheckMs?: number | undefined;
  /** The clock of the lease looks' spacing (ms; leases run out on the database's clock, so a real one). @default performance.now */
  now?: (() => number) | undefined;
  /** Called after each sweep that took attempts back or removed nodes, once it committed. */
  onSweep?: ((result: SweepResult) => void) | undefined;
  /** Called when a sweep fails (the server or the connection failed); the loop goes on. */
  onError: (error: Error) => void;
}

/**
 * Sweeps every `intervalMs` until `signal` aborts: a dead node's attempts come back within about
 * one interval of its death, with no LISTEN needed; expired leases are looked for every
 * `leaseCheckMs` (and by every sweep that found a dead node). Resolves once stopped.
 */
export async function runSweeper(pool: pg.Pool, options: SweeperOptions): Promise<void> {
  const { signal, onSweep, onError } = options;
  const intervalMs = options.intervalMs ?? 150;
  const leaseCheckMs = options.leaseCheckMs ?? intervalMs;
  const now = options.now ?? (() => performance.now());
  let lastLook = Number.NEGATIVE_INFINITY;
  while (!signal.aborted) {
    try {
      const at = now();
      const leases = at - lastLook >= leaseCheckMs;
      const result = await sweep(pool, leases);
      if (leases || result !== NOTHING) lastLook = at;
      if (result.reclaimed.length > 0 || result.removedNodes.length > 0) onSweep?.(result);
    } catch (error) {
      onError(coerceError(error));
    }
    await pause(intervalMs, signal);
  }
}

/**
 * How often a node's sweeper looks for expired leases: a tenth of a lease, at most every second
 * and at least every sweep. A lease runs out only after its node went quiet for a whole `leaseMs`,
 * so a second more costs little; each look reads every running and waiting row.
 */
export function leaseCheckMsOf(sweepMs: number, leaseMs: number): number {
  return Math.max(sweepMs, Math.min(1_000, Math.floor(leaseMs / 10)));
}

/**
 * Resolves after `ms`, or at once when `signal` aborts. Its timer does not hold the process: what
 * runs the sweeper does (a node's membership connection, or a runtime's KeepAlive).
 */
function pause(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms).unref();
    signal.addEventListener('abort', done, { once: true });
  });
}
