/**
 * The task engine: reads (get, list, wait), controls (cancel, retry), durable timer firing and the
 * rebuild on open (rebuild.ts). Each durable change is a step (src/steps/) run through the
 * pipeline. Submits live in submit.ts and the attempt lifecycle in dispatcher.ts.
 */
import { checkText } from '../ids.js';
import { SETTLED_FOR_WAIT, isTerminal } from '../../machines/index.js';
import type { ClockTimer } from '../clock.js';
import type { Waiter } from './task-table.js';
import { TroupeError } from '../errors.js';
import type { TaskRecord, TimerRecord } from '../store/records.js';
import { decideCancel } from '../steps/cancel.js';
import { decideRetry, type Routed } from '../steps/retry.js';
import { decideWake } from '../steps/wake.js';
import type { StepResult } from '../steps/types.js';
import type { Dispatcher } from './dispatcher.js';
import type { EngineParts } from './parts.js';
import { rebuild, type RebuildCounts, type RebuildOptions } from './rebuild.js';
import { instanceKeyOf, PER_TASK_WORKSPACE, toTask, type Task } from './spec.js';
import { resolveRetry } from '../options.js';
import type { Interactions } from './interact.js';
import type { RegisteredAgent } from '../agents/registry.js';
import type { KeepAlive } from '../keep-alive.js';

/** What the task engine uses: the slice of the engine's shared parts it reads. */
export const TASK_ENGINE_PARTS = ['agents', 'clock', 'governor', 'log', 'notifier', 'options', 'pipeline', 'store', 'table', 'timers'] as const;
export type TaskEngineDeps = Pick<EngineParts, (typeof TASK_ENGINE_PARTS)[number]>;

/** What a pending wait holds the process alive with. */
type Holds = Pick<KeepAlive, 'add' | 'drop'>;

import { listTasks, type ListOptions, type TaskPage } from './list.js';

export type { ListOptions, TaskPage };

export type { WaitOptions } from '../api/tasks.js';
import type { WaitOptions } from '../api/tasks.js';


/** See the module comment. */
export class TaskEngine {
  readonly #k: TaskEngineDeps;
  readonly #dispatcher: Dispatcher;
  /** Resumes waiting tasks at open. */
  readonly #interactions: Pick<Interactions, 'rebuild'>;
  readonly #keepAlive: Holds;

  /** `keepAlive` keeps the process alive while a wait is pending (see keep-alive.ts). */
  constructor(deps: TaskEngineDeps, dispatcher: Dispatcher, interactions: Pick<Interactions, 'rebuild'>, keepAlive: Holds) {
    this.#k = deps;
    this.#dispatcher = dispatcher;
    this.#interactions = interactions;
    this.#keepAlive = keepAlive;
    deps.notifier.onTimer((timer) => this.onTimer(timer));
  }

  /** The current record of a task: memory for active tasks, else LMDB. */
  record(id: string): TaskRecord | undefined {
    if (typeof id !== 'string' || id.length === 0) throw new TroupeError('INVALID_INPUT', 'a task id must be a non-empty string');
    return this.#k.table.get(id) ?? this.#k.store.read.tasks.get(id);
  }

  get(id: string): Task {
    const record = this.record(id);
    if (!record) throw new TroupeError('NOT_FOUND', `no task ${id}`);
    return toTask(record);
  }

