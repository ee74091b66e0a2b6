/**
 * `rt.kill(reason)` on PostgreSQL, as the LMDB runtime's (src/controls.ts): freezes the whole
 * cluster durably, aborts every running attempt on every node (they end interrupted, and their
 * tasks are requeued without spending their attempt budget, with `task.queued` `{ reason:
 * 'killed' }`), and resolves once no attempt runs anywhere. `unfreeze()` resumes.
 *
 * The kill commits with its `runtime.frozen { killed: true }` and a NOTIFY that wakes every node
 * (src/store/postgres/control.ts killCluster); each node stops what it holds once it reads the
 * control row killed (node-kill.ts), and this runtime's own node is told at once. The running
 * attempts read after the commit are all there is to wait for: nothing is claimed while frozen.
 * The wait follows the cluster's event log (feed.ts), subscribed from before the kill commits, so
 * no attempt's end is missed: each end, whether its node settles it or a sweep takes a dead node's
 * attempt back, commits an event naming the attempt. No wait polls.
 */
import type pg from 'pg';
import type { EventType } from '../api/events.js';
import { TroupeError } from '../errors.js';
import { killCluster, runningAttempts } from '../store/postgres/control.js';
import { pgText } from '../store/postgres/checks.js';
import type { EventFeed } from './feed.js';
import type { ClusterNodeHandle } from './node.js';

/** The events with which a running task's attempt ends (settled, retried, requeued). */
const ENDS: ReadonlySet<EventType> = new Set<EventType>(['task.done', 'task.failed', 'task.dropped', 'task.cancelled', 'task.retrying', 'task.queued']);

/** What a kill needs from its runtime. */
export interface KillDeps {
  pool: pg.Pool;
  feed: Pick<EventFeed, 'need' | 'subscribe'>;
  /** This runtime's node, told at once (it would hear the NOTIFY too). */
  node(): Pick<ClusterNodeHandle, 'killRequested'> | undefined;
  /** Reads the cluster's freeze flag again (stats()). */
  controlChanged(): Promise<void>;
  /** Holds the process alive while the kill waits; returns the release. */
  hold(): () => void;
  /** Aborts as the runtime closes: a kill still waiting rejects with CLOSED. */
  closing: AbortSignal;
}

/** See the module comment. INVALID_INPUT, with nothing written, for a reason that is not a string. */
export async function killEverywhere(deps: KillDeps, reason?: string): Promise<void> {
  if (reason !== undefined) pgText(reason, 'kill: reason');
  const release = deps.hold();
  const unneed = deps.feed.need();
  // Attempts whose end the log told of (before the running ones are known), and those still waited for.
  const ended = new Set<string>();
  let pending: Set<string> | undefined;
  let wake: (() => void) | undefined;
  const unsubscribe = deps.feed.subscribe((events) => {
    for (const event of events) {
      if (event.attemptId === undefined || !ENDS.has(event.type)) continue;
      if (pending) pending.delete(event.attemptId);
      else ended.add(event.attemptId);
    }
    if (pending?.size === 0) wake?.();
  }, () => void recount());
  /** After a gap in the feed (feed.ts #overtaken), ends may have gone unread: the attempts still running say which. */
  const recount = async () => {
    if (!pending) return;
    const running = new Set(await runningAttempts(deps.pool).catch(() => [...pending!]));
    for (const attemptId of pending) if (!running.has(attemptId)) pending.delete(attemptId);
    if (pending.size === 0) wake?.();
  };
  let onClose: (() => void) | undefined;
  try {
    await killCluster(deps.pool, reason ?? 'killed');
    deps.node()?.killRequested();
    await deps.controlChanged();
    const running = await runningAttempts(deps.pool);
    pending = new Set(running.filter((attemptId) => !ended.has(attemptId)));
    if (pending.size === 0) return;
    await new Promise<void>((resolve, reject) => {
      wake = resolve;
      onClose = () => reject(new TroupeError('CLOSED', 'the runtime closed before the killed attempts ended'));
      if (deps.closing.aborted) onClose();
      else deps.closing.addEventListener('abort', onClose, { once: true });
    });
  } finally {
    if (onClose) deps.closing.removeEventListener('abort', onClose);
    unsubscribe();
    unneed();
    release();
  }
}
