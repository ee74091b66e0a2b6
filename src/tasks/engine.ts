/**
 * The task engine: reads (get, list, wait), controls (cancel, retry), durable timer firing and the
 * rebuild on open. Submits live in submit.ts and the attempt lifecycle in dispatcher.ts.
 */
import { SETTLED_FOR_WAIT, TASK_STATES, isTerminal, type TaskState } from '../../machines/index.js';
import type { ClockTimer } from '../clock.js';
import { TroupeError } from '../errors.js';
import type { AttemptRecord, TaskRecord, TimerRecord } from '../store/records.js';
import type { StepWriter } from '../store/port.js';
import type { Dispatcher } from './dispatcher.js';
import { beginRun, cleanWorkspace, entryOf, timerIdOf, transition, writeQueued, type Kernel } from './kernel.js';
import { decideSettlement } from './outcome.js';
import { settleInto } from './settle.js';
import { instanceKeyOf, PER_TASK_WORKSPACE, toTask, type Task } from './spec.js';
import { resolveRetry } from '../options.js';
import type { Interactions } from './interact.js';
import type { RegisteredAgent } from '../agents/registry.js';
import type { Release } from '../keep-alive.js';

/** Filters of `rt.list()`. */
export interface ListOptions {
  state?: TaskState;
  agent?: string;
  parentId?: string;
  /** Page size, 1..1000. @default 100 */
  limit?: number;
  /** Cursor from a previous page's `next`. */
  after?: string;
}

/** One page of `rt.list()`, in task id (submit) order. */
export interface TaskPage {
  tasks: Task[];
  /** Cursor of the next page, or null at the end. */
  next: string | null;
}

/** Options of `rt.wait()`. */
export interface WaitOptions {
  /** Rejects with WAIT_TIMEOUT after this long. */
  timeoutMs?: number;
  signal?: AbortSignal;
}

const ACTIVE_STATES = new Set<TaskState>(TASK_STATES.filter((s) => !isTerminal(s)));

/** See the module comment. */
export class TaskEngine {
  /** Resumes waiting tasks at open (set by the runtime). */
  interactions: Pick<Interactions, 'rebuild'> | undefined;
  readonly #k: Kernel;
  readonly #dispatcher: Dispatcher;
  readonly #waits = new Set<(error: TroupeError) => void>();
  readonly #hold: () => Release;

  /** `hold` keeps the process alive while a wait is pending (see keep-alive.ts). */
  constructor(kernel: Kernel, dispatcher: Dispatcher, hold: () => Release) {
    this.#k = kernel;
    this.#dispatcher = dispatcher;
    this.#hold = hold;
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
    const { state, agent, parentId, after } = options;
    const limit = options.limit ?? 100;
    if (!Number.isInteger(limit) || limit < 1 || limit > 1000) throw new TroupeError('INVALID_INPUT', 'list: limit must be an integer in 1..1000');
    if (state !== undefined && !TASK_STATES.includes(state)) throw new TroupeError('INVALID_INPUT', `list: unknown state ${JSON.stringify(state)}`);
    if (after !== undefined && typeof after !== 'string') throw new TroupeError('INVALID_INPUT', 'list: after must be a cursor string');
    const { table, store } = this.#k;
    const tasks: Task[] = [];
    const keep = (t: TaskRecord) => (!state || t.state === state) && (!agent || t.agent === agent) && (!parentId || t.parentId === parentId);
    // Active states are found through the small `active` index instead of every task ever stored.
    const ids = state && ACTIVE_STATES.has(state) ? store.read.active.keys({ start: after ?? '' }) : store.read.tasks.keys({ start: after ?? '' });
    for (const id of ids) {
      if (after !== undefined && id <= after) continue;
      const record = table.get(id) ?? store.read.tasks.get(id);
      if (!record || !keep(record)) continue;
      tasks.push(toTask(record));
      if (tasks.length === limit) return { tasks, next: id };
    }
    return { tasks, next: null };
  }

  /** `keepAlive: false` for internal waits that must not hold the process by themselves. */
  async wait(id: string, options: WaitOptions = {}, keepAlive = true): Promise<Task> {
    const { timeoutMs, signal } = options;
    if (timeoutMs !== undefined && !(Number.isSafeInteger(timeoutMs) && timeoutMs >= 0)) throw new TroupeError('INVALID_INPUT', 'wait: timeoutMs must be a non-negative integer');
    const { table, clock } = this.#k;
    const inTable = table.get(id);
    const current = inTable ?? this.record(id);
    if (!current) throw new TroupeError('NOT_FOUND', `no task ${id}`);
    // A settled task still in the table has its commit in flight: wait for it to be durable.
    if (SETTLED_FOR_WAIT.has(current.state) && !(inTable && isTerminal(current.state))) return toTask(current);
    signal?.throwIfAborted();
    return new Promise<Task>((resolve, reject) => {
      let timer: ClockTimer | undefined;
      const release = keepAlive ? this.#hold() : noop;
      const finish = () => {
        release();
        removeWaiter();
        this.#waits.delete(fail);
        if (timer) clock.clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
      };
      const fail = (error: unknown) => {
        finish();
        reject(error);
      };
      const onAbort = () => fail(signal!.reason);
      const removeWaiter = table.addWaiter(id, (task) => {
        finish();
        resolve(task);
      });
      this.#waits.add(fail);
      signal?.addEventListener('abort', onAbort, { once: true });
      if (timeoutMs !== undefined) timer = clock.setTimeout(() => fail(new TroupeError('WAIT_TIMEOUT', `task ${id} did not settle within ${timeoutMs} ms`)), timeoutMs);
    });
  }

