/**
 * The shared state of the task engine: what the dispatcher, the submit path and the controls all
 * read and change. Kept in one place so each of those modules stays a small set of functions.
 */
import { renameSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import type { Logger } from '../log.js';
import type { Clock } from '../clock.js';
import type { Store, StepWriter } from '../store/port.js';
import type { EventRecord, TaskRecord, TimerRecord } from '../store/records.js';
import type { Governor, GovernorEntry } from '../governor/governor.js';
import type { Router } from '../router/router.js';
import type { AgentPool } from '../pool/pool.js';
import type { Pipeline } from '../pipeline/pipeline.js';
import type { AgentRegistry } from '../agents/registry.js';
import type { TimerWheel } from '../timers/timer-wheel.js';
import type { ResolvedOptions } from '../options.js';
import { nextTaskState, type TaskEventType, type TaskState } from '../../machines/index.js';
import { TroupeError } from '../errors.js';
import type { TaskTable } from './task-table.js';
import type { FlowControl } from '../governor/flow.js';
import type { LogFeed } from '../events/logs.js';

/** Everything the engine's modules share. */
export interface Kernel {
  readonly options: ResolvedOptions;
  readonly store: Store;
  readonly clock: Clock;
  readonly log: Logger;
  readonly governor: Governor;
  readonly router: Router;
  readonly pool: AgentPool;
  readonly agents: AgentRegistry;
  readonly timers: TimerWheel;
  readonly table: TaskTable;
  /** Per-agent rate, daily budget and backoff. */
  readonly flow: FlowControl;
  /** Live log lines for `rt.logs(id, { follow: true })`. */
  readonly logs: LogFeed;
  /** Where steps are decided, applied and committed. */
  readonly pipeline: Pipeline;
  /** Asks the dispatcher to fill free slots (coalesced). */
  pump(): void;
  /** Tells the supervisor an attempt is executing, so it keeps sweeping leases. */
  supervise(): void;
}

/**
 * Applies a task machine event to a record in memory, or throws ILLEGAL_TRANSITION. The caller
 * writes the record in the same step as the event that describes the change.
 */
export function transition(task: TaskRecord, event: TaskEventType, now: number): TaskState {
  const next = nextTaskState(task.state, event);
  if (next === undefined) {
    throw new TroupeError('ILLEGAL_TRANSITION', `task ${task.id} is ${task.state}; ${event} is not allowed from there`);
  }
  task.state = next;
  task.updatedAt = now;
  return next;
}

/** The governor entry of a queued task. */
export function entryOf(task: TaskRecord): GovernorEntry {
  const { model } = task.labels;
  const base = { taskId: task.id, instanceKey: task.instanceKey, agent: task.agent, priority: task.priority, order: task.queuedOrder };
  return model === undefined ? base : { ...base, model };
}

/** Starts a new run of a task: the next run number, why, when, and a fresh attempt budget. */
export function beginRun(task: TaskRecord, reason: TaskRecord['runReason'], now: number): void {
  task.runs++;
  task.runReason = reason;
  task.runCreatedAt = now;
  task.attempts = 0;
  task.attemptSeq = 0;
}

/** Writes a task's queued state: record, FIFO order from the event, and the event itself. */
export function writeQueued(w: StepWriter, task: TaskRecord, data: Record<string, unknown>, at: number): EventRecord {
  const event = w.event('task.queued', { at, taskId: task.id, data });
  markQueued(task, event.seq, at);
  w.putTask(task);
  return event;
}

/** Stamps a task entering `queued`: its FIFO order, when, and a fresh starvation ladder. */
export function markQueued(task: TaskRecord, order: number, at: number): void {
  task.queuedOrder = order;
  task.queuedAt = at;
  if (task.ladder !== undefined) delete task.ladder;
}

/**
 * Removes a workspace Troupe created for a task that has settled, per its `keep` policy. Runs after
 * the settling commit; a failure is logged, never thrown (the task's outcome stands).
 */
export function cleanWorkspace(k: Kernel, task: TaskRecord): void {
  const keep = task.workspaceKeep;
  if (keep === undefined || keep === 'always' || task.workspace === undefined) return;
  if (keep === 'on_failure' && task.state !== 'done') return;
  cleanWorkspaceAt(k.log, task.id, task.workspace, task.runs);
}

/** Removes a task's workspace directory (the keep policy already said so). */
export function cleanWorkspaceAt(log: Logger, taskId: string, workspace: string, run: number): void {
  // Move it aside first, synchronously: a retry that recreates the path at once must not have its
  // fresh directory deleted by this removal still running.
  const doomed = `${workspace}.removing-${run}-${Date.now()}`;
  try {
    renameSync(workspace, doomed);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') log.warn({ err: error, taskId, workspace }, 'removing a task workspace failed');
    return;
  }
  void rm(doomed, { recursive: true, force: true }).catch((error: unknown) => log.warn({ err: error, taskId, workspace: doomed }, 'removing a task workspace failed'));
}

/** The control key of an agent's flow state. */
export function flowKeyOf(agent: string): string {
  return `agent:${agent}`;
}

/** The id of a retry/wake timer of a task run. */
export function timerIdOf(task: Pick<TaskRecord, 'id' | 'runs'>, kind: TimerRecord['kind']): string {
  return `${kind}:${task.id}:${task.runs}`;
}
