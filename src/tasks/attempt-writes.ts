/**
 * Durable writes that a live attempt's fire-and-forget messages cause (log lines, progress), and
 * the `task.stale_result` record of a write from a fenced attempt. Progress goes through the
 * pipeline as its own step (steps/progress.ts); log lines and stale results touch no record.
 */
import type { WireLogLine } from '../../actors/wire.js';
import type { LogRecord, TaskRecord } from '../store/records.js';
import type { EngineParts } from './parts.js';
import { decideProgress } from '../steps/progress.js';

/** What an attempt's log and progress writes use: the slice of the engine's shared parts it reads. */
export type AttemptWriteDeps = Pick<EngineParts, 'clock' | 'log' | 'logs' | 'pipeline' | 'store'>;

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