  /** Rejects every pending wait (close). */
  rejectWaits(error: TroupeError): void {
    for (const fail of [...this.#waits]) fail(error);
  }

  /**
   * Cancels a task. Queued, sleeping and needs-attention tasks are cancelled at once; a running one
   * has its `ctx.signal` aborted and is cancelled when the attempt ends or the grace period is over.
   */
  async cancel(id: string, reason = 'cancelled'): Promise<Task> {
    if (typeof reason !== 'string') throw new TroupeError('INVALID_INPUT', 'cancel: reason must be a string');
    const { table } = this.#k;
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
    const attempt = this.#dispatcher.attemptOf(task);
    const children = this.#children(id);
    if ((task.state === 'running' || task.state === 'waiting') && attempt) {
      const settled = this.wait(id);
      this.#dispatcher.stop(attempt, 'cancelled', reason);
      await this.#cancelAll(children, reason);
      return settled;
    }
    await this.#cancelNow(task, reason);
    await this.#cancelAll(children, reason);
    return toTask(task);
  }

  /** Active tasks whose parent is `id`. */
  #children(id: string): TaskRecord[] {
    return this.#k.table.filter((t) => t.parentId === id && !isTerminal(t.state));
  }

  /** Cancelling a parent cancels its children (and theirs); one that settles meanwhile is left as it is. */
  async #cancelAll(children: readonly TaskRecord[], reason: string): Promise<void> {
    await Promise.all(children.map((child) => this.cancel(child.id, `parent cancelled: ${reason}`).catch(() => undefined)));
  }

  async #cancelNow(task: TaskRecord, reason: string): Promise<void> {
    const { governor, timers, store, clock, table } = this.#k;
    const now = clock.now();
    const from = task.state;
    transition(task, 'CANCEL', now);
    table.moved(task, from);
    governor.remove(task.id);
    const timer = [timers.remove(timerIdOf(task, 'start')), timers.remove(timerIdOf(task, 'retry')), timers.remove(timerIdOf(task, 'wake'))].find((t) => t !== undefined);
    task.reason = reason;
    task.settledAt = now;
    delete task.runAt;
    delete task.waitingFor;
    await store.commit((w) => {
      if (timer) w.removeTimer(timer);
      w.removeActive(task.id);
      w.putRun({ taskId: task.id, run: task.runs, reason: task.runReason, createdAt: task.runCreatedAt, settledAt: now, outcome: 'cancelled', attempts: task.attempts });
      w.putTask(task);
      w.event('task.cancelled', { at: now, taskId: task.id, data: { run: task.runs, reason, from } });
    });
    table.retire(task);
    cleanWorkspace(this.#k, task);
    table.notify(task);
  }

  /**
   * Starts a new run of a failed, dropped or cancelled task, or requeues a task that needs
   * attention (same run; an unmatched one is routed again first).
   */
  async retry(id: string): Promise<Task> {
    const { table, store, clock, governor } = this.#k;
    const current = table.get(id);
    if (current?.state === 'needs_attention') return this.#requeue(current);
    if (current) {
      if (!isTerminal(current.state)) throw new TroupeError('ILLEGAL_TRANSITION', `task ${id} is ${current.state}; only failed, dropped, cancelled or needs_attention tasks can be retried`);
      await this.wait(id);
    }
    const stored = store.read.tasks.get(id);
    if (!stored) throw new TroupeError('NOT_FOUND', `no task ${id}`);
    const task: TaskRecord = structuredClone(stored);
    const from = task.state;
    const now = clock.now();
    transition(task, 'RETRY', now);
    beginRun(task, 'retry', now);
    for (const field of ['error', 'result', 'output', 'reason', 'settledAt', 'runAt', 'progress', 'followUp', 'startedAt', 'waitingFor'] as const) delete task[field];
    table.add(task);
    table.revived(from, task.agent);
    await store.commit((w) => {
      w.putActive(task.id);
      writeQueued(w, task, { run: task.runs, reason: 'retry', from }, now);
    });
    if (task.state === 'queued' && !governor.has(task.id)) governor.enqueue(entryOf(task));
    this.#k.pump();
    return toTask(task);
  }

