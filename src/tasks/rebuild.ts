/**
 * The rebuild on open: the active tasks are loaded into memory and the durable timers onto the
 * wheel, then what the dead process left unfinished is settled as steps through the pipeline, all
 * in the turn's one batch. An attempt that was running ends as `crashed` (counted against the retry
 * budget); a task that was waiting (input, join) keeps waiting with no live attempt, its attempt
 * not counted, and resumes with a new run when what it waits for is there; queued tasks go back to
 * the governor in priority and FIFO order.
 */
import { isTerminal } from '../../machines/index.js';
import type { TaskRecord } from '../store/records.js';
import { armedTimerOf } from '../steps/common.js';
import { decideSettle, lostAttemptOf } from '../steps/settle.js';
import { decideWake } from '../steps/wake.js';
import type { Interactions } from './interact.js';
import { entryOf, type EngineParts } from './parts.js';
import { decideSettlement, type Settlement } from './outcome.js';

/** What the rebuild on open reads and steps through: the slice of the engine's shared parts it reads. */
export type RebuildDeps = Pick<EngineParts, 'governor' | 'notifier' | 'options' | 'pipeline' | 'store' | 'table' | 'timers'>;

/** What a rebuild found. */
export interface RebuildCounts {
  /** Active tasks loaded. */
  active: number;
  /** Running tasks whose attempt died with the process. */
  crashed: number;
  /** Running tasks whose attempt the runtime itself stopped before it opened the store again (store recovery). */
  interrupted: number;
  /** Durable timers re-armed. */
  timers: number;
}

/** How a waiting task's attempt ends when the process died under it: detached, not counted. */
const DETACHED: Settlement = { exit: 'interrupted', event: 'REQUEUE', counts: false, reason: 'process_crashed' };

/**
 * How a running task's attempt ends when the runtime stopped it itself to open its store again
 * (after a failed commit): requeued, not counted, like an attempt a `close()` interrupts.
 */
const STORE_RECOVERY: Settlement = { exit: 'interrupted', event: 'REQUEUE', counts: false, reason: 'store_failed' };

/** Options of {@link rebuild}. */
export interface RebuildOptions {
  /**
   * The attempts the store shows running were stopped by this runtime before it opened the store
   * again (store recovery), not lost with a dead process: they are interrupted, not crashed.
   */
  interrupted?: boolean;
}

/** See the module comment. Resolves once every step it decided is durable. */
export async function rebuild(k: RebuildDeps, interactions: Pick<Interactions, 'rebuild'>, options: RebuildOptions = {}): Promise<RebuildCounts> {
  const { store, table, governor, timers, pipeline } = k;
  const loaded: TaskRecord[] = [];
  const orphans: string[] = [];
  for (const id of store.read.active.keys()) {
    const task = store.read.tasks.get(id);
    if (!task || isTerminal(task.state)) orphans.push(id);
    else loaded.push(task);
  }
  for (const task of loaded) table.add(task);
  let timerCount = 0;
  for (const { value } of store.read.timers.range()) {
    timers.add(value);
    timerCount++;
  }
  const durable: Array<Promise<unknown>> = [];
  if (orphans.length > 0) {
    durable.push(
      store.commit((w) => {
        for (const id of orphans) w.removeActive(id);
      }),
    );
  }
  const crashed = loaded.filter((t) => t.state === 'running');
  const waiting = loaded.filter((t) => t.state === 'waiting');
  for (const task of waiting) {
    // An attempt's record is written when it ends: none means it was live when the process died.
    const attempt = store.read.attempts.get([task.id, task.runs, task.attemptSeq]) ?? (task.attemptSeq > 0 ? lostAttemptOf(task, store.runtimeId) : undefined);
    if (attempt && attempt.exit === undefined) durable.push(pipeline.run(decideSettle, { task, attempt }, { settlement: DETACHED }));
  }
  // Those whose input or joined tasks are there already resume now, with a new run.
  durable.push(...interactions.rebuild(waiting.map((t) => t.id)));
  for (const task of crashed) {
    const attempt = store.read.attempts.get([task.id, task.runs, task.attemptSeq]) ?? lostAttemptOf(task, store.runtimeId);
    const settlement = options.interrupted
      ? STORE_RECOVERY
      : decideSettlement(task, task.attempts, { kind: 'crash', code: 'PROCESS_CRASHED', message: 'the process died during the attempt' }, undefined, k.options.random);
    durable.push(pipeline.run(decideSettle, { task, attempt }, { settlement }));
  }
  // Queued tasks no step touched above. One waiting for its delayed start or backoff stays out of
  // the governor until its timer fires; one whose timer is gone is runnable now.
  const queued = loaded.filter((t) => t.state === 'queued' && table.get(t.id) === t).sort((a, b) => a.queuedOrder - b.queuedOrder);
  for (const task of queued) {
    const timer = armedTimerOf(task);
    if (timer === undefined) {
      if (!governor.has(task.id)) governor.enqueue(entryOf(task));
    } else if (!timers.has(timer.id)) {
      durable.push(pipeline.run(decideWake, { task }, { timer }));
    }
  }
  k.notifier.work();
  await Promise.all(durable);
  return { active: loaded.length, crashed: options.interrupted ? 0 : crashed.length, interrupted: options.interrupted ? crashed.length : 0, timers: timerCount };
}
