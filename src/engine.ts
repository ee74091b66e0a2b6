/**
 * The private engine behind the runtime: every part, built in dependency order. The internal
 * notifier comes first; a part that acts on news subscribes to it, and registers the effects it
 * owns with the executor, as it is built, so no part reaches for one built after it. The runtime
 * (runtime.ts) is the public facade over what this returns.
 */
import { join } from 'node:path';
import { createIdGenerator } from './ids.js';
import type { ResolvedOptions } from './options.js';
import type { Logger } from './log.js';
import type { Store } from './store/port.js';
import { createGovernor, type Governor } from './governor/governor.js';
import { createRouter, type Router } from './router/router.js';
import { createPiscinaPool, type AgentPool } from './pool/pool.js';
import { createTimerWheel, type TimerWheel } from './timers/timer-wheel.js';
import { AgentRegistry } from './agents/registry.js';
import { TaskTable } from './tasks/task-table.js';
import { Dispatcher, DISPATCHER_PARTS } from './tasks/dispatcher.js';
import { heartbeatMsOf } from './tasks/attempt.js';
import { Submitter, SUBMIT_PARTS } from './tasks/submit.js';
import { Pruner, PRUNE_PARTS } from './tasks/prune.js';
import { Retention, RETENTION_PARTS } from './tasks/retention.js';
import { TaskEngine, TASK_ENGINE_PARTS } from './tasks/engine.js';
import type { LogFeed } from './events/logs.js';
import { INTERACTION_PARTS, Interactions } from './tasks/interact.js';
import type { RuntimeMetrics } from './metrics/metrics.js';
import { createSupervisor, type Supervisor } from './supervisor/supervisor.js';
import { CYCLE_PARTS, SupervisorCycle } from './supervisor/cycle.js';
import { FlowControl } from './governor/flow.js';
import { CONTROLS_PARTS, RuntimeControls } from './controls.js';
import { Scheduler } from './scheduler/scheduler.js';
import type { KeepAlive } from './keep-alive.js';
import { Pipeline } from './pipeline/pipeline.js';
import { TaskMemory } from './pipeline/memory.js';
import { EffectExecutor } from './pipeline/executor.js';
import { Notifier } from './pipeline/notifier.js';
import { fireTemplate, taskOfKey, TEMPLATE_PARTS } from './tasks/template.js';
import { isTerminal } from '../machines/index.js';
import { cleanWorkspaceAt, isSettledStored, sliceOf, type EngineParts } from './tasks/parts.js';
import type { HoldSources } from './tasks/holds.js';
import type { Tracing } from './telemetry/tracing.js';

/** Every part of a runtime. */
export interface Engine {
  readonly registry: AgentRegistry;
  readonly table: TaskTable;
  readonly router: Router;
  readonly governor: Governor;
  readonly pool: AgentPool;
  readonly timers: TimerWheel;
  readonly flow: FlowControl;
  readonly notifier: Notifier;
  readonly logFeed: LogFeed;
  readonly dispatcher: Dispatcher;
  readonly submitter: Submitter;
  readonly pruner: Pruner;
  readonly retention: Retention;
  readonly interactions: Interactions;
  readonly tasks: TaskEngine;
  readonly cycle: SupervisorCycle;
  readonly supervisor: Supervisor;
  readonly controls: RuntimeControls;
  readonly scheduler: Scheduler;
  readonly metrics: RuntimeMetrics;
  /** What `heldBy` is read from. */
  readonly holds: HoldSources;
}

/**
 * What outlives an engine: the runtime makes these once, and a store recovery builds a new engine
 * on them (metrics keep their counts; log follows keep their feed).
 */
export interface LastingParts {
  readonly metrics: RuntimeMetrics;
  readonly logFeed: LogFeed;
  /** OpenTelemetry spans (telemetry/tracing.ts); undefined without `@opentelemetry/api`. */
  readonly tracing: Tracing | undefined;
}

