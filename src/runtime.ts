/**
 * `createRuntime()`: the composition root. It resolves options, opens the store, starts the pool,
 * router, governor and timers, rebuilds from disk, and owns the lifecycle
 * `starting → running → draining → closed`.
 */
import { join } from 'node:path';
import { createIdGenerator } from './ids.js';
import { resolveOptions, type ResolvedOptions, type RuntimeOptions } from './options.js';
import { resolveLogger, type Logger } from './log.js';
import { TroupeError } from './errors.js';
import { openStore } from './store/lmdb/store.js';
import type { Store } from './store/port.js';
import { EventBus, type EventStreamOptions, type RuntimeEvent, type RuntimeEventMap } from './events/event-bus.js';
import { createGovernor, type Governor } from './governor/governor.js';
import { createRouter, type InstanceView, type Router } from './router/router.js';
import { createPiscinaPool, type AgentPool } from './pool/pool.js';
import { createTimerWheel, type TimerWheel } from './timers/timer-wheel.js';
import { AgentRegistry, validateRegistration, type AgentRegistration, type RegisteredAgent } from './agents/registry.js';
import { TaskTable } from './tasks/task-table.js';
import { Dispatcher, heartbeatMsOf } from './tasks/dispatcher.js';
import { Submitter } from './tasks/submit.js';
import { TaskEngine, type ListOptions, type TaskPage, type WaitOptions } from './tasks/engine.js';
import type { Kernel } from './tasks/kernel.js';
import { followLogs, LogFeed, type LogLine, type LogOptions } from './events/logs.js';
import { Interactions, type InboxItem, type InputSpec } from './tasks/interact.js';
import { RuntimeMetrics, type MetricsSnapshot } from './metrics/metrics.js';
import type { Task, TaskSpec } from './tasks/spec.js';
import type { TaskState } from '../machines/index.js';
import type { EventType } from './store/records.js';
import { collectStats, type RebuildReport, type RuntimeStats } from './stats.js';
import { createSupervisor, type Supervisor } from './supervisor/supervisor.js';
import { SupervisorCycle } from './supervisor/cycle.js';
import { FlowControl } from './governor/flow.js';
import { RuntimeControls } from './controls.js';
import { Scheduler, guardedSchedules, type SchedulesApi } from './scheduler/scheduler.js';
import { flowKeyOf } from './tasks/kernel.js';
import type { AgentFlowState } from './store/records.js';
import { KeepAlive } from './keep-alive.js';
import { Pipeline } from './pipeline/pipeline.js';
import { TaskMemory } from './pipeline/memory.js';
import { EffectExecutor } from './pipeline/executor.js';
import { Notifier } from './pipeline/notifier.js';
import { fireTemplate, taskOfKey } from './tasks/template.js';
import { isTerminal } from '../machines/index.js';
import { cleanWorkspaceAt } from './tasks/kernel.js';
import type { ClockTimer } from './clock.js';
import { holdOf, type HoldSources } from './tasks/holds.js';
import { Lifecycle, validateCloseOptions, type CloseOptions, type RuntimeState } from './lifecycle.js';

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
  readonly #store: Store;
  readonly #bus: EventBus;
  readonly #governor: Governor;
  readonly #router: Router;
  readonly #pool: AgentPool;
  readonly #timers: TimerWheel;
  readonly #registry: AgentRegistry;
  readonly #table: TaskTable;
  readonly #dispatcher: Dispatcher;
  readonly #submitter: Submitter;
  readonly #engine: TaskEngine;
  readonly #supervisor: Supervisor;
  readonly #flow: FlowControl;
  readonly #cycle: SupervisorCycle;
  readonly #controls: RuntimeControls;
  readonly #scheduler: Scheduler;
  readonly #interactions: Interactions;
  /** Internal news (a task settled, an attempt ended), never the public bus. */
  readonly #notifier: Notifier;
  readonly #logFeed = new LogFeed();
  readonly #metrics: RuntimeMetrics;
  #metricsServer: { port: number; close(): Promise<void> } | undefined;
  readonly #lifecycle: Lifecycle;
  readonly #keepAlive: KeepAlive;
  /** Ends a graceful close's wait for running attempts at once (a later `close({ force: true })`). */
  #hurry: (() => void) | undefined;
  readonly #holds: HoldSources;
  #rebuild: RebuildReport = { previousShutdownClean: true, active: 0, crashed: 0, timers: 0, ms: 0 };
  #closing: Promise<void> | undefined;

  /** @internal Use {@link createRuntime}. */
  constructor(options: ResolvedOptions, log: Logger, store: Store, bus: EventBus, keepAlive: KeepAlive) {
    this.#options = options;
    this.#log = log;
    this.#lifecycle = new Lifecycle(log);
    this.#keepAlive = keepAlive;
    this.#store = store;
    this.#bus = bus;
    this.#registry = new AgentRegistry();
    this.#table = new TaskTable(store.read.tasks);
    const slots = options.threads * options.slotsPerThread;
    this.#router = createRouter({
      store,
      clock: options.clock,
      log: log.child({ component: 'router' }),
      maxLiveInstances: options.maxLiveInstances,
      failedAttemptThreshold: options.failedAttemptThreshold,
      hasQueuedWork: () => false,
    });
    this.#governor = createGovernor({ slots: slots + options.prefetch, instanceAdmits: (key) => this.#router.admits(key) });
    this.#pool = (options.createPool ?? createPiscinaPool)({
      threads: options.threads,
      slotsPerThread: options.slotsPerThread,
      heartbeatMs: heartbeatMsOf(options.leaseMs),
      onError: (error) => log.error({ err: error }, 'worker thread error'),
    });
    // Internal news first: the parts built below subscribe to what they act on, so nothing here
    // reaches for a part built after it.
    const notifier = (this.#notifier = new Notifier((error, what) => log.error({ err: error, notification: what }, 'an internal listener failed')));
    this.#timers = createTimerWheel(options.clock, (timer) => notifier.timerFired(timer));
    this.#flow = new FlowControl({
      clock: options.clock,
      governor: this.#governor,
      onRelease: () => notifier.work(),
      onPauseEnded: (agent, state, at) => notifier.pauseEnded(agent, state, at),
    });
    const executor = new EffectExecutor(log.child({ component: 'executor' }));
    const timers = this.#timers;
    executor.handle({
      notify: (taskId) => this.#notify(taskId),
      arm: (timer) => timers.add(timer),
      disarm: (timer) => void timers.remove(timer.id),
      cleanWorkspace: (taskId, workspace, run) => cleanWorkspaceAt(log, taskId, workspace, run),
    });
    const pipeline = new Pipeline({
      store,
      clock: options.clock,
      random: options.random,
      nextId: createIdGenerator(() => options.clock.now()),
      memory: new TaskMemory(this.#table, this.#governor, () => notifier.work()),
      executor,
      log,
    });
    const kernel: Kernel = {
      pipeline,
      notifier: this.#notifier,
      options,
      store,
      clock: options.clock,
      log,
      governor: this.#governor,
      router: this.#router,
      pool: this.#pool,
      agents: this.#registry,
      timers: this.#timers,
      table: this.#table,
      flow: this.#flow,
      logs: this.#logFeed,
    };
    this.#dispatcher = new Dispatcher(kernel, executor);
    this.#submitter = new Submitter(kernel);
    const submitter = this.#submitter;
    this.#interactions = new Interactions(kernel, this.#dispatcher, (specs, where) => submitter.submitMany(specs, where));
    this.#engine = new TaskEngine(kernel, this.#dispatcher, this.#interactions, keepAlive);
    this.#cycle = new SupervisorCycle(kernel);
    this.#supervisor = createSupervisor({
      clock: options.clock,
      log: log.child({ component: 'supervisor' }),
      dispatcher: this.#dispatcher,
      sweepMs: Math.max(10, Math.min(1_000, Math.floor(options.leaseMs / 4))),
      cycle: this.#cycle,
      intervalMs: options.supervisorIntervalMs,
      hasQueued: () => this.#governor.queued > 0,
    });
    const supervisor = this.#supervisor;
    notifier.onWork(() => supervisor.poke());
    notifier.onBusy(() => supervisor.poke());
    this.#controls = new RuntimeControls(kernel, { dispatcher: this.#dispatcher, cycleNow: () => supervisor.cycleNow() });
    this.#scheduler = new Scheduler({
      store,
      clock: options.clock,
      log: log.child({ component: 'scheduler' }),
      pipeline,
      checkTask: (task) => this.#submitter.check(task),
      template: (task) => fireTemplate(kernel, task),
      taskOfKey: (key) => taskOfKey(kernel, key),
      admission: () => ({ queued: this.#table.count('queued'), maxQueued: options.maxQueued }),
      workspacesDir: join(options.dataDir, 'workspaces'),
      taskState: (id) => this.#engine.record(id)?.state,
    });
    const scheduler = this.#scheduler;
    executor.handle({ armSchedule: (scheduleId, due) => scheduler.armSchedule(scheduleId, due) });
    this.#notifier.onSettled((taskId) => this.#scheduler.onSettled(taskId));
    this.#notifier.onSettled((taskId) => this.#interactions.onSettled(taskId));
    this.#notifier.onAttemptEnded((taskId, attemptId) => this.#interactions.attemptEnded(taskId, attemptId));
    this.schedules = guardedSchedules(this.#scheduler, (call) => this.#assertOpen(`schedules.${call}`));
    this.#holds = {
      now: () => options.clock.now(),
      frozen: () => this.#controls.state.frozen,
      inQueue: (taskId) => this.#governor.has(taskId),
      flow: (agent, now) => this.#flow.view(agent, now),
      instance: (key) => this.#router.get(key),
    };
    const interactions = this.#interactions;
    this.#pool.connect({ ...this.#dispatcher.host, call: (attemptId, token, call) => interactions.call(attemptId, token, call) });
    this.#metrics = new RuntimeMetrics(
      {
        agents: () => this.#governor.stats().agents,
        attempts: () => this.#dispatcher.counts,
        slots,
        rebuildMs: () => this.#rebuild.ms,
      },
      { now: () => options.clock.now() },
    );
    const metrics = this.#metrics;
    bus.observe((events) => {
      for (const event of events) metrics.observe(event);
    });
    notifier.onRefused(() => metrics.rejected());
    if (executor.unhandled.length > 0) throw new Error(`no handler for effects: ${executor.unhandled.join(', ')}`);
    this.agents = {
      register: (registration) => {
        this.#assertOpen('agents.register');
        return this.#register(validateRegistration(registration, { timeoutMs: options.defaultTimeoutMs, retry: options.defaultRetry, backoff: options.defaultBackoff }));
      },
      list: () => this.#registry.list(),
    };
  }

  /**
   * A task reached a state its watchers wait for (the notify effect, after the commit): wake them; a
   * settled one leaves the table, and the parts that follow settled tasks hear of it.
   */
  #notify(taskId: string): void {
    const task = this.#table.get(taskId);
    if (!task) return;
    const settled = isTerminal(task.state);
    if (settled) this.#table.retire(task);
    this.#table.notify(task);
    if (settled) this.#notifier.settled(taskId);
  }

  #register(agent: RegisteredAgent): RegisteredAgent {
    this.#registry.set(agent);
    this.#governor.setAgent(agent.name, { total: agent.concurrency, models: agent.models });
    const stored = this.#store.read.control.get(flowKeyOf(agent.name)) as AgentFlowState | undefined;
    this.#flow.configure(agent, stored, this.#options.clock.now());
    this.#notifier.work();
    return agent;
  }

  /** @internal Registers the option agents (validated by createRuntime), rebuilds from disk and starts dispatching. */
  async start(agents: readonly RegisteredAgent[]): Promise<void> {
    this.#controls.load();
    for (const agent of agents) this.#register(agent);
    const started = performance.now();
    const rebuilt = await this.#engine.rebuild();
    this.#scheduler.start();
    this.#rebuild = { previousShutdownClean: this.#store.previousShutdownClean, ...rebuilt, ms: performance.now() - started };
    if (this.#options.metricsPort > 0) this.#metricsServer = await this.#metrics.serve(this.#options.metricsPort);
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
    return this.#guard('submit', () => this.#submitter.submit(spec));
  }

  /** Stores several tasks in one transaction: all are stored, or (on a validation error) none. */
  submitMany(specs: readonly TaskSpec[]): Promise<Task[]> {
    return this.#guard('submitMany', () => this.#submitter.submitMany(specs));
  }

  /**
   * Sends an input to a task: stored durably (resolves once committed), delivered once, in order,
   * to the agent's `ctx.waitForInput()`. A task waiting with no live attempt resumes with a new run.
   */
  sendInput(id: string, input: InputSpec): Promise<InboxItem> {
    return this.#guard('sendInput', () => this.#interactions.sendInput(id, input));
  }

  /** A metrics snapshot, or the same as Prometheus text with `{ format: 'prometheus' }`. */
  metrics(): Promise<MetricsSnapshot>;
  metrics(options: { format: 'prometheus' }): Promise<string>;
  metrics(options?: { format?: 'prometheus' | 'snapshot' }): Promise<MetricsSnapshot | string> {
    return this.#guard<MetricsSnapshot | string>('metrics', () => (options?.format === 'prometheus' ? this.#metrics.prometheus() : this.#metrics.snapshot()));
  }

  /** Where `metricsPort` serves `/metrics` (127.0.0.1), once running; undefined when off. */
  get metricsPort(): number | undefined {
    return this.#metricsServer?.port;
  }

  /** A task, with `heldBy` while flow control keeps it back. */
  async get(id: string): Promise<Task> {
    return this.#guard('get', async () => this.#withHold(this.#engine.get(id)));
  }

  /** A page of tasks in submit order; queued ones carry `heldBy` like {@link Runtime.get}. */
  async list(options?: ListOptions): Promise<TaskPage> {
    return this.#guard('list', async () => {
      const page = this.#engine.list(options);
      for (const task of page.tasks) this.#withHold(task);
      return page;
    });
  }

  #withHold(task: Task): Task {
    const hold = holdOf(task, this.#holds);
    if (hold) task.heldBy = hold;
    return task;
  }

  /** Resolves when the task is terminal (done, failed, dropped, cancelled) or needs attention. */
  wait(id: string, options?: WaitOptions): Promise<Task> {
    return this.#guard('wait', () => this.#engine.wait(id, options));
  }

  cancel(id: string, reason?: string): Promise<Task> {
    return this.#guard('cancel', () => this.#engine.cancel(id, reason));
  }

  retry(id: string): Promise<Task> {
    return this.#guard('retry', () => this.#engine.retry(id));
  }

  /** Replays the event log after `after`, then yields live events, until aborted or closed. */
  events(options?: EventStreamOptions): AsyncGenerator<RuntimeEvent> {
    this.#assertOpen('events');
    return this.#bus.iterate(options);
  }

  /** The log lines a task's agent wrote through `ctx.log`, in order; with `follow`, then live until the task is terminal. */
  logs(id: string, options: LogOptions = {}): AsyncGenerator<LogLine> {
    this.#assertOpen('logs');
    if (!this.#engine.record(id)) throw new TroupeError('NOT_FOUND', `no task ${id}`);
    if (!options.follow) return followLogs(this.#store.read.logs, id, options, undefined);
    const stop = new AbortController();
    // `ended` must not hold the process by itself: the follow holds it only while it waits for a line.
    const ended = this.#engine.wait(id, { signal: stop.signal }, false).catch(() => undefined);
    return followLogs(this.#store.read.logs, id, options, { feed: this.#logFeed, ended, release: () => stop.abort(), hold: () => this.#keepAlive.hold() });
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
      if (typeof instanceKey !== 'string' || instanceKey.length === 0) throw new TroupeError('INVALID_INPUT', 'setDispatchTarget: instanceKey must be a non-empty string');
      if (target !== null && !(Number.isSafeInteger(target) && target >= 0)) throw new TroupeError('INVALID_INPUT', 'setDispatchTarget: target must be a non-negative integer or null');
      await this.#router.setTarget(instanceKey, target);
      this.#dispatcher.pump();
    });
  }

  /** Clears a degraded instance so it dispatches again. */
  resetInstance(instanceKey: string): Promise<void> {
    return this.#guard('resetInstance', async () => {
      await this.#router.reset(instanceKey);
      this.#dispatcher.pump();
    });
  }

  /** Stops dispatch (durably): running attempts carry on, submits are still accepted. */
  freeze(reason?: string): Promise<void> {
    return this.#guard('freeze', () => this.#controls.freeze(reason));
  }

  /** Resumes dispatch after freeze() or kill(). */
  unfreeze(): Promise<void> {
    return this.#guard('unfreeze', () => this.#controls.unfreeze());
  }

  /** Freezes and aborts every running attempt; their tasks are requeued. Resolves when none runs. */
  kill(reason?: string): Promise<void> {
    return this.#guard('kill', () => this.#controls.kill(reason));
  }

  /** Drains now: re-checks agent holds against the clock, runs a supervisor cycle, fills free slots. */
  poke(): void {
    this.#assertOpen('poke');
    this.#controls.poke();
  }

  /** Ends an agent's backoff pause early. Resolves true if it was paused. */
  resumeAgent(name: string): Promise<boolean> {
    return this.#guard('resumeAgent', () => this.#controls.resumeAgent(name));
  }

  /** Execution instances: live ones and those passivated to disk. */
  instances(): InstanceView[] {
    this.#assertOpen('instances');
    return this.#router.list();
  }

  /** Counts by state, slots, per-agent queues and attempts. */
  stats(): RuntimeStats {
    return collectStats({
      state: this.#lifecycle.state,
      counts: this.#lifecycle.state === 'closed' ? undefined : this.#table.countsByState(),
      governor: this.#governor.stats(),
      attempts: this.#dispatcher.counts,
      slots: this.#options.threads * this.#options.slotsPerThread,
      prefetch: { ...this.#dispatcher.prefetch, max: this.#options.prefetch },
      liveInstances: this.#router.liveCount,
      delayed: this.#table.count('queued' satisfies TaskState) - this.#governor.queued,
      rebuild: this.#rebuild,
      owners: this.#lifecycle.state === 'closed' ? undefined : this.#table.countsByOwner(),
      flow: (agent) => this.#flow.view(agent, this.#options.clock.now()),
      control: this.#controls.state,
      cycles: this.#cycle.cycles,
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
    await step('schedules', () => this.#scheduler.stop());
    await step('drain', () => this.#dispatcher.drain(deadline));
    this.#hurry = undefined;
    await step('deadline', () => timer && clock.clearTimeout(timer));
    // Settlements of the drained attempts wake their waiters once committed: let them land first.
    await step('commits', () => this.#store.settled());
    await step('timers', () => this.#timers.stop());
    await step('supervisor', () => this.#supervisor.stop());
    await step('flow timers', () => this.#flow.stop());
    await step('instances', () => this.#router.flush());
    await step('pool', () => this.#pool.destroy());
    await step('metrics', () => this.#metricsServer?.close());
    await step('waits', () => this.#engine.rejectWaits(new TroupeError('CLOSED', 'the runtime closed before the task settled')));
    await step('events', () => this.#bus.close());
    await step('store', () => this.#store.close(failures.length === 0));
    this.#keepAlive.close();
    this.#lifecycle.set('closed', { failures: failures.length });
  }

  #assertOpen(call: string): void {
    this.#lifecycle.assertRunning(call);
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

/** Creates and starts a runtime: opens (or creates) the data dir and rebuilds from it. */
export async function createRuntime(input?: RuntimeOptions): Promise<Runtime> {
  const options = resolveOptions(input);
  const log = resolveLogger(options.logger);
  // Validate agent registrations before touching the disk.
  const agents = options.agents.map((registration) => validateRegistration(registration, { timeoutMs: options.defaultTimeoutMs, retry: options.defaultRetry, backoff: options.defaultBackoff }));
  let bus: EventBus | undefined;
  const store = await openStore({
    dataDir: options.dataDir,
    now: () => options.clock.now(),
    onCommitted: (events) => bus?.publish(events),
    onQuarantine: (record) => log.error({ db: record.db, key: record.key, problem: record.problem }, 'quarantined a record that could not be read'),
    onLooseMode: ({ path, mode }) => log.warn({ path, mode }, `${path} has mode ${mode}: group or others can reach the data dir (Troupe leaves existing modes alone: chmod go-rwx it)`),
  });
  const keepAlive = new KeepAlive();
  bus = new EventBus(store.read.events, () => keepAlive.hold(), (error, type) => log.error({ err: error, type }, 'an event listener threw'));
  let runtime: Runtime | undefined;
  try {
    runtime = new Runtime(options, log, store, bus, keepAlive);
    await runtime.start(agents);
    return runtime;
  } catch (error) {
    if (runtime) await runtime.close({ force: true }).catch(() => undefined);
    else await store.close(false).catch(() => undefined);
    throw error;
  }
}
