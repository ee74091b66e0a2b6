/**
 * The public surface of a runtime: what `createRuntime()` resolves to, on either store. The LMDB
 * runtime (src/runtime.ts) and the PostgreSQL runtime (src/cluster/runtime.ts) both implement it.
 * On PostgreSQL, the calls that have no backing there yet reject (or throw) UNSUPPORTED_STORE,
 * naming the call; see the README, "Running on many machines".
 *
 * Declaration-only: it imports types, and nothing runs at import time.
 */
import type { AgentRegistration, RegisteredAgent } from '../agents/registry.js';
import type { LogLine, LogOptions } from '../events/logs.js';
import type { CloseOptions, RuntimeState } from '../lifecycle.js';
import type { MetricsSnapshot } from '../metrics/metrics.js';
import type { InstanceView } from '../router/router.js';
import type { SchedulesApi } from '../scheduler/scheduler.js';
import type { RuntimeStats } from '../stats.js';
import type { BackupInfo } from '../store/port.js';
import type { InboxItem, InputSpec } from '../tasks/interact.js';
import type { PruneOptions, PruneResult } from '../tasks/prune.js';
import type { EventStreamOptions, EventType, RuntimeEvent } from './events.js';
import type { AgentInput, AgentOutput, ListOptions, Task, TaskId, TaskPage, TaskSpec, WaitOptions } from './tasks.js';

export type { CloseOptions, RuntimeState } from '../lifecycle.js';

/** Agent registration API (`rt.agents`). */
export interface AgentsApi {
  /** Registers (or replaces) an agent. Throws INVALID_OPTIONS naming the bad field. */
  register(registration: AgentRegistration): RegisteredAgent;
  list(): RegisteredAgent[];
}

/** An embedded Troupe runtime, on LMDB (the default) or on PostgreSQL (`store: { postgres }`). */
export interface Runtime extends AsyncDisposable {
  readonly agents: AgentsApi;
  /** Cron schedules. */
  readonly schedules: SchedulesApi;
  /** Where the runtime is in its lifecycle. */
  readonly state: RuntimeState;
  /** Where `metricsPort` serves `/metrics` (127.0.0.1), once running; undefined when off. */
  readonly metricsPort: number | undefined;
  /**
   * Lets the process exit while this runtime is open and nothing else keeps it alive, as
   * `net.Server#unref()` does. A pending `wait()` (or an `events()` / `logs({ follow })` iteration
   * waiting for its next item) still keeps it alive until it ends. Returns the runtime.
   */
  unref(): this;
  /** Undoes {@link Runtime.unref}: the open runtime keeps the process alive again (the default). Returns the runtime. */
  ref(): this;
  /**
   * Stores a task durably and queues it. Resolves once the commit is flushed. For an agent declared
   * in `Agents`, `input` is checked against its input type and the task carries its output type.
   */
  submit<A extends string = string>(spec: TaskSpec<A>): Promise<Task<AgentOutput<A>, AgentInput<A>>>;
  /** Stores several tasks in one transaction: all are stored, or (on a validation error) none. */
  submitMany<A extends string = string>(specs: ReadonlyArray<TaskSpec<A>>): Promise<Array<Task<AgentOutput<A>, AgentInput<A>>>>;
  /**
   * Sends an input to a task: stored durably (resolves once committed), delivered once, in order,
   * to the agent's `ctx.waitForInput()`. A task waiting with no live attempt resumes with a new run.
   */
  sendInput(id: string, input: InputSpec): Promise<InboxItem>;
  /**
   * A metrics snapshot, or the same as Prometheus text with `{ format: 'prometheus' }`. On
   * PostgreSQL: this runtime's node's attempts, and the cluster's queue depth and tasks by state
   * as last counted (src/cluster/metrics.ts).
   */
  metrics(): Promise<MetricsSnapshot>;
  metrics(options: { format: 'prometheus' }): Promise<string>;
  /** The dashboard's URL (with `#token=` when it needs one), once running; undefined when `dashboard` is off. */
  dashboard(): string | undefined;
  /** A task, with `heldBy` while flow control keeps it back. */
  get<O = unknown>(id: TaskId<O>): Promise<Task<O>>;
  /** A page of tasks in submit order. */
  list(options?: ListOptions): Promise<TaskPage>;
  /** Resolves when the task is terminal (done, failed, dropped, cancelled) or needs attention. */
  wait<O = unknown>(id: TaskId<O>, options?: WaitOptions): Promise<Task<O>>;
  /** Cancels a task: a queued one at once; a running one has its attempt aborted, and resolves once it settled. */
  cancel<O = unknown>(id: TaskId<O>, reason?: string): Promise<Task<O>>;
  /** Starts a new run of a failed, dropped or cancelled task (needs_attention: requeues it). */
  retry<O = unknown>(id: TaskId<O>): Promise<Task<O>>;
  /** Replays the event log after `after`, then yields live events, until aborted or closed. */
  events<K extends EventType = EventType>(options?: EventStreamOptions<K>): AsyncGenerator<RuntimeEvent<K>>;
  /** The log lines a task's agent wrote through `ctx.log`, in order; with `follow`, then live until the task is terminal. */
  logs(id: string, options?: LogOptions): AsyncGenerator<LogLine>;
  /** Listens to committed events of one type (or `'*'` for all). Returns an unsubscribe function. */
  on(type: '*', listener: (event: RuntimeEvent) => void): () => void;
  on<K extends EventType>(type: K, listener: (event: RuntimeEvent<K>) => void): () => void;
  off(type: EventType | '*', listener: (event: never) => void): void;
  /** Sets an instance's dispatch target (null: no per-instance limit). Resolves once durable. */
  setDispatchTarget(instanceKey: string, target: number | null): Promise<void>;
  /** Clears a degraded instance so it dispatches again. */
  resetInstance(instanceKey: string): Promise<void>;
  /** Stops dispatch (durably): running attempts carry on, submits are still accepted. */
  freeze(reason?: string): Promise<void>;
  /** Resumes dispatch after freeze() or kill(). */
  unfreeze(): Promise<void>;
  /** Freezes and aborts every running attempt; their tasks are requeued. Resolves when none runs. */
  kill(reason?: string): Promise<void>;
  /** Drains now: re-checks agent holds against the clock, fires durable timers and schedule ticks due by it, runs a supervisor cycle, fills free slots. */
  poke(): void;
  /** Removes settled tasks and all they left but their events, in bounded batches (README: Pruning). */
  prune(options?: PruneOptions): Promise<PruneResult>;
  /** Ends an agent's backoff pause early. Resolves true if it was paused. */
  resumeAgent(name: string): Promise<boolean>;
  /** A consistent copy of the store in a new or empty directory, taken while serving (README: Backups). */
  backup(path: string, options?: { compact?: boolean }): Promise<BackupInfo>;
  /** Execution instances: live ones and those passivated to disk. */
  instances(): InstanceView[];
  /**
   * Counts by state, slots, per-agent queues and attempts. On PostgreSQL the counts by state are
   * the cluster's as last counted in the background (README, "Running on many machines").
   */
  stats(): RuntimeStats;
  /**
   * Stops admission, lets running attempts finish until `timeoutMs`, then interrupts the rest
   * (requeued without counting against their budget), and closes everything. Options are
   * validated before anything happens. A second call returns the same promise; one with
   * `force: true` also stops waiting for running attempts.
   */
  close(options?: CloseOptions): Promise<void>;
}
