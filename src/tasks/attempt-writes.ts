/**
 * Durable writes that a live attempt causes: its settle once it ended, what its fire-and-forget
 * messages carry (log lines, progress), and the `task.stale_result` record of a write from a
 * fenced attempt. Settles and progress go through the pipeline as steps (steps/settle.ts,
 * steps/progress.ts); log lines and stale results touch no record.
 */
import type { WireLogLine } from '../../actors/wire.js';
import type { LogRecord, TaskRecord } from '../store/records.js';
import type { EngineParts } from './parts.js';
import { decideProgress } from '../steps/progress.js';
import { decideSettle } from '../steps/settle.js';
import type { Attempt } from './attempt.js';
import { decideSettlement, type AttemptOutcome } from './outcome.js';

/** What an attempt's log and progress writes use: the slice of the engine's shared parts it reads. */
export type AttemptWriteDeps = Pick<EngineParts, 'clock' | 'log' | 'logs' | 'pipeline' | 'store'>;

/** What an attempt's settle uses besides {@link AttemptWriteDeps}. */
export type SettleDeps = AttemptWriteDeps & Pick<EngineParts, 'flow' | 'options' | 'router'>;

/**
 * Settles the task of an attempt that ended and holds the task's current token: the settlement its
 * outcome and policy decide, told to its instance, counted by its agent's flow control, committed.
 */
export function writeSettlement(k: SettleDeps, task: TaskRecord, attempt: Attempt, outcome: AttemptOutcome): void {
  const settlement = decideSettlement(task, task.attempts, outcome, attempt.stop, k.options.random);
  const now = k.clock.now();
  attempt.tell(k.router, 'ended', now, settlement.exit);
  attempt.trace?.end(settlement.exit, settlement.error);
  const flow = k.flow.ended(task.agent, settlement.exit, now - attempt.record.startedAt, now, settlement.event === 'FAIL');
  const decided = k.pipeline.decide(decideSettle, { task, attempt: attempt.record }, flow === undefined ? { settlement } : { settlement, flow }, now);
  // The catch keeps the id, not the record: the record's old version would stay alive until the commit.
  const taskId = task.id;
  k.pipeline.apply(decided).catch((error: unknown) => {
    // A stopped store was logged once, when it stopped: not again for every attempt it refuses.
    if (error !== k.store.failure) k.log.error({ err: error, taskId }, 'committing a settlement failed');
  });
}

/** Stores an attempt's log lines from line number `firstLine`; returns the next line number. */
export function writeLogLines(k: AttemptWriteDeps, task: TaskRecord, attempt: { attemptId: string; run: number; attempt: number }, lines: readonly WireLogLine[], firstLine: number): number {
  let lineNo = firstLine;
  // Always collected: a follower that subscribes while this commit is in flight must get these
  // lines live, since its replay ran before they landed.
  const followed: Array<{ key: [string, number, number, number]; record: LogRecord }> = [];
  k.store
    .commit((w) => {
      for (const [level, text, at, fields] of lines) {
        const line: LogRecord = fields === undefined ? { level, message: text, at, attemptId: attempt.attemptId } : { level, message: text, at, attemptId: attempt.attemptId, fields };
        const key: [string, number, number, number] = [task.id, attempt.run, attempt.attempt, lineNo++];
        w.putLog(key, line);
        followed.push({ key, record: line });
      }
    })
    .then(
      () => k.logs.publish(task.id, followed),
      (error: unknown) => k.log.error({ err: error }, 'writing log lines failed'),
    );
  if (k.log.isLevelEnabled('debug')) {
    for (const [level, text] of lines) k.log.debug({ taskId: task.id, attemptId: attempt.attemptId, agentLevel: level }, text);
  }
  return lineNo;
}

/** Stores an attempt's progress on its task, with a `task.progress` event (the progress step). */
export function writeProgress(k: AttemptWriteDeps, task: TaskRecord, attemptId: string, value: number, message: string | undefined, at: number): void {
  k.pipeline.run(decideProgress, { task }, { attemptId, value, message, at }).catch((error: unknown) => k.log.error({ err: error }, 'recording progress failed'));
}

/** Records that a fenced attempt tried to write (`kind`: result, log or progress); the task is untouched. */
export function recordStale(k: AttemptWriteDeps, taskId: string, attemptId: string, kind: string): void {
  const at = k.clock.now();
  k.store
    .commit((w) => void w.event('task.stale_result', { at, taskId, attemptId, data: { kind } }))
    .catch((error: unknown) => k.log.error({ err: error }, 'recording a stale result failed'));
}
