/**
 * Freeze and unfreeze for the whole cluster (issue #15), as `rt.freeze()` / `rt.unfreeze()` mean
 * them on one machine (src/controls.ts): while frozen no attempt starts anywhere, running attempts
 * carry on, and submits and schedules still go in. The flag is the one row of `troupe_control`,
 * written with its `runtime.frozen` / `runtime.unfrozen` event in one transaction.
 *
 * Every claim holds a shared transaction-level advisory lock on {@link CONTROL_LOCK} from before
 * it reads the flag until it commits; a freeze takes that lock exclusively. So a freeze waits for
 * the claims already past the flag, and once it has committed no claim that started before it can
 * still commit tasks: after `freezeCluster()` resolves, nothing starts. Shared advisory locks live
 * in the lock manager, so claims do not write to the control row to hold it.
 */
import type pg from 'pg';
import { TroupeError } from '../../errors.js';
import { appendEvents, eventOf } from './events.js';
import { transaction } from './transaction.js';

/** The advisory lock key of the cluster's controls: 'troupc' in ASCII (migrations hold 'troupe'). */
export const CONTROL_LOCK = 0x74726f757063;

/** The cluster's freeze flag. */
export interface ClusterControl {
  frozen: boolean;
  /** Why it was frozen (while frozen). */
  reason?: string;
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
  if (typeof reason !== 'string') throw new TroupeError('INVALID_INPUT', 'freeze: reason must be a string');
  return setFrozen(pool, true, reason);
}

/** Unfreezes the cluster, recording `runtime.unfrozen`. Returns false (and writes nothing) when it was not frozen. */
export async function unfreezeCluster(pool: pg.Pool): Promise<boolean> {
  return setFrozen(pool, false, undefined);
}

/** The cluster's flag as committed now. */
export async function clusterControl(pool: Pick<pg.Pool, 'query'>): Promise<ClusterControl> {
  const { rows } = await pool.query<{ frozen: boolean; reason: string | null; since: Date }>('SELECT frozen, reason, since FROM troupe_control WHERE id = 1');
  const row = rows[0]!;
  return row.reason === null ? { frozen: row.frozen, since: row.since.getTime() } : { frozen: row.frozen, reason: row.reason, since: row.since.getTime() };
}

async function setFrozen(pool: pg.Pool, frozen: boolean, reason: string | undefined): Promise<boolean> {
  return transaction(pool, frozen ? 'freezing the cluster' : 'unfreezing the cluster', async (client) => {
    await holdControlExclusive(client);
    const { rowCount } = await client.query('UPDATE troupe_control SET frozen = $1, reason = $2, since = now() WHERE id = 1 AND frozen <> $1', [frozen, reason ?? null]);
    if (rowCount === 0) return false;
    await appendEvents(client, [frozen ? eventOf('runtime.frozen', { reason: reason!, killed: false }) : eventOf('runtime.unfrozen', {})]);
    return true;
  });
}
