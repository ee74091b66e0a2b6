/**
 * The parts the task engine's modules are built from. Each module names the ones it uses (a
 * `…_PARTS` list and its `…Deps` type, a Pick of {@link EngineParts}) and the composition root
 * (src/engine.ts) hands it exactly those, built in dependency order: no module holds the whole
 * set. Durable changes go through `pipeline` as steps (src/steps/), never through in-place edits.
 */
import { renameSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import type { Logger } from '../log.js';
import type { Clock } from '../clock.js';
import type { Store } from '../store/port.js';
import type { TaskRecord } from '../store/records.js';
import { isTerminal } from '../../machines/index.js';
import type { Governor, GovernorEntry } from '../governor/governor.js';
import type { Router } from '../router/router.js';
import type { AgentPool } from '../pool/pool.js';
import type { Pipeline } from '../pipeline/pipeline.js';
import type { Notifier } from '../pipeline/notifier.js';
import type { AgentRegistry } from '../agents/registry.js';
import type { TimerWheel } from '../timers/timer-wheel.js';
import type { ResolvedOptions } from '../options.js';
import type { TaskTable } from './task-table.js';
import type { FlowControl } from '../governor/flow.js';
import type { LogFeed } from '../events/logs.js';
import type { Tracing } from '../telemetry/tracing.js';

/** Every part a module of the engine may ask for (see the module comment). */
export interface EngineParts {
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
  /** Internal news: a task settled, an attempt ended. */
  readonly notifier: Notifier;
  /** OpenTelemetry spans of submits and attempts; undefined without `@opentelemetry/api`. */
  readonly tracing: Tracing | undefined;
}

/** Exactly the named parts, for the module that names them. */
export function sliceOf<K extends keyof EngineParts>(parts: EngineParts, keys: readonly K[]): Pick<EngineParts, K> {
  const slice = {} as Pick<EngineParts, K>;
  for (const key of keys) slice[key] = parts[key];
  return slice;
}

/** The ids of a parent's children, in submit order (the children index), from `after` on. */
export function* childIdsOf(store: Store, parentId: string, after = ''): Generator<string> {
  for (const [, id] of store.read.children.keys({ start: [parentId, after], end: [parentId, '\uffff'] })) yield id;
}

/** Whether a settled task's settle has reached the store: its `listed` entry is in its database. */
export function isSettledStored(store: Store, task: TaskRecord): boolean {
  return isTerminal(task.state) && task.settledAt !== undefined && store.read.listedStored.has([task.agent, task.state, task.id]);
}

/** The governor entry of a queued task. */
export function entryOf(task: TaskRecord): GovernorEntry {
  const { model } = task.labels;
  return new Entry(task.id, task.instanceKey, task.agent, model, task.priority, task.queuedOrder);
}

/**
 * A governor entry made by a constructor, not an object literal: it lives as long as its task is
 * queued, and V8 would pretenure a literal's allocation site (see `createTaskRecord` in records.ts).
 */
class Entry implements GovernorEntry {
  readonly taskId: string;
  readonly instanceKey: string;
  readonly agent: string;
  readonly model: string | undefined;
  readonly priority: number;
  readonly order: number;
  constructor(taskId: string, instanceKey: string, agent: string, model: string | undefined, priority: number, order: number) {
    this.taskId = taskId;
    this.instanceKey = instanceKey;
    this.agent = agent;
    this.model = model;
    this.priority = priority;
    this.order = order;
  }
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

