/**
 * `createRuntime()`: resolves options, opens the store, builds the engine (engine.ts: every part,
 * in dependency order; engine-slot.ts holds it and its store, and replaces both after a store
 * recovery), rebuilds from disk, and starts. The `LmdbRuntime` is the public facade over the
 * engine and owns the lifecycle `starting → running → draining → closed`.
 */
import { checkBackupArgs, type ResolvedOptions } from './options.js';
import type { Logger } from './log.js';
import { TroupeError } from './errors.js';
import type { BackupInfo, Store } from './store/port.js';
import type { EventBus } from './events/event-bus.js';
import type { EventStreamOptions, RuntimeEvent } from './api/events.js';
import type { InstanceView } from './router/router.js';
import { validateRegistration, type RegisteredAgent } from './agents/registry.js';
import type { ListOptions, TaskPage, WaitOptions } from './tasks/engine.js';
import type { PruneOptions, PruneResult } from './tasks/prune.js';
import { checkLogOptions, followLogs, LogFeed, type LogLine, type LogOptions } from './events/logs.js';
import type { InboxItem, InputSpec } from './tasks/interact.js';
import { checkMetricsOptions, RuntimeMetrics, type MetricsSnapshot } from './metrics/metrics.js';
import type { AgentInput, AgentOutput, Task, TaskId, TaskSpec } from './api/tasks.js';
import type { EventType, TaskRecord } from './store/records.js';
import { runtimeStats, type RuntimeStats } from './stats.js';
import { guardedSchedules, type SchedulesApi } from './scheduler/scheduler.js';
import type { KeepAlive } from './keep-alive.js';
import { systemClock, type ClockTimer } from './clock.js';
import { holdOf } from './tasks/holds.js';
import { Lifecycle, type CloseOptions } from './lifecycle.js';
import { RuntimeShell } from './runtime-shell.js';
import type { Engine, LastingParts } from './engine.js';
import { EngineSlot } from './engine-slot.js';
import { checkId } from './ids.js';
import { Endpoints } from './endpoints.js';
import type { Tracing } from './telemetry/tracing.js';

import type { AgentsApi, Runtime } from './api/runtime.js';

export type { CloseOptions, RuntimeState } from './lifecycle.js';
export type { AgentsApi, Runtime } from './api/runtime.js';

/** An embedded Troupe runtime on LMDB (the public type is the {@link Runtime} interface). */
export class LmdbRuntime extends RuntimeShell implements Runtime {
  readonly agents: AgentsApi;
  /** Cron schedules. */
  readonly schedules: SchedulesApi;
  readonly #options: ResolvedOptions;
  readonly #log: Logger;
  readonly #bus: EventBus;
  /** The engine and store as they are now (a store recovery puts new ones in). */
  readonly #slot: EngineSlot;
  readonly #lasting: LastingParts;
  /** Ends a graceful close's wait for running attempts at once (a later `close({ force: true })`). */
  #hurry: (() => void) | undefined;
  /** Set as the store closes: an iteration that reads after it ends with CLOSED, not an LMDB error. */
  #storeClosing = false;

  /** @internal Use {@link createRuntime}. */
  constructor(options: ResolvedOptions, log: Logger, store: Store, bus: EventBus, keepAlive: KeepAlive, tracing?: Tracing) {
    super(new Lifecycle(log), keepAlive, new Endpoints());
    this.#options = options;
    this.#log = log;
    this.#bus = bus;
    const metrics = new RuntimeMetrics(
      {
        agents: () => this.#e.governor.stats().agents,
        attempts: () => this.#e.dispatcher.counts,
        slots: options.threads * options.slotsPerThread,
        rebuildMs: () => this.#slot.rebuild.ms,
        listenerErrors: () => bus.listenerErrors,
        storeStopped: () => this.#slot.recovery.failure !== null,
      },
      { now: () => options.clock.now() },
    );
    bus.observe((events) => {
      for (const event of events) metrics.observe(event);
    });
    this.#lasting = { metrics, logFeed: new LogFeed(), tracing };
    this.#slot = new EngineSlot({ options, log, bus, keepAlive, lasting: this.#lasting, running: () => this.lifecycle.state === 'running' }, store);
    this.schedules = guardedSchedules(() => this.#e.scheduler, (call) => this.assertOpen(`schedules.${call}`));
    this.agents = {
      register: (registration) => {
        this.assertOpen('agents.register');
        return this.#slot.register(validateRegistration(registration, { timeoutMs: options.defaultTimeoutMs, retry: options.defaultRetry, backoff: options.defaultBackoff }));
      },
      list: () => this.#e.registry.list(),
    };
  }

  /** The parts of the current engine (engine.ts). */
  get #e(): Engine {
    return this.#slot.e;
  }

