/**
 * `rt.prune({ before, states })` on PostgreSQL, as the LMDB runtime's (src/tasks/prune.ts, README
 * "Pruning"): the tasks in `states` (default all four settled states) settled before `before`
 * (default now, on the database's clock, which settle times are on) go, each with its attempt rows,
 * log lines and inputs, in bounded batches (src/store/postgres/retention.ts pruneSettled: the retention
 * sweep's statement with an instant for a horizon). Their events stay in the log, and their
 * idempotency keys can be used again. Options are checked exactly as on LMDB, before anything is
 * removed; both have a meaning here.
 *
 * The result has LMDB's shape and counts the stored records removed: each attempt has a row of
 * its own on PostgreSQL (LMDB keeps a settled task's last attempt in its record), and there are no
 * run records, so `runs` is 0; `inputs` counts the inbox rows removed (troupe_inbox).
 */
import type pg from 'pg';
import type { SettledState } from '../tasks/retention-rules.js';
import { checkPruneOptions, type PruneOptions, type PruneResult } from '../tasks/prune.js';
import { pruneSettled } from '../store/postgres/retention.js';

/** See the module comment. INVALID_OPTIONS, with nothing removed, for bad options. */
export async function pruneCluster(pool: pg.Pool, options?: PruneOptions): Promise<PruneResult> {
  // `before` defaults to the database's now, not a node's: a placeholder here, undefined below.
  const { before, states } = checkPruneOptions(options, 0);
  const given = (options as PruneOptions | undefined)?.before !== undefined;
  const removed = await pruneSettled(pool, [...states] as SettledState[], given ? before : undefined);
  return { tasks: removed.tasks, runs: 0, attempts: removed.attempts, logLines: removed.logLines, inputs: removed.inputs };
}
