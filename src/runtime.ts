/**
 * `createRuntime()`: resolves options, opens the store, builds the engine (engine.ts: every part,
 * in dependency order), rebuilds from disk, and starts. The `Runtime` is the public facade over the
 * engine and owns the lifecycle `starting → running → draining → closed`.
 */
import { checkCallOptions, type ResolvedOptions } from './options.js';
import type { Logger } from './log.js';
import { TroupeError } from './errors.js';
import type { Store } from './store/port.js';
import type { EventBus, EventStreamOptions, RuntimeEvent, RuntimeEventMap } from './events/event-bus.js';
import type { InstanceView } from './router/router.js';
import { validateRegistration, type AgentRegistration, type RegisteredAgent } from './agents/registry.js';
import type { ListOptions, TaskPage, WaitOptions } from './tasks/engine.js';
import { followLogs, LogFeed, type LogLine, type LogOptions } from './events/logs.js';
import type { InboxItem, InputSpec } from './tasks/interact.js';
import { RuntimeMetrics, type MetricsSnapshot } from './metrics/metrics.js';
import type { Task, TaskSpec } from './tasks/spec.js';
import type { TaskState } from '../machines/index.js';
import type { EventType } from './store/records.js';
import { collectStats, type RebuildReport, type RuntimeStats, type StoreFailure } from './stats.js';
import { guardedSchedules, type SchedulesApi } from './scheduler/scheduler.js';
import { flowKeyOf } from './tasks/parts.js';
import type { AgentFlowState } from './store/records.js';
import type { KeepAlive } from './keep-alive.js';
import type { ClockTimer } from './clock.js';
import { holdOf } from './tasks/holds.js';
import { Lifecycle, validateCloseOptions, type CloseOptions, type RuntimeState } from './lifecycle.js';
import { buildEngine, type Engine, type LastingParts } from './engine.js';
import { StoreRecovery } from './recovery.js';
import type { RebuildOptions } from './tasks/rebuild.js';
import { checkId } from './ids.js';

export type { CloseOptions, RuntimeState } from './lifecycle.js';

/** Agent registration API (`rt.agents`). */
export interface AgentsApi {
  /** Registers (or replaces) an agent. Throws INVALID_OPTIONS naming the bad field. */
  register(registration: AgentRegistration): RegisteredAgent;
  list(): RegisteredAgent[];
}

/** An embedded Troupe runtime. */
export class Runtime implements AsyncDisposable {
  readonly agents: AgentsApi;
  /** Cron schedules. */
  readonly schedules: SchedulesApi;
  readonly #options: ResolvedOptions;
  readonly #log: Logger;
  /** The store; a new one after a store recovery (recovery.ts). */
  #store: Store;
  readonly #bus: EventBus;
  /** The parts, built in dependency order (engine.ts); a new engine after a store recovery. */
  #e: Engine;
  /** Set once the engine is stopped (close, or a store recovery's first try). */
  #engineStopped = false;
  readonly #lasting: LastingParts;
  readonly #recovery: StoreRecovery;
  #metricsServer: { port: number; close(): Promise<void> } | undefined;
  readonly #lifecycle: Lifecycle;
  readonly #keepAlive: KeepAlive;
  /** Ends a graceful close's wait for running attempts at once (a later `close({ force: true })`). */
  #hurry: (() => void) | undefined;
  #rebuild: RebuildReport = { previousShutdownClean: true, active: 0, crashed: 0, interrupted: 0, timers: 0, ms: 0 };
  #closing: Promise<void> | undefined;