  /** The current store. */
  get #store(): Store {
    return this.#slot.store;
  }

  /**
   * @internal Resolves once every change decided so far is committed, again until no more is
   * pending (troupe/testing's `advance`: what fired timers decided is durable when it resolves).
   */
  async quiesce(): Promise<void> {
    await new Promise((resolve) => setImmediate(resolve));
    await this.#store.settled();
  }

  /** @internal Registers the option agents (validated by createRuntime), rebuilds from disk and starts dispatching. */
  async start(agents: readonly RegisteredAgent[]): Promise<void> {
    await this.#slot.open(agents);
    await this.endpoints.open(this.#options, this.#lasting.metrics, this, this.#log);
    this.lifecycle.set('running', { dataDir: this.#options.dataDir, ...this.#slot.rebuild });
    if (!this.#store.previousShutdownClean) this.#log.warn({ dataDir: this.#options.dataDir }, 'the previous shutdown was not clean: attempts that were running ended as crashed');
    this.keepAlive.open();
  }

  /**
   * Stores a task durably and queues it. Resolves once the commit is flushed. For an agent declared
   * in `Agents`, `input` is checked against its input type and the task carries its output type.
   */
  submit<A extends string = string>(spec: TaskSpec<A>): Promise<Task<AgentOutput<A>, AgentInput<A>>> {
    // The guard written out (no closure per call): this runs once per task.
    try {
      this.assertOpen('submit');
      return this.#e.submitter.submit(spec) as Promise<Task<AgentOutput<A>, AgentInput<A>>>;
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** Stores several tasks in one transaction: all are stored, or (on a validation error) none. */
  submitMany<A extends string = string>(specs: ReadonlyArray<TaskSpec<A>>): Promise<Array<Task<AgentOutput<A>, AgentInput<A>>>> {
    return this.guard('submitMany', () => this.#e.submitter.submitMany(specs) as Promise<Array<Task<AgentOutput<A>, AgentInput<A>>>>);
  }

  /**
   * Sends an input to a task: stored durably (resolves once committed), delivered once, in order,
   * to the agent's `ctx.waitForInput()`. A task waiting with no live attempt resumes with a new run.
   */
  sendInput(id: string, input: InputSpec): Promise<InboxItem> {
    return this.guard('sendInput', () => this.#e.interactions.sendInput(checkId(id, 'sendInput: id'), input));
  }

  /** A metrics snapshot, or the same as Prometheus text with `{ format: 'prometheus' }`. Answers while the store is down, too. */
  metrics(): Promise<MetricsSnapshot>;
  metrics(options: { format: 'prometheus' }): Promise<string>;
  metrics(options?: { format?: 'prometheus' | 'snapshot' }): Promise<MetricsSnapshot | string> {
    try {
      // Not assertOpen: metrics read memory only, and say most while the store is down.
      this.lifecycle.assertRunning('metrics');
      const format = checkMetricsOptions(options);
      return format === 'prometheus' ? this.#lasting.metrics.prometheus() : this.#lasting.metrics.snapshot();
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** The dashboard's URL (with `#token=` when it needs one), once running; undefined when `dashboard` is off. */
  dashboard(): string | undefined {
    return this.endpoints.dashboardUrl;
  }

  /** Where `metricsPort` serves `/metrics` (127.0.0.1), once running; undefined when off. */

  /** A task, with `heldBy` while flow control keeps it back. */
  async get<O = unknown>(id: TaskId<O>): Promise<Task<O>> {
    return this.guard('get', async () => this.#withHold(this.#e.tasks.get(checkId(id, 'get: id'))) as Task<O>);
  }

  /** A page of tasks in submit order; queued ones carry `heldBy` like {@link LmdbRuntime.get}. */
  async list(options?: ListOptions): Promise<TaskPage> {
    return this.guard('list', async () => {
      const page = this.#e.tasks.list(options);
      for (const task of page.tasks) this.#withHold(task);
      return page;
    });
  }

  #withHold(task: Task): Task {
    const hold = holdOf(task, this.#e.holds);
    if (hold) task.heldBy = hold;
    return task;
  }

  /** Resolves when the task is terminal (done, failed, dropped, cancelled) or needs attention. */
  wait<O = unknown>(id: TaskId<O>, options?: WaitOptions): Promise<Task<O>> {
    // The guard written out, as in submit: once per task.
    try {
      this.assertOpen('wait');
      return this.#e.tasks.wait(checkId(id, 'wait: id'), options) as Promise<Task<O>>;
    } catch (error) {
      return Promise.reject(error);
    }
  }

  cancel<O = unknown>(id: TaskId<O>, reason?: string): Promise<Task<O>> {
    return this.guard('cancel', () => this.#e.tasks.cancel(checkId(id, 'cancel: id'), reason) as Promise<Task<O>>);
  }

  retry<O = unknown>(id: TaskId<O>): Promise<Task<O>> {
    return this.guard('retry', () => this.#e.tasks.retry(checkId(id, 'retry: id')) as Promise<Task<O>>);
  }

  /** Replays the event log after `after`, then yields live events, until aborted or closed. */
  events<K extends EventType = EventType>(options?: EventStreamOptions<K>): AsyncGenerator<RuntimeEvent<K>> {
    this.assertOpen('events');
    return this.#bus.iterate(options, this.#e.tasks.firstEventOf((options as { taskId?: unknown } | undefined)?.taskId)) as AsyncGenerator<RuntimeEvent<K>>;
  }

  /** The log lines a task's agent wrote through `ctx.log`, in order; with `follow`, then live until the task is terminal. */
  logs(id: string, options: LogOptions = {}): AsyncGenerator<LogLine> {
    this.assertOpen('logs');
    checkId(id, 'logs: id');
    options = checkLogOptions(options);
    if (!this.#e.tasks.record(id)) throw new TroupeError('NOT_FOUND', `no task ${id}`);
    const logs = () => {
      // The store closes after the iterations end; one asked for its next line after that ends here.
      if (this.#storeClosing) throw new TroupeError('CLOSED', 'logs: the runtime is closed');
      return this.#slot.reads().logs;
    };
    if (!options.follow) return followLogs(logs, id, options, undefined);
    const stop = new AbortController();
    // `ended` must not hold the process by itself: the follow holds it only while it waits for a line.
    const ended = this.#e.tasks.wait(id, { signal: stop.signal }, false).catch(() => undefined);
    return followLogs(logs, id, options, { feed: this.#lasting.logFeed, ended, release: () => stop.abort(), hold: () => this.keepAlive.hold() });
  }

  /** Listens to committed events of one type (or `'*'` for all). Returns an unsubscribe function. */
  on(type: '*', listener: (event: RuntimeEvent) => void): () => void;
  on<K extends EventType>(type: K, listener: (event: RuntimeEvent<K>) => void): () => void;
  on(type: EventType | '*', listener: (event: never) => void): () => void {
    return this.#bus.on(type, listener as (event: RuntimeEvent) => void);
  }

  off(type: EventType | '*', listener: (event: never) => void): void {
    this.#bus.off(type, listener as (event: RuntimeEvent) => void);
  }

  /** Sets an instance's dispatch target (null: no per-instance limit). Resolves once durable. */
  setDispatchTarget(instanceKey: string, target: number | null): Promise<void> {
    return this.guard('setDispatchTarget', async () => {
      checkId(instanceKey, 'setDispatchTarget: instanceKey');
      if (target !== null && !(Number.isSafeInteger(target) && target >= 0)) throw new TroupeError('INVALID_INPUT', 'setDispatchTarget: target must be a non-negative integer or null');
      await this.#e.router.setTarget(instanceKey, target, this.#unseenInstance(instanceKey));
      this.#e.dispatcher.pump();
    });
  }

  /** Clears a degraded instance so it dispatches again. */
  resetInstance(instanceKey: string): Promise<void> {
    return this.guard('resetInstance', async () => {
      await this.#e.router.reset(checkId(instanceKey, 'resetInstance: instanceKey'), this.#unseenInstance(instanceKey));
      this.#e.dispatcher.pump();
    });
  }

  /**
   * An instance no attempt has reached yet (its tasks are queued): described by one of its tasks,
   * so its target can be set before it first dispatches. A scan of the tasks, for a rare call.
   */
  #unseenInstance(instanceKey: string): TaskRecord | undefined {
    if (this.#e.router.get(instanceKey)) return undefined;
    return this.#e.table.filter((task) => task.instanceKey === instanceKey)[0];
  }

  /** Stops dispatch (durably): running attempts carry on, submits are still accepted. */
  freeze(reason?: string): Promise<void> {
    return this.guard('freeze', () => this.#e.controls.freeze(reason));
  }

  /** Resumes dispatch after freeze() or kill(). */
  unfreeze(): Promise<void> {
    return this.guard('unfreeze', () => this.#e.controls.unfreeze());
  }

  /** Freezes and aborts every running attempt; their tasks are requeued. Resolves when none runs. */
  kill(reason?: string): Promise<void> {
    // Held until no attempt runs, even on an unref'd runtime: the caller awaits it.
    return this.guard('kill', () => this.keepAlive.during(() => this.#e.controls.kill(reason)));
  }

  /** Drains now: re-checks agent holds against the clock, runs a supervisor cycle, fills free slots. */
  poke(): void {
    this.assertOpen('poke');
    this.#e.controls.poke();
  }

  /** Removes settled tasks and all they left but their events, in bounded batches (README: Pruning). */
  prune(options?: PruneOptions): Promise<PruneResult> {
    return this.guard('prune', () => this.#e.pruner.prune(options));
  }

  /** Ends an agent's backoff pause early. Resolves true if it was paused. */
  resumeAgent(name: string): Promise<boolean> {
    return this.guard('resumeAgent', () => this.#e.controls.resumeAgent(name));
  }

  /** A consistent copy of the store in a new or empty directory, taken while serving (README: Backups). */
  backup(path: string, options?: { compact?: boolean }): Promise<BackupInfo> {
    return this.guard('backup', () => {
      const { dest, compact } = checkBackupArgs(path, options);
      return this.#store.backup(dest, compact);
    });
  }

  /** Execution instances: live ones and those passivated to disk. */
  instances(): InstanceView[] {
    this.assertOpen('instances');
    return this.#e.router.list();
  }

  /** Counts by state, slots, per-agent queues and attempts. */
  stats(): RuntimeStats {
    return runtimeStats(this.lifecycle.state, this.#e, this.#slot, this.#options);
  }

  protected forced(): void {
    this.#hurry?.();
  }

  /**
   * Stops admission, lets running attempts finish until `timeoutMs`, then interrupts the rest
   * (requeued on the next open without counting against their budget), and closes everything.
   * Every cleanup step runs even if one fails.
   */
  protected closeWith(options: Required<CloseOptions>): Promise<void> {
    // The close holds the process until it is done, even on an unref'd runtime: the caller awaits
    // it, and a process that left half-way would leave the store unclean and its attempts crashed.
    return this.keepAlive.during(() => this.#closeWith(options));
  }

  async #closeWith({ timeoutMs, force }: Required<CloseOptions>): Promise<void> {
    this.lifecycle.set('draining', { timeoutMs, force });
    const failures: unknown[] = [];
    const step = async (name: string, fn: () => unknown) => {
      try {
        await fn();
      } catch (error) {
        failures.push(error);
        this.#log.error({ err: error, step: name }, 'close step failed');
      }
    };
    // Wall time, not the injected clock: a test's ManualClock would never reach the deadline.
    let timer: ClockTimer | undefined;
    const deadline = new Promise<void>((resolve) => {
      if (force) return resolve();
      timer = systemClock.setTimeout(resolve, timeoutMs);
      this.#hurry = resolve;
    });
    await step('store recovery', () => this.#slot.recovery.stop());
    await this.#slot.stop(step, deadline, true);
    this.#hurry = undefined;
    await step('deadline', () => timer && systemClock.clearTimeout(timer));
    await this.endpoints.close(step);
    await step('waits', () => this.#e.tasks.rejectWaits(new TroupeError('CLOSED', 'the runtime closed before the task settled')));
    await step('events', () => this.#bus.close());
    this.#storeClosing = true;
    await step('store', () => this.#store.close(failures.length === 0));
    this.keepAlive.close();
    this.lifecycle.set('closed', { failures: failures.length });
  }

  protected override assertOpen(call: string): void {
    super.assertOpen(call);
    const down = this.#slot.recovery.down;
    if (down) throw down;
  }
}
