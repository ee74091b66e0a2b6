/**
 * Prune: a settled task is removed with every record it left: its record, runs, attempts, log
 * lines, inputs and the idempotency keys that point at it, and the workspace Troupe made for it
 * and kept. The caller finds the keys (reads) and the task's eligibility (its age, its children);
 * the step checks that it is settled and decides the removals, all in one batch, so a crash
 * leaves the task whole or gone. Its events stay in the event log.
 */
import { isTerminal } from '../../machines/index.js';
import type { Key } from '../store/port.js';
import type { TaskRecord } from '../store/records.js';
import { TroupeError } from '../errors.js';
import { nothing, type PrunedDatabase, type StepContext, type StepResult } from './types.js';

/** What prune reads: the task and the keys of its records, as stored now. */
export interface PruneView {
  task: TaskRecord;
  runs: ReadonlyArray<[string, number]>;
  attempts: ReadonlyArray<[string, number, number]>;
  logs: ReadonlyArray<[string, number, number, number]>;
  /** Its inbox items: key seq, and the idempotency key each was sent with. */
  inbox: ReadonlyArray<{ seq: number; idempotencyKey?: string }>;
}

/** Decides the removal of a settled task. Throws ILLEGAL_TRANSITION for one that is not settled. */
export function decidePrune(view: PruneView, _input: undefined, _ctx: StepContext): StepResult {
  const { task } = view;
  if (!isTerminal(task.state)) throw new TroupeError('ILLEGAL_TRANSITION', `task ${task.id} is ${task.state}; only a settled task is pruned`);
  const out = nothing();
  const remove = (db: PrunedDatabase, key: Key) => out.changes.push({ kind: 'remove', db, key });
  remove('tasks', task.id);
  for (const key of view.runs) remove('runs', key);
  for (const key of view.attempts) remove('attempts', key);
  for (const key of view.logs) remove('logs', key);
  for (const item of view.inbox) {
    remove('inbox', [task.id, item.seq]);
    if (item.idempotencyKey !== undefined) remove('idempotency', `input:${task.id}:${item.idempotencyKey}`);
  }
  if (task.idempotencyKey !== undefined) remove('idempotency', task.idempotencyKey);
  if (task.parentId !== undefined) remove('children', [task.parentId, task.id]);
  // Its index entries go in this commit too (not when the removal of its record reaches the
  // database, batches later): the next pass of a sweep must not find it again.
  out.changes.push({ kind: 'unindex', task });
  // A workspace Troupe made and the keep policy kept at the settle goes with the task.
  if (task.workspace !== undefined && task.workspaceKeep !== undefined) out.effects.push({ kind: 'clean-workspace', taskId: task.id, workspace: task.workspace, run: task.runs });
  return out;
}