  list(options: ListOptions = {}): TaskPage {
    return listTasks(this.#k.store, this.#k.table, options);
  }

  /**
   * Where `events({ taskId })` starts reading the log: at the task's first event (its record says
   * where), or for a task from before records said so, at its creation (a minute earlier, for a
   * clock stepped back). Undefined for anything else: an id the store cannot look up (too long
   * for a key) is the iteration's to refuse.
   */
  firstEventOf(taskId: unknown): { seq: number } | { at: number } | undefined {
    if (typeof taskId !== 'string' || taskId.length === 0) return undefined;
    try {
      const record = this.record(taskId);
      if (record?.firstSeq !== undefined) return { seq: record.firstSeq };
      if (record) return { at: record.createdAt - 60_000 };
    } catch {
      // Refused by the iteration (see above).
    }
    return undefined;
  }

  /** `keepAlive: false` for internal waits that must not hold the process by themselves. */
  wait(id: string, options: WaitOptions = {}, keepAlive = true): Promise<Task> {
    try {
      const { timeoutMs, signal } = options;
      if (timeoutMs !== undefined && !(Number.isSafeInteger(timeoutMs) && timeoutMs >= 0)) throw new TroupeError('INVALID_INPUT', 'wait: timeoutMs must be a non-negative integer');
      const { table, clock } = this.#k;
      const inTable = table.get(id);
      const current = inTable ?? this.record(id);
      if (!current) throw new TroupeError('NOT_FOUND', `no task ${id}`);
      // A settled task still in the table has its commit in flight: wait for it to be durable.
      if (SETTLED_FOR_WAIT.has(current.state) && !(inTable && isTerminal(current.state))) return Promise.resolve(toTask(current));
      signal?.throwIfAborted();
      return new Promise<Task>((resolve, reject) => {
        const wait = new PendingWait(id, resolve, reject, this, keepAlive ? this.#keepAlive : undefined);
        table.addWaiter(id, wait);
        if (signal) wait.abortOn(signal);
        if (timeoutMs !== undefined) wait.timer = clock.setTimeout(() => wait.fail(new TroupeError('WAIT_TIMEOUT', `task ${id} did not settle within ${timeoutMs} ms`)), timeoutMs);
      });
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** A wait ended: forget it (called once by the wait). */
  ended(wait: PendingWait, removed = false): void {
    if (!removed) this.#k.table.removeWaiter(wait.id, wait);
    if (wait.timer) this.#k.clock.clearTimeout(wait.timer);
  }

  /** Gives up every pending wait, still pending, for {@link TaskEngine.adopt} on the engine after this one (store recovery). */
  handOver(): Waiter[] {
    const waits = this.#k.table.waiters();
    for (const wait of waits) this.#k.table.removeWaiter((wait as PendingWait).id, wait);
    return waits;
  }

  /**
   * Takes over the waits of the engine before this one, against what this engine's store holds:
   * a wait whose task is not stored (its submit failed with the store) fails with NOT_FOUND, one
   * whose task is in a state a wait ends on resolves now, and the rest wait here.
   */
  adopt(waits: readonly Waiter[]): void {
    for (const waiter of waits) {
      const wait = waiter as PendingWait;
      wait.engine = this;
      const current = this.record(wait.id);
      if (!current) wait.fail(new TroupeError('NOT_FOUND', `no task ${wait.id}: its submit was not stored (the store failed)`));
      else if (SETTLED_FOR_WAIT.has(current.state)) wait.settled(toTask(current));
      else this.#k.table.addWaiter(wait.id, wait);
    }
  }

  /** Rejects every pending wait (close). */
  rejectWaits(error: TroupeError): void {
    for (const wait of this.#k.table.waiters()) wait.fail(error);
  }

  /**
   * Cancels a task. Queued, sleeping and needs-attention tasks are cancelled at once; a running one
   * has its `ctx.signal` aborted and is cancelled when the attempt ends or the grace period is over.
   */
  async cancel(id: string, reason = 'cancelled'): Promise<Task> {
    checkText(reason, 'cancel: reason');
    const { table, pipeline } = this.#k;
    const task = table.get(id);
    if (!task) {
      const stored = this.record(id);
      if (!stored) throw new TroupeError('NOT_FOUND', `no task ${id}`);
      if (stored.state === 'cancelled') return toTask(stored);
      throw new TroupeError('ILLEGAL_TRANSITION', `task ${id} is ${stored.state}; it cannot be cancelled`);
    }
    if (isTerminal(task.state)) {
      const settled = await this.wait(id);
      if (settled.state === 'cancelled') return settled;
      throw new TroupeError('ILLEGAL_TRANSITION', `task ${id} is ${settled.state}; it cannot be cancelled`);
    }
    const children = this.#children(id);
    const live = this.#dispatcher.attemptOf(task);
    const result = pipeline.decide(decideCancel, { task, liveAttemptId: live?.attemptId }, { reason });
    const cancelled = taskOf(result);
    // No record changes: the live attempt's end settles the task. It is told now, not once the
    // (empty) commit lands: an attempt that ended meanwhile for another reason (a kill, a timeout)
    // would have requeued or retried the task, and the cancel would be lost.
    if (cancelled === undefined && live !== undefined) this.#dispatcher.stop(live, 'cancelled', reason);
    const settled = cancelled === undefined ? this.wait(id) : undefined;
    await pipeline.apply(result);
    await this.#cancelAll(children, reason);
    return settled ?? toTask(cancelled!);
  }

  /** Active tasks whose parent is `id`. */
  #children(id: string): TaskRecord[] {
    return this.#k.table.filter((t) => t.parentId === id && !isTerminal(t.state));
  }

  /** Cancelling a parent cancels its children (and theirs); one that settles meanwhile is left as it is. */
  async #cancelAll(children: readonly TaskRecord[], reason: string): Promise<void> {
    await Promise.all(children.map((child) => this.cancel(child.id, `parent cancelled: ${reason}`).catch(() => undefined)));
  }

  /**
   * Starts a new run of a failed, dropped or cancelled task, or requeues a task that needs
   * attention (same run; an unmatched one is routed again first).
   */
  async retry(id: string): Promise<Task> {
    const { table, store, pipeline } = this.#k;
    const current = table.get(id);
    if (current?.state === 'needs_attention') return this.#requeue(current);
    if (current) {
      if (!isTerminal(current.state)) throw new TroupeError('ILLEGAL_TRANSITION', `task ${id} is ${current.state}; only failed, dropped, cancelled or needs_attention tasks can be retried`);
      // Its settle is still in flight: retry once it is durable (and the task has left the table).
      await this.wait(id);
    }
    const inTable = table.get(id);
    const task = inTable ?? store.read.tasks.get(id);
    if (!task) throw new TroupeError('NOT_FOUND', `no task ${id}`);
    const result = pipeline.decide(decideRetry, { task, runtimeId: this.#k.store.runtimeId }, {});
    const durable = pipeline.apply(result);
    // A settled task from the store is active again: it leaves the settled counts.
    if (!inTable) table.leftSettled(task.state, task.agent);
    await durable;
    return toTask(taskOf(result)!);
  }

  /** Moves a needs_attention task back to queued, routing it first if no agent matched it yet. */
  async #requeue(task: TaskRecord): Promise<Task> {
    const routed = task.reason === 'unmatched' ? routeAgain(this.#k, task) : undefined;
    const result = this.#k.pipeline.decide(decideRetry, { task, runtimeId: this.#k.store.runtimeId }, routed === undefined ? {} : { routed });
    await this.#k.pipeline.apply(result);
    return toTask(taskOf(result)!);
  }

  /** A durable timer fell due: end a retry backoff or delayed start, or wake a sleeping task. */
  onTimer(timer: TimerRecord): void {
    const { table, pipeline, log } = this.#k;
    pipeline.run(decideWake, { task: table.get(timer.taskId) }, { timer }).catch((error: unknown) => log.error({ err: error, timer }, 'firing a durable timer failed'));
  }

  /**
   * Loads the active tasks on open. Attempts that were running when the process died end as
   * `crashed` (counted against the retry budget); queued tasks resume in priority and FIFO order;
   * durable timers are re-armed.
   */
  rebuild(options?: RebuildOptions): Promise<RebuildCounts> {
    return rebuild(this.#k, this.#interactions, options);
  }
}

/**
 * Routes an unmatched task again: the agent it names, or the least-loaded one covering its
 * `requires`. Throws UNKNOWN_AGENT (changing nothing) when still no agent matches.
 */
function routeAgain(k: TaskEngineDeps, task: TaskRecord): Routed {
  const requires = task.requires ?? [];
  let agent: RegisteredAgent | undefined;
  if (task.agent) {
    // A named agent stays the task's agent: it must be registered and cover `requires` now.
    const named = k.agents.get(task.agent);
    if (named && requires.every((c) => named.capabilities.includes(c))) agent = named;
  } else {
    const picked = k.governor.pickAgent(k.agents.covering(requires).map((a) => a.name));
    agent = picked === undefined ? undefined : k.agents.get(picked);
  }
  if (!agent) {
    throw new TroupeError('UNKNOWN_AGENT', `task ${task.id}: no registered agent ${task.agent ? `named ${task.agent} ` : ''}covers [${requires.join(', ')}]`);
  }
  const retry = task.unrouted ? { ...resolveRetry(task.unrouted.retry, agent.retry, 'retry') } : task.retry;
  const timeoutMs = task.unrouted ? (task.unrouted.timeoutMs ?? agent.timeoutMs) : task.timeoutMs;
  return { agent: agent.name, retry, timeoutMs, instanceKey: instanceKeyOf({ agent, lane: task.lane, workspace: task.workspaceKeep !== undefined ? PER_TASK_WORKSPACE : task.workspace, timeoutMs, retry }) };
}

/** The task record a step decided, if it changed one. */
function taskOf(result: StepResult): TaskRecord | undefined {
  for (const change of result.changes) if (change.kind === 'task') return change.task;
  return undefined;
}

/** One pending `wait()`: woken by the table when its task settles, or failed by a timeout, an abort or close. */
class PendingWait implements Waiter {
  timer: ClockTimer | undefined;
  #done = false;
  #signal: AbortSignal | undefined;
  #onAbort: (() => void) | undefined;

  constructor(
    readonly id: string,
    readonly resolve: (task: Task) => void,
    readonly reject: (error: unknown) => void,
    /** The engine the wait is pending on (a store recovery moves it to the next one). */
    public engine: { ended(wait: PendingWait, removed?: boolean): void },
    /** Holds the process alive while pending (absent for internal waits). */
    readonly holds: Holds | undefined,
  ) {
    holds?.add();
  }

  abortOn(signal: AbortSignal): void {
    this.#signal = signal;
    this.#onAbort = () => this.fail(signal.reason);
    signal.addEventListener('abort', this.#onAbort, { once: true });
  }

  settled(task: Task, removed = false): void {
    if (this.#finish(removed)) this.resolve(task);
  }

  fail(error: unknown): void {
    if (this.#finish(false)) this.reject(error);
  }

  #finish(removed: boolean): boolean {
    if (this.#done) return false;
    this.#done = true;
    this.holds?.drop();
    if (this.#onAbort) this.#signal?.removeEventListener('abort', this.#onAbort);
    this.engine.ended(this, removed);
    return true;
  }
}