/** Builds the parts of a runtime on an open store (see the module comment). */
export function buildEngine(options: ResolvedOptions, log: Logger, store: Store, keepAlive: KeepAlive, lasting: LastingParts): Engine {
  const { metrics, logFeed } = lasting;
  const registry = new AgentRegistry();
  const table = new TaskTable(() => store.countSettled(), (task) => isSettledStored(store, task));
  const slots = options.threads * options.slotsPerThread;
  const router = createRouter({
    store,
    clock: options.clock,
    log: log.child({ component: 'router' }),
    maxLiveInstances: options.maxLiveInstances,
    failedAttemptThreshold: options.failedAttemptThreshold,
    hasQueuedWork: () => false,
  });
  const governor = createGovernor({ slots: slots + options.prefetch, instanceAdmits: (key) => router.admits(key) });
  const pool = (options.createPool ?? createPiscinaPool)({
    threads: options.threads,
    slotsPerThread: options.slotsPerThread,
    heartbeatMs: heartbeatMsOf(options.leaseMs),
    onError: (error) => log.error({ err: error }, 'worker thread error'),
  });
  // Internal news first: the parts built below subscribe to what they act on, so nothing here
  // reaches for a part built after it.
  const notifier = new Notifier((error, what) => log.error({ err: error, notification: what }, 'an internal listener failed'));
  const timers = createTimerWheel(options.clock, (timer) => notifier.timerFired(timer));
  notifier.onPoked(() => timers.check());
  const flow = new FlowControl({
    clock: options.clock,
    governor: governor,
    onRelease: () => notifier.work(),
    onPauseEnded: (agent, state, at) => notifier.pauseEnded(agent, state, at),
  });
  const executor = new EffectExecutor(log.child({ component: 'executor' }));
  executor.handle({
    notify: (taskId) => notify(taskId),
    arm: (timer) => timers.add(timer),
    disarm: (timer) => void timers.remove(timer.id),
    cleanWorkspace: (taskId, workspace, run) => cleanWorkspaceAt(log, taskId, workspace, run),
  });
  const pipeline = new Pipeline({
    store,
    clock: options.clock,
    random: options.random,
    nextId: createIdGenerator(() => options.clock.now()),
    memory: new TaskMemory(table, governor, () => notifier.work()),
    executor,
    log,
  });
  const parts: EngineParts = {
    pipeline,
    notifier: notifier,
    options,
    store,
    clock: options.clock,
    log,
    governor: governor,
    router: router,
    pool: pool,
    agents: registry,
    timers: timers,
    table: table,
    flow: flow,
    logs: logFeed,
    tracing: lasting.tracing,
  };
  const dispatcher = new Dispatcher(sliceOf(parts, DISPATCHER_PARTS), executor);
  const submitter = new Submitter(sliceOf(parts, SUBMIT_PARTS));
  const pruner = new Pruner(sliceOf(parts, PRUNE_PARTS));
  const retention = new Retention(sliceOf(parts, RETENTION_PARTS), pruner, options.retention);
  const interactions = new Interactions(sliceOf(parts, INTERACTION_PARTS), dispatcher, (specs, where) => submitter.submitMany(specs, where));
  const tasks = new TaskEngine(sliceOf(parts, TASK_ENGINE_PARTS), dispatcher, interactions, keepAlive);
  const cycle = new SupervisorCycle(sliceOf(parts, CYCLE_PARTS));
  const supervisor = createSupervisor({
    clock: options.clock,
    log: log.child({ component: 'supervisor' }),
    dispatcher: dispatcher,
    sweepMs: Math.max(10, Math.min(1_000, Math.floor(options.leaseMs / 4))),
    cycle: cycle,
    intervalMs: options.supervisorIntervalMs,
    hasQueued: () => governor.queued > 0,
  });
  notifier.onWork(() => supervisor.poke());
  notifier.onBusy(() => supervisor.poke());
  const controls = new RuntimeControls(sliceOf(parts, CONTROLS_PARTS), { dispatcher: dispatcher, cycleNow: () => supervisor.cycleNow() });
  const templateParts = sliceOf(parts, TEMPLATE_PARTS);
  const scheduler = new Scheduler({
    store,
    clock: options.clock,
    log: log.child({ component: 'scheduler' }),
    pipeline,
    checkTask: (task) => submitter.check(task),
    template: (task) => fireTemplate(templateParts, task),
    taskOfKey: (key) => taskOfKey(templateParts, key),
    admission: () => ({ queued: table.count('queued'), maxQueued: options.maxQueued }),
    workspacesDir: join(options.dataDir, 'workspaces'),
    taskState: (id) => tasks.record(id)?.state,
  });
  executor.handle({ armSchedule: (scheduleId, due) => scheduler.armSchedule(scheduleId, due) });
  notifier.onPoked(() => scheduler.check());
  notifier.onSettled((taskId) => scheduler.onSettled(taskId));
  notifier.onSettled((taskId) => interactions.onSettled(taskId));
  notifier.onAttemptEnded((taskId, attemptId) => interactions.attemptEnded(taskId, attemptId));
  const holds: HoldSources = {
    now: () => options.clock.now(),
    frozen: () => controls.state.frozen,
    inQueue: (taskId) => governor.has(taskId),
    flow: (agent, now) => flow.view(agent, now),
    instance: (key) => router.get(key),
  };
  pool.connect({ ...dispatcher.host, call: (attemptId, token, call) => interactions.call(attemptId, token, call) });
  notifier.onRefused(() => metrics.rejected());
  if (executor.unhandled.length > 0) throw new Error(`no handler for effects: ${executor.unhandled.join(', ')}`);
  return { registry, table, router, governor, pool, timers, flow, notifier, logFeed, dispatcher, submitter, pruner, retention, interactions, tasks, cycle, supervisor, controls, scheduler, metrics, holds };

  /**
   * A task reached a state its watchers wait for (the notify effect, after the commit): wake them;
   * a settled one leaves the table, and the parts that follow settled tasks hear of it.
   */
  function notify(taskId: string): void {
    const task = table.get(taskId);
    if (!task) return;
    const settled = isTerminal(task.state);
    if (settled) table.retire(task);
    table.notify(task);
    if (settled) notifier.settled(taskId);
  }
}
