/**
 * Which runtimes sharing a database are alive (issue #15). A node joins by adding its row to
 * `troupe_nodes` and taking a session advisory lock on its number, on a connection of its own that
 * it keeps open for as long as it runs. PostgreSQL lets the lock go the moment that session ends:
 * the process exits or is killed (the kernel closes its socket), or its connection breaks. So a
 * node whose lock another session can take is dead, within milliseconds of its death, and its
 * attempts can be reclaimed (graphile-worker holds a crashed worker's jobs for hours: it waits for
 * a lock timeout instead). A node that loses its own connection is told, so it stops its attempts
 * rather than run on after its lock went.
 */
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import pg from 'pg';
import { TroupeError } from '../../errors.js';
import { JOIN_CHANNEL } from './children.js';
import { INPUT_CHANNEL } from './inbox.js';
import { unrefClient } from './unref-client.js';

/** The first key of every node's advisory lock (two-key locks are apart from migrations' one-key lock). */
export const NODE_LOCK_CLASS = 0x74726f75;

/** A node that has joined: its id, and how it leaves. */
export interface ClusterNode {
  readonly id: string;
  /** The number its advisory lock is taken on. */
  readonly lock: number;
  /** Leaves on purpose: its row goes and its lock with it. */
  leave(): Promise<void>;
}

/** The channel rt.cancel() notifies with a task's id when it asks a running attempt to stop (tasks.ts). */
export const CANCEL_CHANNEL = 'troupe_cancel';

/**
 * Joins the cluster at `connectionString` (a schema migrated to at least version 1). `onLost` is
 * called once if the node's own connection breaks: from then on, another node may take its work.
 * With `onCancel`, that connection also listens on {@link CANCEL_CHANNEL} and hands it each task
 * id a cancel names (whichever node's attempt it is: the node checks). With `keepsProcessAlive:
 * false` the connection does not hold the process (what runs the node does: a runtime's KeepAlive).
 * With `onInput`, it listens on {@link INPUT_CHANNEL} too, for inputs delivered to parked agents;
 * with `onJoin`, on {@link JOIN_CHANNEL}, for children that settled (children.ts).
 */
export async function joinCluster(
  connectionString: string,
  onLost: (error: Error) => void,
  onCancel?: (taskId: string) => void,
  { keepsProcessAlive = true, onInput, onJoin }: { keepsProcessAlive?: boolean; onInput?: (taskId: string) => void; onJoin?: (parentId: string) => void } = {},
): Promise<ClusterNode> {
  const client = new pg.Client({ connectionString, application_name: 'troupe-node', keepAlive: true });
  const id = randomUUID();
  let leaving = false;
  let lost = false;
  const lose = (error: Error) => {
    if (leaving || lost) return;
    lost = true;
    onLost(error);
  };
  client.on('error', lose);
  client.on('end', () => lose(new TroupeError('STORE_FAILED', 'the connection that holds this node alive ended')));
  await client.connect();
  if (!keepsProcessAlive) unrefClient(client);
  try {
    // The row commits with its lock already held (a session lock outlives the transaction), so no
    // one ever sees a joining node's row without its lock and takes it for dead.
    await client.query('BEGIN');
    const { rows } = await client.query<{ lock: string }>('INSERT INTO troupe_nodes (id, host, pid) VALUES ($1, $2, $3) RETURNING lock', [id, hostname(), process.pid]);
    const lock = Number(rows[0]!.lock);
    await client.query('SELECT pg_advisory_lock($1, $2)', [NODE_LOCK_CLASS, lock]);
    await client.query('COMMIT');
    if (onCancel) {
      client.on('notification', (message) => {
        if (message.channel === CANCEL_CHANNEL && message.payload) onCancel(message.payload);
        else if (message.channel === INPUT_CHANNEL && message.payload) onInput?.(message.payload);
        else if (message.channel === JOIN_CHANNEL && message.payload) onJoin?.(message.payload);
      });
      await client.query([CANCEL_CHANNEL, ...(onInput ? [INPUT_CHANNEL] : []), ...(onJoin ? [JOIN_CHANNEL] : [])].map((channel) => `LISTEN ${channel}`).join('; '));
    }
    return {
      id,
      lock,
      async leave() {
        if (leaving) return;
        leaving = true;
        try {
          if (!lost) await client.query('DELETE FROM troupe_nodes WHERE id = $1', [id]);
        } finally {
          await client.end().catch(() => undefined);
        }
      },
    };
  } catch (error) {
    leaving = true;
    await client.end().catch(() => undefined);
    throw error;
  }
}

/**
 * The nodes whose lock nobody holds: dead ones. Each lock is tried and let go at once on one
 * session, so two sweepers may both find a node dead; reclaiming its attempts must be fenced.
 * One statement, whatever the number of nodes: every node sweeps several times a second, and a
 * round trip per node made the sweeps of n nodes n² statements (each of three idle runtimes sent
 * 20 a second of them, 29% of the statements it sent). Each lock it takes is let go in the same
 * statement; should the statement fail part-way, the pool discards its connection, and the end of
 * that session lets go of whatever it still held.
 */
export async function deadNodes(pool: pg.Pool): Promise<string[]> {
  const { rows } = await pool.query<{ id: string }>({ name: 'troupe-dead-nodes', text: DEAD_NODES, values: [NODE_LOCK_CLASS] });
  return rows.map((r) => r.id);
}

const DEAD_NODES = `WITH taken AS MATERIALIZED (
    SELECT id::text AS id, lock FROM troupe_nodes WHERE pg_try_advisory_lock($1::int, lock::int)
  )
  SELECT id FROM taken WHERE pg_advisory_unlock($1::int, lock::int) ORDER BY lock`;
