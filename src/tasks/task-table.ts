/**
 * In-memory table of the tasks that are not settled yet (plus settled ones whose commit is still in
 * flight). It is the authoritative copy while a task is active, so the hot path never reads LMDB,
 * and it keeps exact counts by state for admission and stats, and the `wait()` waiters.
 */
import { TASK_STATES, SETTLED_FOR_WAIT, isTerminal, type TaskState } from '../../machines/index.js';
import type { TaskRecord } from '../store/records.js';
import { toTask, type Task } from './spec.js';
import { ChurnMap } from '../collections.js';

/** Whoever waits for a task to reach a state `wait()` resolves on. */
export interface Waiter {
  /** `removed`: the table has let go of it already (its notify did), so it need not be looked for there. */
  settled(task: Task, removed?: boolean): void;
  /** The wait ends without the task settling (close). */
  fail(error: unknown): void;
}

/** See the module comment. */
export class TaskTable {
  readonly #tasks = new ChurnMap<string, TaskRecord>();
  /** Waiters by task id: one, or several in an array. */
  readonly #waiters = new ChurnMap<string, Waiter | Waiter[]>();
  /** Idempotency key → id of tasks in the table, including submits whose commit is in flight. */
  readonly #keys = new ChurnMap<string, string>();
  readonly #active = emptyCounts();
  /** Counts of settled tasks in the store, overall and per agent, taken from the store on first use. */
  #settled: Record<TaskState, number> | undefined;
  readonly #settledByAgent = new Map<string, Record<TaskState, number>>();
  readonly #countStored: () => Iterable<[agent: string, state: TaskState, count: number]>;
  readonly #isStored: (task: TaskRecord) => boolean;
  /** Admissions reserved by submits whose commit is in flight. */
  reservedAdmissions = 0;

  /** `countStored`: the stored settled tasks per agent and state (Store.countSettled); `isStored`: whether a settled task is among them. */
  constructor(countStored: () => Iterable<[agent: string, state: TaskState, count: number]>, isStored: (task: TaskRecord) => boolean) {
    this.#countStored = countStored;
    this.#isStored = isStored;
  }

  get(id: string): TaskRecord | undefined {
    return this.#tasks.get(id);
  }

  /** Adds a task (or re-adds one a retry brought back from a settled state); returns the version it replaced, if any. */
  add(task: TaskRecord): TaskRecord | undefined {
    const previous = this.#tasks.get(task.id);
    if (previous) this.#active[previous.state]--;
    this.#tasks.set(task.id, task);
    this.#active[task.state]++;
    if (task.idempotencyKey !== undefined) this.#keys.set(task.idempotencyKey, task.id);
    return previous;
  }

  /** The id of the task in the table that holds an idempotency key. */
  idOfKey(key: string): string | undefined {
    return this.#keys.get(key);
  }