  /** @internal Use {@link createRuntime}. */
  constructor(options: ResolvedOptions, log: Logger, store: Store, bus: EventBus, keepAlive: KeepAlive) {
    this.#options = options;
    this.#log = log;
    this.#lifecycle = new Lifecycle(log);
    this.#keepAlive = keepAlive;
    this.#store = store;
    this.#bus = bus;
    const metrics = new RuntimeMetrics(
      {
        agents: () => this.#e.governor.stats().agents,
        attempts: () => this.#e.dispatcher.counts,
        slots: options.threads * options.slotsPerThread,
        rebuildMs: () => this.#rebuild.ms,
        listenerErrors: () => bus.listenerErrors,
        storeStopped: () => this.#recovery.failure !== null,
      },
      { now: () => options.clock.now() },
    );
    bus.observe((events) => {
      for (const event of events) metrics.observe(event);
    });
    this.#lasting = { metrics, logFeed: new LogFeed() };
    this.#e = buildEngine(options, log, store, keepAlive, this.#lasting);
    this.#recovery = new StoreRecovery({
      clock: options.clock,
      retryMs: options.storeRetryMs,
      log,
      running: () => this.#lifecycle.state === 'running',
      stopEngine: () => this.#stopEngine(this.#logStep, Promise.resolve(), false),
      reopen: () => {
        // Replays of the event log stop reading the store that closes now (and fail with the outage).
        this.#bus.detach(this.#recovery.down ?? new TroupeError('STORE_FAILED', 'the store is being opened again'));
        return this.#store.reopen();
      },
      resume: (reopened, failure, back) => this.#resume(reopened, failure, back),
    });
    this.#watch(store);
    this.schedules = guardedSchedules(() => this.#e.scheduler, (call) => this.#assertOpen(`schedules.${call}`));
    this.agents = {
      register: (registration) => {
        this.#assertOpen('agents.register');
        return this.#register(validateRegistration(registration, { timeoutMs: options.defaultTimeoutMs, retry: options.defaultRetry, backoff: options.defaultBackoff }));
      },
      list: () => this.#e.registry.list(),
    };
  }

  #register(agent: RegisteredAgent): RegisteredAgent {
    this.#e.registry.set(agent);
    this.#e.governor.setAgent(agent.name, { total: agent.concurrency, models: agent.models });
    const stored = this.#store.read.control.get(flowKeyOf(agent.name)) as AgentFlowState | undefined;
    this.#e.flow.configure(agent, stored, this.#options.clock.now());
    this.#e.notifier.work();
    return agent;
  }

  /**
   * A failed commit stops the store (fail-stop): nothing more can be made durable, so nothing more
   * starts and every step is refused; `store.failed` is announced (written once the store is back)
   * and the recovery starts trying to open the data dir again.
   */
  #watch(store: Store): void {
    store.onFailure((failure) => {
      if (store !== this.#store) return;
      this.#e.dispatcher.halt();
      // stats() counts settled tasks from one scan of the store, made on first use: make it now,
      // while the failed store can still be read, so stats() answers while it is down.
      this.#e.table.countsByState();
      this.#log.error({ err: failure.cause }, failure.message);
      // A store opened again that fails before the runtime is back is the same outage: one event.
      const fresh = this.#recovery.failure === null;
      this.#recovery.failed(failure);
      if (fresh) this.#bus.announce({ seq: store.durableSeq, at: this.#recovery.failure!.since, type: 'store.failed', data: { message: failure.message } });
    });
  }

  /** A close or recovery step: what it throws is logged, and the steps after it still run. */
  readonly #logStep = async (name: string, fn: () => unknown): Promise<void> => {
    try {
      await fn();
    } catch (error) {
      this.#log.error({ err: error, step: name }, 'stopping the engine: a step failed');
    }
  };

  /** The outage whose `store.failed` is written already (a later try of the same outage writes it no more). */
  #failureWritten: StoreFailure | undefined;

  /** Registers agents, rebuilds from the store and starts dispatching: at start, and on a store recovery. */
  async #open(agents: readonly RegisteredAgent[], options?: RebuildOptions): Promise<void> {
    this.#e.controls.load();
    for (const agent of agents) this.#register(agent);
    const started = performance.now();
    const rebuilt = await this.#e.tasks.rebuild(options);
    this.#e.scheduler.start();
    this.#rebuild = { previousShutdownClean: this.#store.previousShutdownClean, ...rebuilt, ms: performance.now() - started };
  }

  /**
   * The store is open again after a failure (recovery.ts): a new engine on it, the failure and the
   * recovery first in its event log, the agents registered again, the attempts that were running
   * requeued without counting, and the pending waits carried over.
   */
  async #resume(store: Store, failure: Readonly<StoreFailure>, back: () => void): Promise<void> {
    const previous = this.#e;
    this.#store = store;
    this.#bus.attach(store.read.events);
    this.#watch(store);
    this.#e = buildEngine(this.#options, this.#log, store, this.#keepAlive, this.#lasting);
    this.#engineStopped = false;
    // The first commit on the store opened again, so `store.failed` takes the seq it was announced with.
    if (this.#failureWritten !== failure) {
      await store.commit((w) => w.event('store.failed', { at: failure.since, data: { message: failure.message } }));
      this.#failureWritten = failure;
    }
    await this.#open(previous.registry.list(), { interrupted: true });
    this.#e.tasks.adopt(previous.tasks.handOver());
    back();
    const now = this.#options.clock.now();
    await store.commit((w) => w.event('store.recovered', { at: now, data: { since: failure.since, downMs: now - failure.since, retries: failure.retries } }));
  }

  /** @internal Registers the option agents (validated by createRuntime), rebuilds from disk and starts dispatching. */
  async start(agents: readonly RegisteredAgent[]): Promise<void> {
    await this.#open(agents);
    if (this.#options.metricsPort > 0) this.#metricsServer = await this.#lasting.metrics.serve(this.#options.metricsPort);
    this.#lifecycle.set('running', { dataDir: this.#options.dataDir, ...this.#rebuild });
    if (!this.#store.previousShutdownClean) this.#log.warn({ dataDir: this.#options.dataDir }, 'the previous shutdown was not clean: attempts that were running ended as crashed');
    this.#keepAlive.open();
  }

  /** Where the runtime is in its lifecycle. */
  get state(): RuntimeState {
    return this.#lifecycle.state;
  }

  /**
   * Lets the process exit while this runtime is open and nothing else keeps it alive, as
   * `net.Server#unref()` does. A pending `wait()` (or an `events()` / `logs({ follow })` iteration
   * waiting for its next item) still keeps it alive until it ends. Returns the runtime.
   */
  unref(): this {
    this.#keepAlive.unref();
    return this;
  }

  /** Undoes {@link Runtime.unref}: the open runtime keeps the process alive again (the default). Returns the runtime. */
  ref(): this {
    this.#keepAlive.ref();
    return this;
  }

  /** Stores a task durably and queues it. Resolves once the commit is flushed. */
  submit(spec: TaskSpec): Promise<Task> {
    // The guard written out (no closure per call): this runs once per task.
    try {
      this.#assertOpen('submit');
      return this.#e.submitter.submit(spec);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** Stores several tasks in one transaction: all are stored, or (on a validation error) none. */
  submitMany(specs: readonly TaskSpec[]): Promise<Task[]> {
    return this.#guard('submitMany', () => this.#e.submitter.submitMany(specs));
  }

  /**
   * Sends an input to a task: stored durably (resolves once committed), delivered once, in order,
   * to the agent's `ctx.waitForInput()`. A task waiting with no live attempt resumes with a new run.
   */
  sendInput(id: string, input: InputSpec): Promise<InboxItem> {
    return this.#guard('sendInput', () => this.#e.interactions.sendInput(checkId(id, 'sendInput: id'), input));
  }

  /** A metrics snapshot, or the same as Prometheus text with `{ format: 'prometheus' }`. Answers while the store is down, too. */
  metrics(): Promise<MetricsSnapshot>;
  metrics(options: { format: 'prometheus' }): Promise<string>;
  metrics(options?: { format?: 'prometheus' | 'snapshot' }): Promise<MetricsSnapshot | string> {
    try {
      // Not #assertOpen: metrics read memory only, and say most while the store is down.
      this.#lifecycle.assertRunning('metrics');
      checkCallOptions(options, ['format'], 'metrics');
      const format = options?.format ?? 'snapshot';
      if (format !== 'prometheus' && format !== 'snapshot') throw new TroupeError('INVALID_OPTIONS', `metrics: format must be 'prometheus' or 'snapshot', not ${JSON.stringify(format)}`);
      return format === 'prometheus' ? this.#lasting.metrics.prometheus() : this.#lasting.metrics.snapshot();
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** Where `metricsPort` serves `/metrics` (127.0.0.1), once running; undefined when off. */
  get metricsPort(): number | undefined {
    return this.#metricsServer?.port;
  }

  /** A task, with `heldBy` while flow control keeps it back. */
  async get(id: string): Promise<Task> {
    return this.#guard('get', async () => this.#withHold(this.#e.tasks.get(checkId(id, 'get: id'))));
  }

  /** A page of tasks in submit order; queued ones carry `heldBy` like {@link Runtime.get}. */
  async list(options?: ListOptions): Promise<TaskPage> {
    return this.#guard('list', async () => {
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
  wait(id: string, options?: WaitOptions): Promise<Task> {
    // The guard written out, as in submit: once per task.
    try {
      this.#assertOpen('wait');
      return this.#e.tasks.wait(checkId(id, 'wait: id'), options);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  cancel(id: string, reason?: string): Promise<Task> {
    return this.#guard('cancel', () => this.#e.tasks.cancel(checkId(id, 'cancel: id'), reason));
  }

  retry(id: string): Promise<Task> {
    return this.#guard('retry', () => this.#e.tasks.retry(checkId(id, 'retry: id')));
  }

  /** Replays the event log after `after`, then yields live events, until aborted or closed. */
  events(options?: EventStreamOptions): AsyncGenerator<RuntimeEvent> {
    this.#assertOpen('events');
    return this.#bus.iterate(options);
  }

  /** The log lines a task's agent wrote through `ctx.log`, in order; with `follow`, then live until the task is terminal. */
  logs(id: string, options: LogOptions = {}): AsyncGenerator<LogLine> {
    this.#assertOpen('logs');
    checkId(id, 'logs: id');
    if (!this.#e.tasks.record(id)) throw new TroupeError('NOT_FOUND', `no task ${id}`);
    const logs = () => this.#reads().logs;
    if (!options.follow) return followLogs(logs, id, options, undefined);
    const stop = new AbortController();
    // `ended` must not hold the process by itself: the follow holds it only while it waits for a line.
    const ended = this.#e.tasks.wait(id, { signal: stop.signal }, false).catch(() => undefined);
    return followLogs(logs, id, options, { feed: this.#lasting.logFeed, ended, release: () => stop.abort(), hold: () => this.#keepAlive.hold() });
  }

  /** Listens to committed events of one type (or `'*'` for all). Returns an unsubscribe function. */
  on(type: '*', listener: RuntimeEventMap['*']): () => void;
  on<K extends EventType>(type: K, listener: RuntimeEventMap[K]): () => void;
  on(type: EventType | '*', listener: (event: never) => void): () => void {
    return this.#bus.on(type, listener as (event: RuntimeEvent) => void);
  }

  off(type: EventType | '*', listener: (event: never) => void): void {
    this.#bus.off(type, listener as (event: RuntimeEvent) => void);
  }

  /** Sets an instance's dispatch target (null: no per-instance limit). Resolves once durable. */
  setDispatchTarget(instanceKey: string, target: number | null): Promise<void> {
    return this.#guard('setDispatchTarget', async () => {
      checkId(instanceKey, 'setDispatchTarget: instanceKey');
      if (target !== null && !(Number.isSafeInteger(target) && target >= 0)) throw new TroupeError('INVALID_INPUT', 'setDispatchTarget: target must be a non-negative integer or null');
      await this.#e.router.setTarget(instanceKey, target);
      this.#e.dispatcher.pump();
    });
  }

  /** Clears a degraded instance so it dispatches again. */
  resetInstance(instanceKey: string): Promise<void> {
    return this.#guard('resetInstance', async () => {
      await this.#e.router.reset(checkId(instanceKey, 'resetInstance: instanceKey'));
      this.#e.dispatcher.pump();
    });
  }

  /** Stops dispatch (durably): running attempts carry on, submits are still accepted. */
  freeze(reason?: string): Promise<void> {
    return this.#guard('freeze', () => this.#e.controls.freeze(reason));
  }

  /** Resumes dispatch after freeze() or kill(). */
  unfreeze(): Promise<void> {
    return this.#guard('unfreeze', () => this.#e.controls.unfreeze());
  }

  /** Freezes and aborts every running attempt; their tasks are requeued. Resolves when none runs. */
  kill(reason?: string): Promise<void> {
    return this.#guard('kill', () => this.#e.controls.kill(reason));
  }

  /** Drains now: re-checks agent holds against the clock, runs a supervisor cycle, fills free slots. */
  poke(): void {
    this.#assertOpen('poke');
    this.#e.controls.poke();
  }

  /** Ends an agent's backoff pause early. Resolves true if it was paused. */
  resumeAgent(name: string): Promise<boolean> {
    return this.#guard('resumeAgent', () => this.#e.controls.resumeAgent(name));
  }

  /** Execution instances: live ones and those passivated to disk. */
  instances(): InstanceView[] {
    this.#assertOpen('instances');
    return this.#e.router.list();
  }

  /** Counts by state, slots, per-agent queues and attempts. */
  stats(): RuntimeStats {
    return collectStats({
      state: this.#lifecycle.state,
      counts: this.#lifecycle.state === 'closed' ? undefined : this.#e.table.countsByState(),
      governor: this.#e.governor.stats(),
      attempts: this.#e.dispatcher.counts,
      slots: this.#options.threads * this.#options.slotsPerThread,
      prefetch: { ...this.#e.dispatcher.prefetch, max: this.#options.prefetch },
      liveInstances: this.#e.router.liveCount,
      delayed: this.#e.table.count('queued' satisfies TaskState) - this.#e.governor.queued,
      rebuild: this.#rebuild,
      owners: this.#lifecycle.state === 'closed' ? undefined : this.#e.table.countsByOwner(),
      flow: (agent) => this.#e.flow.view(agent, this.#options.clock.now()),
      control: this.#e.controls.state,
      cycles: this.#e.cycle.cycles,
      storeFailure: this.#recovery.failure,
    });
  }

  /**
   * Stops admission, lets running attempts finish until `timeoutMs`, then interrupts the rest
   * (requeued on the next open without counting against their budget), and closes everything.
   * Options are validated before anything happens (a bad call rejects and changes nothing). Every
   * cleanup step runs even if one fails. A second call returns the same promise; one with
   * `force: true` also stops waiting for running attempts.
   */
  close(options?: CloseOptions): Promise<void> {
    let resolved: Required<CloseOptions>;
    try {
      resolved = validateCloseOptions(options);
    } catch (error) {
      return Promise.reject(error);
    }
    if (resolved.force) this.#hurry?.();
    this.#closing ??= this.#close(resolved);
    return this.#closing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  async #close({ timeoutMs, force }: Required<CloseOptions>): Promise<void> {
    this.#lifecycle.set('draining', { timeoutMs, force });
    const failures: unknown[] = [];
    const step = async (name: string, fn: () => unknown) => {
      try {
        await fn();
      } catch (error) {
        failures.push(error);
        this.#log.error({ err: error, step: name }, 'close step failed');
      }
    };
    const clock = this.#options.clock;
    let timer: ClockTimer | undefined;
    const deadline = new Promise<void>((resolve) => {
      if (force) return resolve();
      timer = clock.setTimeout(resolve, timeoutMs);
      this.#hurry = resolve;
    });
    await step('store recovery', () => this.#recovery.stop());
    await this.#stopEngine(step, deadline, true);
    this.#hurry = undefined;
    await step('deadline', () => timer && clock.clearTimeout(timer));
    await step('metrics', () => this.#metricsServer?.close());
    await step('waits', () => this.#e.tasks.rejectWaits(new TroupeError('CLOSED', 'the runtime closed before the task settled')));
    await step('events', () => this.#bus.close());
    await step('store', () => this.#store.close(failures.length === 0));
    this.#keepAlive.close();
    this.#lifecycle.set('closed', { failures: failures.length });
  }

  /**
   * Stops the engine once (close; a store recovery's first try): schedules, then dispatch (running
   * attempts get until `deadline`, then are interrupted), timers, the pool. `flush` writes the live
   * instances out, which a failed store cannot.
   */
  async #stopEngine(step: (name: string, fn: () => unknown) => Promise<void>, deadline: Promise<void>, flush: boolean): Promise<void> {
    if (this.#engineStopped) return;
    this.#engineStopped = true;
    const e = this.#e;
    await step('schedules', () => e.scheduler.stop());
    await step('drain', () => e.dispatcher.drain(deadline));
    // Settlements of the drained attempts wake their waiters once committed: let them land first.
    await step('commits', () => this.#store.settled());
    await step('timers', () => e.timers.stop());
    await step('supervisor', () => e.supervisor.stop());
    await step('flow timers', () => e.flow.stop());
    if (flush && !this.#store.failure) await step('instances', () => e.router.flush());
    await step('pool', () => e.pool.destroy());
  }

  /** The store's reads as they are now; STORE_FAILED while it is down (an iteration reads through this). */
  #reads(): Store['read'] {
    const down = this.#recovery.down;
    if (down) throw down;
    return this.#store.read;
  }

  #assertOpen(call: string): void {
    this.#lifecycle.assertRunning(call);
    const down = this.#recovery.down;
    if (down) throw down;
  }

  /** Runs a call of the public API if the runtime is running; anything it throws becomes the rejection. */
  #guard<T>(call: string, fn: () => Promise<T>): Promise<T> {
    try {
      this.#assertOpen(call);
      return fn();
    } catch (error) {
      return Promise.reject(error);
    }
  }
}
