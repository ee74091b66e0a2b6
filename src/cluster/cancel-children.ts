/**
 * A cancel's cascade on PostgreSQL, as on LMDB (src/tasks/engine.ts): cancelling a parent cancels
 * its active children with the reason `parent cancelled: <reason>`, and theirs, each through the
 * runtime's own cancel. A child that settles meanwhile is left as it is.
 */
import type pg from 'pg';
import { activeChildren } from '../store/postgres/children.js';

/** Cancels the active children of `parentId` with `cancel` (see the module comment); resolves once each has settled. */
export async function cancelChildren(pool: Pick<pg.Pool, 'query'>, parentId: string, reason: string, cancel: (id: string, reason: string) => Promise<unknown>): Promise<void> {
  const children = await activeChildren(pool, parentId);
  await Promise.all(children.map((child) => cancel(child, `parent cancelled: ${reason}`).catch(() => undefined)));
}