  /** A settled task left the store counts: a retry revived it, or a prune removed it. */
  leftSettled(from: TaskState, agent: string): void {
    if (!this.#settled) return;
    this.#settled[from]--;
    const byAgent = this.#settledByAgent.get(agent);
    if (byAgent) byAgent[from]--;
  }

  /** Removes a task whose settled state is now committed (or whose submit failed). */
  retire(task: TaskRecord): void {
    if (this.#tasks.get(task.id) !== task) return;
    this.#tasks.delete(task.id);
    this.#active[task.state]--;
    // Its key is committed to the idempotency database by now.
    if (task.idempotencyKey !== undefined && this.#keys.get(task.idempotencyKey) === task.id) this.#keys.delete(task.idempotencyKey);
    if (this.#settled && isTerminal(task.state)) this.#countSettled(task);
  }

  #countSettled(task: TaskRecord): void {
    this.#addSettled(task.agent, task.state, 1);
  }

  #addSettled(agent: string, state: TaskState, n: number): void {
    this.#settled![state] += n;
    let byAgent = this.#settledByAgent.get(agent);
    if (!byAgent) this.#settledByAgent.set(agent, (byAgent = emptyCounts()));
    byAgent[state] += n;
  }

  /** Non-zero counts of every task per agent (settled ones from the store) and of active tasks per instance. */
  countsByOwner(): { agents: Record<string, Partial<Record<TaskState, number>>>; instances: Record<string, Partial<Record<TaskState, number>>> } {
    this.countsByState();
    const agents: Record<string, Partial<Record<TaskState, number>>> = {};
    const instances: Record<string, Partial<Record<TaskState, number>>> = {};
    const bump = (into: Record<string, Partial<Record<TaskState, number>>>, key: string, state: TaskState, n = 1) => {
      const counts = (into[key] ??= {});
      counts[state] = (counts[state] ?? 0) + n;
    };
    for (const [agent, counts] of this.#settledByAgent) for (const state of TASK_STATES) if (counts[state] > 0) bump(agents, agent, state, counts[state]);
    for (const task of this.#tasks.values()) {
      // A settled task still in the table (its commit in flight) is not in the store counts yet.
      // A task no agent matched yet has no agent to count under (it shows in the totals).
      if (task.agent) bump(agents, task.agent, task.state);
      if (!isTerminal(task.state) && task.instanceKey) bump(instances, task.instanceKey, task.state);
    }
    return { agents, instances };
  }

  /** Wakes the waiters of a task that reached a state `wait()` resolves on. */
  notify(task: TaskRecord): void {
    if (!SETTLED_FOR_WAIT.has(task.state)) return;
    const waiters = this.#waiters.get(task.id);
    if (!waiters) return;
    this.#waiters.delete(task.id);
    const view = toTask(task);
    if (!Array.isArray(waiters)) return waiters.settled(view, true);
    for (const waiter of waiters) waiter.settled(view, true);
  }

  addWaiter(id: string, waiter: Waiter): void {
    const held = this.#waiters.get(id);
    if (held === undefined) this.#waiters.set(id, waiter);
    else if (Array.isArray(held)) held.push(waiter);
    else this.#waiters.set(id, [held, waiter]);
  }

  removeWaiter(id: string, waiter: Waiter): void {
    const held = this.#waiters.get(id);
    if (held === waiter) this.#waiters.delete(id);
    else if (Array.isArray(held)) {
      const at = held.indexOf(waiter);
      if (at >= 0) held.splice(at, 1);
      if (held.length === 0) this.#waiters.delete(id);
    }
  }

  /** Every pending waiter (close rejects them). */
  waiters(): Waiter[] {
    return [...this.#waiters.values()].flat();
  }

  /** The tasks in memory that match (a scan: for rare operations such as cascading a cancel). */
  filter(keep: (task: TaskRecord) => boolean): TaskRecord[] {
    return [...this.#tasks.values()].filter(keep);
  }

  /** Count of tasks in a state held in memory. */
  count(state: TaskState): number {
    return this.#active[state];
  }

  /**
   * Counts of every task by state: memory for active ones, and for settled ones the store's count
   * (from its indexes, not its records) taken on first use, then kept. A settled task still in the
   * table whose commit has landed is in both: it counts as the table's until it is retired.
   */
  countsByState(): Record<TaskState, number> {
    if (!this.#settled) {
      this.#settled = emptyCounts();
      for (const [agent, state, n] of this.#countStored()) this.#addSettled(agent, state, n);
      for (const task of this.#tasks.values()) if (isTerminal(task.state) && this.#isStored(task)) this.#addSettled(task.agent, task.state, -1);
    }
    const out = emptyCounts();
    for (const state of TASK_STATES) out[state] = this.#active[state] + this.#settled[state];
    return out;
  }
}

function emptyCounts(): Record<TaskState, number> {
  return Object.fromEntries(TASK_STATES.map((s) => [s, 0])) as Record<TaskState, number>;
}