  /** Moves a needs_attention task back to queued, routing it first if no agent matched it yet. */
  async #requeue(task: TaskRecord): Promise<Task> {
    const { table, store, clock, governor, agents } = this.#k;
    const routed = task.reason === 'unmatched' ? routeAgain(this.#k, task) : undefined;
    const now = clock.now();
    transition(task, 'REQUEUE', now);
    table.moved(task, 'needs_attention');
    const from = task.reason;
    delete task.reason;
    if (routed) Object.assign(task, routed);
    await store.commit((w) => writeQueued(w, task, { run: task.runs, reason: 'operator', from, agent: task.agent }, now));
    if (task.state === 'queued' && agents.get(task.agent) && !governor.has(task.id)) governor.enqueue(entryOf(task));
    this.#k.pump();
    return toTask(task);
  }

  /** A durable timer fell due: end a retry backoff or wake a sleeping task. */
  onTimer(timer: TimerRecord): void {
    const { table, store, clock, governor, log } = this.#k;
    const task = table.get(timer.taskId);
    const now = clock.now();
    const due = task && task.runs === timer.run && (timer.kind === 'wake' ? task.state === 'sleeping' : task.state === 'queued');
    store
      .commit((w) => {
        w.removeTimer(timer);
        if (!due || !task) return;
        delete task.runAt;
        if (timer.kind === 'wake') {
          transition(task, 'WAKE', now);
          table.moved(task, 'sleeping');
          beginRun(task, 'wake', now);
          writeQueued(w, task, { run: task.runs, reason: 'wake' }, now);
        } else {
          w.putTask(task);
        }
      })
      .then(
        () => {
          if (due && task && task.state === 'queued' && !governor.has(task.id)) {
            governor.enqueue(entryOf(task));
            this.#k.pump();
          }
        },
        (error: unknown) => log.error({ err: error, timer }, 'firing a durable timer failed'),
      );
  }

  /**
   * Loads the active tasks on open. Attempts that were running when the process died end as
   * `crashed` (counted against the retry budget); queued tasks resume in priority and FIFO order;
   * durable timers are re-armed.
   */
  async rebuild(): Promise<{ active: number; crashed: number; timers: number }> {
    const { store, table, clock, governor, timers, options } = this.#k;
    const now = clock.now();
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
    const crashed = loaded.filter((t) => t.state === 'running');
    const waiting = loaded.filter((t) => t.state === 'waiting');
    const after: Array<() => void> = [];
    await store.commit((w: StepWriter) => {
      for (const id of orphans) w.removeActive(id);
      // A task that waited (input, join) when the process died keeps waiting with no live attempt;
      // the attempt it had does not count. What it waits for resumes it with a new run.
      for (const task of waiting) {
        const attempt = store.read.attempts.get([task.id, task.runs, task.attemptSeq]);
        if (attempt && attempt.exit === undefined) {
          task.attempts--;
          w.putAttempt({ ...attempt, endedAt: now, exit: 'interrupted' });
          w.putTask(task);
          const data = { run: task.runs, attempt: attempt.attempt, exit: 'interrupted', attemptMs: Math.max(0, now - attempt.startedAt), reason: 'process_crashed', for: task.waitingFor?.kind, detached: true };
          w.event('task.waiting', { at: now, taskId: task.id, attemptId: attempt.attemptId, data });
        }
      }
      // Resumed ones are queued now, and join the requeue below.
      this.interactions?.rebuild(waiting, w, now);
      for (const task of crashed) {
        const attempt: AttemptRecord = store.read.attempts.get([task.id, task.runs, task.attemptSeq]) ?? {
          taskId: task.id,
          run: task.runs,
          attempt: task.attemptSeq,
          attemptId: `${task.id}:${task.runs}:${task.attemptSeq}`,
          token: task.token,
          owner: `${store.runtimeId}:unknown`,
          startedAt: task.updatedAt,
          leaseExpiresAt: task.updatedAt,
        };
        const decision = decideSettlement(task, task.attempts, { kind: 'crash', code: 'PROCESS_CRASHED', message: 'the process died during the attempt' }, undefined, options.random);
        after.push(settleInto(w, this.#k, task, attempt, decision, now));
      }
    });
    for (const effect of after) effect();
    const queued = loaded.filter((t) => t.state === 'queued' && !(t.runAt !== undefined && (timers.has(timerIdOf(t, 'retry')) || timers.has(timerIdOf(t, 'start')))));
    queued.sort((a, b) => a.queuedOrder - b.queuedOrder);
    for (const task of queued) if (!governor.has(task.id)) governor.enqueue(entryOf(task));
    this.#k.pump();
    return { active: loaded.length, crashed: crashed.length, timers: timerCount };
  }
}

/**
 * Routes an unmatched task again: the agent it names, or the least-loaded one covering its
 * `requires`. Throws UNKNOWN_AGENT (changing nothing) when still no agent matches.
 */
function routeAgain(k: Kernel, task: TaskRecord): Pick<TaskRecord, 'agent' | 'instanceKey' | 'retry' | 'timeoutMs'> {
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
  delete task.unrouted;
  return { agent: agent.name, retry, timeoutMs, instanceKey: instanceKeyOf({ agent, lane: task.lane, workspace: task.workspaceKeep !== undefined ? PER_TASK_WORKSPACE : task.workspace, timeoutMs, retry }) };
}

function noop(): void {}
