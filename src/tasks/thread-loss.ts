/**
 * What a thread's death does to the attempts it took down. One it had not begun never ran; one
 * running beside an attempt known to have ended the thread (it said so as it exited) did nothing
 * wrong: both are requeued without spending their budget. The rest, the culprit among them, end
 * as crashed.
 */
import type { Logger } from '../log.js';
import type { AgentPool } from '../pool/pool.js';
import type { Attempt } from './attempt.js';
import type { AttemptOutcome } from './outcome.js';

/** What {@link threadLosses} reads and sets of an attempt: the dispatcher's and a cluster node's (src/cluster/) both have it. */
export type LostAttempt = Pick<Attempt, 'attemptId' | 'phase' | 'endedThread' | 'stop'>;

/** How each lost attempt ends; bystanders get their `stop` set first, so they are requeued. */
export function threadLosses<A extends LostAttempt>(lost: readonly A[], reason: string): Array<[A, AttemptOutcome]> {
  const culprit = lost.find((attempt) => attempt.endedThread !== undefined);
  return lost.map((attempt) => {
    if (attempt.phase === 'dispatched') attempt.stop ??= { reason: 'shutdown', detail: 'its thread died before it ran' };
    else if (culprit !== undefined && attempt !== culprit) attempt.stop ??= { reason: 'shutdown', detail: `attempt ${culprit.attemptId} ended its thread` };
    const how = attempt.endedThread === undefined ? reason : `the agent ended its thread (process.exit(${attempt.endedThread}))`;
    return [attempt, { kind: 'crash', code: 'THREAD_CRASHED', message: `${how} (attempt ${attempt.attemptId})` }];
  });
}

/**
 * After an attempt was asked to stop and did not: once its abort has been answered, terminates the
 * thread it runs on (the one the abort found it in, else every thread that did not answer).
 * Terminate first, then free the slot: a slot freed earlier could send the next attempt to the
 * doomed thread, and kill it too. Returns false, terminating nothing, when the attempt ended
 * meanwhile; the caller then ends it as abandoned.
 */
export async function terminateUnstopped(attempt: Pick<Attempt, 'attemptId' | 'phase' | 'stop' | 'abortAnswer'>, pool: Pick<AgentPool, 'terminate'>, log: Logger): Promise<boolean> {
  if (attempt.phase === 'ended') return false;
  const answer = await attempt.abortAnswer;
  if ((attempt.phase as Attempt['phase']) === 'ended') return false;
  const threads = answer?.foundIn !== undefined ? [answer.foundIn] : (answer?.unresponsive ?? []);
  log.warn({ attemptId: attempt.attemptId, threads, reason: attempt.stop?.reason }, 'attempt did not stop; terminating its thread');
  await pool.terminate(threads).catch((error: unknown) => log.error({ err: error }, 'terminating a thread failed'));
  return true;
}
