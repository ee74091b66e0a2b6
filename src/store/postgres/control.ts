/**
 * Freeze, kill and unfreeze for the whole cluster (issue #15), as `rt.freeze()`, `rt.kill()` and
 * `rt.unfreeze()` mean them on one machine (src/controls.ts): while frozen no attempt starts
 * anywhere, running attempts carry on (but for a kill's), and submits and schedules still go in.
 * The flag is the one row of `troupe_control`, written with its `runtime.frozen` /
 * `runtime.unfrozen` event in one transaction.
 *
 * A kill is a freeze that says so (`killed`, schema version 14) and, in the same transaction,
 * `NOTIFY troupe_cancel` with {@link KILL_PAYLOAD}. The NOTIFY only wakes the nodes: each one
 * stops the attempts it holds once it reads the row frozen by a kill (src/cluster/node-kill.ts),
 * at the NOTIFY or at its next lease renewal, should it miss the NOTIFY. Every attempt a node
 * holds then was claimed before the kill, since a frozen cluster claims nothing.
 *
 * Every claim holds a shared transaction-level advisory lock on {@link CONTROL_LOCK} from before
 * it reads the flag until it commits; a freeze takes that lock exclusively. So a freeze waits for
 * the claims already past the flag, and once it has committed no claim that started before it can
 * still commit tasks: after `freezeCluster()` resolves, nothing starts. Shared advisory locks live
 * in the lock manager, so claims do not write to the control row to hold it.
 */
import type pg from 'pg';
import { appendEvents, eventOf } from './events.js';
import { CANCEL_CHANNEL } from './nodes.js';
import { storeFailed, transaction } from './transaction.js';
import { pgText } from './checks.js';

/** The advisory lock key of the cluster's controls: 'troupc' in ASCII (migrations hold 'troupe'). */
export const CONTROL_LOCK = 0x74726f757063;

/** The payload of a kill's NOTIFY on {@link CANCEL_CHANNEL} (a cancel's is a task id, which is never `*`). */
export const KILL_PAYLOAD = '*';

/** The cluster's freeze flag. */
export interface ClusterControl {
  frozen: boolean;
  /** Why it was frozen (while frozen). */
  reason?: string;
  /** Whether rt.kill() froze it (while frozen): every node stops its attempts. */
  killed: boolean;
  /** When it last changed, on the database's clock (epoch ms). */
  since: number;
}

/**
 * A claim's transaction opening: BEGIN, then the controls held shared (with other claims;
 * exclusive against a freeze or a change of an agent's limits) in a statement of its own, before
 * the statements that read what it protects: under READ COMMITTED a statement reads a snapshot
 * taken when it began, before any wait inside it. Both go in one round trip.
 */
export const BEGIN_HOLDING_CONTROLS = `BEGIN; SELECT pg_advisory_xact_lock_shared(${CONTROL_LOCK})`;

/** Holds the controls exclusively for the caller's transaction: claims in flight commit first. */
export async function holdControlExclusive(client: Pick<pg.PoolClient, 'query'>): Promise<void> {
  await client.query('SELECT pg_advisory_xact_lock($1)', [CONTROL_LOCK]);
}

/**
 * Freezes the cluster: from when this resolves, no claim on any node returns a task until
 * {@link unfreezeCluster}. Records `runtime.frozen` in the same transaction. Returns false (and
 * writes nothing) when it was frozen already. INVALID_INPUT for a reason that is not a string.
 */
export async function freezeCluster(pool: pg.Pool, reason = 'frozen'): Promise<boolean> {
  return setFrozen(pool, true, pgText(reason, 'freeze: reason'));
}

/** Unfreezes the cluster, recording `runtime.unfrozen`. Returns false (and writes nothing) when it was not frozen. */
export async function unfreezeCluster(pool: pg.Pool): Promise<boolean> {
  return setFrozen(pool, false, undefined);
}

/**
 * Kills the cluster: freezes it as {@link freezeCluster} does (waiting for the claims in flight),
 * marked `killed`, with `runtime.frozen` `{ reason, killed: true }` and the NOTIFY that wakes every
 * node to stop its attempts, in one transaction. Written even when the cluster was frozen already,
 * as the LMDB runtime's kill is (a freeze's attempts now stop too). INVALID_INPUT for a reason that
 * is not a string.
 */
export async function killCluster(pool: pg.Pool, reason = 'killed'): Promise<void> {
  pgText(reason, 'kill: reason');
  await transaction(pool, 'killing the cluster', async (client) => {
    await holdControlExclusive(client);
    await client.query('UPDATE troupe_control SET frozen = true, killed = true, reason = $1, since = now() WHERE id = 1', [reason]);
    await appendEvents(client, [eventOf('runtime.frozen', { reason, killed: true })]);
    await client.query(`NOTIFY ${CANCEL_CHANNEL}, '${KILL_PAYLOAD}'`);
  });
}

/** The attempt ids of the tasks running now on any node (from the partial index of running tasks). */
export async function runningAttempts(pool: Pick<pg.Pool, 'query'>): Promise<string[]> {
  try {
    const { rows } = await pool.query<{ attempt_id: string }>("SELECT attempt_id FROM troupe_tasks WHERE state = 'running'");
    return rows.map((row) => row.attempt_id);
  } catch (error) {
    throw storeFailed('reading the running attempts', error);
  }
}

/** The cluster's flag as committed now. */
export async function clusterControl(pool: Pick<pg.Pool, 'query'>): Promise<ClusterControl> {
  const { rows } = await pool.query<{ frozen: boolean; killed: boolean; reason: string | null; since: Date }>('SELECT frozen, killed, reason, since FROM troupe_control WHERE id = 1');
  const row = rows[0]!;
  const control: ClusterControl = { frozen: row.frozen, killed: row.frozen && row.killed, since: row.since.getTime() };
  if (row.reason !== null) control.reason = row.reason;
  return control;
}

async function setFrozen(pool: pg.Pool, frozen: boolean, reason: string | undefined): Promise<boolean> {
  return transaction(pool, frozen ? 'freezing the cluster' : 'unfreezing the cluster', async (client) => {
    await holdControlExclusive(client);
    const { rowCount } = await client.query('UPDATE troupe_control SET frozen = $1, killed = false, reason = $2, since = now() WHERE id = 1 AND frozen <> $1', [frozen, reason ?? null]);
    if (rowCount === 0) return false;
    await appendEvents(client, [frozen ? eventOf('runtime.frozen', { reason: reason!, killed: false }) : eventOf('runtime.unfrozen', {})]);
    return true;
  });
}
