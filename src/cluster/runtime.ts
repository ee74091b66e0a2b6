/**
 * The runtime on PostgreSQL (issue #15): `createRuntime({ store: { postgres } })`. The same public
 * API as the LMDB runtime (src/api/runtime.ts), for any number of runtime processes on one
 * database. Each runs a cluster node (node.ts: claims, runs on its threads, settles, renews,
 * sweeps dead nodes, fires cron) and a retention sweep (retention.ts), follows the cluster's event
 * log while its waits, `on` listeners or `events()` need it (feed.ts), and calls the queue's
 * durable verbs (src/store/postgres/) for the rest. A call with no backing on PostgreSQL yet
 * rejects (or throws) UNSUPPORTED_STORE naming it; see the README, "Running on many machines".
 * Input is checked as the LMDB runtime checks it, before anything is written.
 */
import pg from 'pg';
import type { EventStreamOptions, EventType, RuntimeEvent } from '../api/events.js';
import type { AgentsApi, Runtime } from '../api/runtime.js';
import type { AgentInput, AgentOutput, ListOptions, Task, TaskId, TaskPage, TaskSpec, WaitOptions } from '../api/tasks.js';
import type { RegisteredAgent } from '../agents/registry.js';
import { checkId, checkText } from '../ids.js';
import { TroupeError } from '../errors.js';
import { KeepAlive } from '../keep-alive.js';
import { Lifecycle, type CloseOptions } from '../lifecycle.js';
import { RuntimeShell } from '../runtime-shell.js';
import { resolveLogger, type Logger } from '../log.js';
import { checkMetricsOptions, type MetricsSnapshot } from '../metrics/metrics.js';
import type { ResolvedOptions } from '../options.js';
import type { RuntimeStats } from '../stats.js';
import { freezeCluster, unfreezeCluster } from '../store/postgres/control.js';
import { pgText } from '../store/postgres/checks.js';
import { HINTS } from '../store/postgres/events.js';
import { cancelTask, listTaskRows, readTask, retryTask } from '../store/postgres/tasks.js';
import { sendInput as sendInputTo } from '../store/postgres/inbox.js';
import { cancelChildren } from './cancel-children.js';
import { checkInputSpec, type InboxItem, type InputSpec } from '../tasks/interact.js';
import { checkLabelFilter, checkListOptions } from '../tasks/list.js';
import type { PruneOptions, PruneResult } from '../tasks/prune.js';
import { ControlView } from './control-view.js';
import { clusterEndpoints } from './dashboard.js';
import { EventFeed } from './feed.js';
import { ClusterLogs } from './logs-api.js';
import { ClusterAgents, registered } from './agents-api.js';
import { ClusterMetrics } from './metrics.js';
import { killEverywhere } from './kill.js';
import type { ClusterNodeHandle } from './node.js';
import { startClusterRetention, type ClusterRetention } from './retention.js';
import { pruneCluster } from './prune.js';
import { AgentsView } from './agents-view.js';
import { openRuntimeNode } from './runtime-node.js';
import { ClusterSchedules } from './schedules-api.js';
import { clusterStats } from './stats.js';
import { TaskCounts } from './task-counts.js';
import { taskOf, unsupported } from './task-view.js';
import { TaskWaits } from './waits.js';
import { ClusterSubmits } from './submits.js';
import { Tracing } from '../telemetry/tracing.js';

/** Connections of the runtime's own pool (reads, submits, cancels; the node has its own). */
const API_CONNECTIONS = 4;

/** Starts a runtime on the PostgreSQL database of `options.store` (see the module comment). */
export async function createPostgresRuntime(options: ResolvedOptions): Promise<Runtime> {
  const log = resolveLogger(options.logger);
  // Every registration is checked before anything connects.
  const agents = options.agents.map((registration) => registered(registration, options));
  // Tracing as on LMDB: on when @opentelemetry/api is installed and a tracer provider is registered.
  const runtime = new PostgresRuntime(options, log, await Tracing.load());
  try {
    await runtime.start(agents);
    return runtime;
  } catch (error) {
    await runtime.close({ force: true }).catch(() => undefined);
    throw error;
  }
}

/** See the module comment. */
class PostgresRuntime extends RuntimeShell implements Runtime {
  readonly agents: AgentsApi;
  readonly schedules: ClusterSchedules;
  readonly logs: Runtime['logs'];
  readonly #options: ResolvedOptions;
  readonly #tracing: Tracing | undefined;
  readonly #url: string;
  readonly #log: Logger;
  readonly #db: pg.Pool;
  readonly #feed: EventFeed;
  readonly #waits: TaskWaits;
  readonly #agents: ClusterAgents;
  readonly #submits: ClusterSubmits;
  #node: ClusterNodeHandle | undefined;
  readonly #control: ControlView;
  readonly #agentRows: AgentsView;
  readonly #counts: TaskCounts;
  readonly #metrics: ClusterMetrics;
  #retention: ClusterRetention | undefined;
  #startedMs = 0;
  /** A close with `force: true` came: the node's close does not wait for running attempts. */
  #forced = false;
  /** Aborts as close begins: ends the retries of agent limits that failed to store, and every `logs({ follow })`. */
  readonly #stopping = new AbortController();

  constructor(options: ResolvedOptions, log: Logger, tracing: Tracing | undefined) {
    super(new Lifecycle(log), new KeepAlive(), clusterEndpoints());
    this.#options = options;
    this.#tracing = tracing;
    this.#url = options.store!.postgres;
    this.#log = log;
    // Idle connections do not hold the process: the KeepAlive does (a query in flight holds it).
    this.#db = new pg.Pool({ connectionString: this.#url, max: API_CONNECTIONS, application_name: 'troupe-runtime', allowExitOnIdle: true });
    this.#db.on('error', (error) => log.warn({ err: error }, 'an idle database connection failed'));
    this.#feed = new EventFeed({ pool: this.#db, connectionString: this.#url, log, hold: () => this.keepAlive.hold(), hinted: (hints) => this.#hinted(hints) });
    this.#waits = new TaskWaits({ read: (id) => this.#read(id), clock: options.clock, keepAlive: this.keepAlive, need: () => this.#feed.need(), log });
    this.#feed.subscribe(this.#waits.onEvents, this.#waits.recheck);
    this.logs = new ClusterLogs({ pool: this.#db, feed: this.#feed, hold: () => this.keepAlive.hold(), closed: this.#stopping.signal, assertOpen: (call) => this.assertOpen(call) }).iterate;
    this.#control = new ControlView(this.#db, log);
    this.#counts = new TaskCounts(this.#db, log);
    this.#metrics = new ClusterMetrics({ slots: options.threads * options.slotsPerThread, clock: options.clock, counts: this.#counts, agents: () => this.#agents.list().map((a) => a.name), executing: () => this.#node?.running ?? 0, startedMs: () => this.#startedMs, listenerErrors: () => this.#feed.listenerErrors });
    this.#feed.subscribe(this.#control.observe, () => this.#control.refresh());
    this.#agentRows = new AgentsView(this.#db, options.clock, log);
    this.#feed.subscribe(this.#agentRows.observe, () => this.#agentRows.refresh());
    this.#agents = new ClusterAgents({ options, pool: this.#db, log, node: () => this.#node, stopping: this.#stopping.signal, assertOpen: (call) => this.assertOpen(call) });
    this.#submits = new ClusterSubmits({ db: this.#db, options, tracing, agent: (name) => this.#agents.get(name), counted: this.#metrics.counted });
    this.schedules = new ClusterSchedules({ pool: this.#db, log, assertOpen: (call) => this.assertOpen(call), task: (task, where) => this.#submits.newTask(task as TaskSpec, where) });
    this.agents = { register: this.#agents.register, list: this.#agents.list };
  }

  /**
   * @internal Starts the node (migrating the schema, storing the option agents' limits), the feed,
   * and reads the controls. Its connections hold nothing (see runtime-node.ts): the start holds the
   * process itself, so a script awaiting createRuntime() never exits under it.
   */
  async start(agents: readonly RegisteredAgent[]): Promise<void> {
    const at = performance.now();
    const release = this.keepAlive.hold();
    try {
      this.#agents.started(agents);
      this.#node = await openRuntimeNode(this.#options, { url: this.#url, log: this.#log, agents, fired: () => this.schedules.refreshSoon(), observer: this.#metrics.observer, tracing: this.#tracing });
      await this.#feed.start();
      await this.#control.read();
      await this.#agentRows.read();
      await this.schedules.load();
      this.#retention = startClusterRetention({ pool: this.#db, clock: this.#options.clock, log: this.#log, policy: this.#options.retention });
      this.#startedMs = performance.now() - at;
      await this.endpoints.open(this.#options, this.#metrics, this, this.#log);
      this.lifecycle.set('running', { store: 'postgres', node: this.#node.id, agents: agents.map((a) => a.name) });
      this.keepAlive.open();
    } finally {
      release();
    }
  }

  submit<A extends string = string>(spec: TaskSpec<A>): Promise<Task<AgentOutput<A>, AgentInput<A>>> {
    return this.guard('submit', async () => (await this.#submit([spec as TaskSpec], (i) => (i === 0 ? 'task' : `tasks[${i}]`)))[0]! as Task<AgentOutput<A>, AgentInput<A>>);
  }

  submitMany<A extends string = string>(specs: ReadonlyArray<TaskSpec<A>>): Promise<Array<Task<AgentOutput<A>, AgentInput<A>>>> {
    return this.guard('submitMany', async () => {
      if (!Array.isArray(specs)) throw new TroupeError('INVALID_INPUT', 'submitMany expects an array of task specs');
      return (await this.#submit(specs as ReadonlyArray<TaskSpec>, (i) => `tasks[${i}]`)) as Array<Task<AgentOutput<A>, AgentInput<A>>>;
    });
  }

  /** {@link ClusterSubmits.submit}, then the node claims at once rather than at its next poll. */
  async #submit(specs: ReadonlyArray<TaskSpec>, where: (i: number) => string): Promise<Task[]> {
    const rows = await this.#submits.submit(specs, where);
    if (rows.length > 0) this.#node?.wake();
    return rows.map((row) => this.#view(row));
  }

  get<O = unknown>(id: TaskId<O>): Promise<Task<O>> {
    return this.guard('get', async () => {
      const task = await this.#read(checkId(id, 'get: id'));
      if (!task) throw new TroupeError('NOT_FOUND', `no task ${id}`);
      return task as Task<O>;
    });
  }

  list(options?: ListOptions): Promise<TaskPage> {
    return this.guard('list', async () => {
      const { state, agent, parentId, after, limit, labels } = checkListOptions(options);
      checkLabelFilter(state, labels);
      const rows = await listTaskRows(this.#db, { state, agent, parentId, after, limit, labels: Object.fromEntries(labels) });
      return { tasks: rows.map((row) => this.#view(row)), next: rows.length === limit ? rows[rows.length - 1]!.id : null };
    });
  }

  wait<O = unknown>(id: TaskId<O>, options?: WaitOptions): Promise<Task<O>> {
    return this.guard('wait', () => this.#waits.wait(checkId(id, 'wait: id'), options) as Promise<Task<O>>);
  }

  cancel<O = unknown>(id: TaskId<O>, reason = 'cancelled'): Promise<Task<O>> {
    return this.guard('cancel', async () => {
      checkId(id, 'cancel: id');
      pgText(reason, 'cancel: reason');
      const outcome = await cancelTask(this.#db, id, reason);
      // A running attempt stops on its node, and its end settles the task (cancelled, or done if it finished first).
      const settled = outcome === 'requested' ? this.#waits.wait(id) : undefined;
      // Its active children are cancelled too (and theirs), as on LMDB.
      if (outcome !== 'already') await cancelChildren(this.#db, id, reason, (child, why) => this.cancel(child, why));
      return ((await settled) ?? (await this.#read(id))!) as Task<O>;
    });
  }

  retry<O = unknown>(id: TaskId<O>): Promise<Task<O>> {
    return this.guard('retry', async () => {
      const row = await retryTask(this.#db, checkId(id, 'retry: id'));
      this.#node?.wake();
      return this.#view(row) as Task<O>;
    });
  }

  events<K extends EventType = EventType>(options?: EventStreamOptions<K>): AsyncGenerator<RuntimeEvent<K>> {
    this.assertOpen('events');
    return this.#feed.iterate(options) as AsyncGenerator<RuntimeEvent<K>>;
  }

  on(type: '*', listener: (event: RuntimeEvent) => void): () => void;
  on<K extends EventType>(type: K, listener: (event: RuntimeEvent<K>) => void): () => void;
  on(type: EventType | '*', listener: (event: never) => void): () => void {
    return this.#feed.on(type, listener as (event: RuntimeEvent) => void);
  }

  off(type: EventType | '*', listener: (event: never) => void): void {
    this.#feed.off(type, listener as (event: RuntimeEvent) => void);
  }

  freeze(reason?: string): Promise<void> {
    return this.guard('freeze', async () => {
      if (reason !== undefined) checkText(reason, 'freeze: reason');
      await freezeCluster(this.#db, reason ?? 'frozen');
      await this.#control.read();
    });
  }

  unfreeze(): Promise<void> {
    return this.guard('unfreeze', async () => {
      await unfreezeCluster(this.#db);
      await this.#control.read();
      this.#node?.wake();
    });
  }

  kill(reason?: string): Promise<void> {
    return this.guard('kill', () =>
      killEverywhere({ pool: this.#db, feed: this.#feed, node: () => this.#node, controlChanged: () => this.#control.read(), hold: () => this.keepAlive.hold(), closing: this.#stopping.signal }, reason),
    );
  }

  prune(options?: PruneOptions): Promise<PruneResult> {
    return this.guard('prune', () => pruneCluster(this.#db, options));
  }

  /** Ends an agent's fast-failure pause for the whole cluster (agents-view.ts). */
  resumeAgent(name: string): Promise<boolean> {
    return this.guard('resumeAgent', () => this.#agentRows.resume(name, (agent) => this.#agents.get(agent) !== undefined));
  }

  poke(): void {
    this.assertOpen('poke');
    this.#node?.wake();
  }

  /** This runtime's node's metrics and the cluster's task counts (metrics.ts), in the LMDB runtime's shape or as Prometheus text. */
  metrics(): Promise<MetricsSnapshot>;
  metrics(options: { format: 'prometheus' }): Promise<string>;
  metrics(options?: { format?: 'prometheus' | 'snapshot' }): Promise<MetricsSnapshot | string> {
    return this.guard('metrics', () => this.#metrics.read(checkMetricsOptions(options)));
  }

  stats(): RuntimeStats {
    return clusterStats({ state: this.state, options: this.#options, agents: this.#agents.list(), node: this.#node, control: this.#control.current, startedMs: this.#startedMs, counts: this.#counts.current(), retention: this.#retention?.stats ?? null, paused: (agent) => this.#agentRows.paused(agent), stored: (agent) => this.#agentRows.stored(agent) });
  }

  /** Checked as on LMDB, then stored (and delivered, or resuming the task) in one transaction: src/store/postgres/inbox.ts. */
  sendInput(id: string, input: InputSpec): Promise<InboxItem> {
    return this.guard('sendInput', async () => {
      checkId(id, 'sendInput: id');
      const { message, idempotencyKey } = checkInputSpec(input);
      if (idempotencyKey !== undefined) pgText(idempotencyKey, 'sendInput: idempotencyKey');
      const item = await sendInputTo(this.#db, id, message, idempotencyKey);
      // A task that resumed with a new run is queued: this node claims now (the NOTIFY's hint does too).
      if (!item.delivered) this.#node?.wake();
      return item;
    });
  }
  setDispatchTarget(): Promise<never> {
    return this.#refuse('setDispatchTarget');
  }
  resetInstance(): Promise<never> {
    return this.#refuse('resetInstance');
  }
  backup(): Promise<never> {
    return this.#refuse('backup');
  }
  instances(): never {
    this.assertOpen('instances');
    throw unsupported('instances');
  }

  /** The dashboard's URL (with `#token=` when it needs one); undefined when `dashboard` is off (cluster/dashboard.ts). */
  dashboard(): string | undefined {
    return this.endpoints.dashboardUrl;
  }

  protected forced(): void {
    this.#forced = true;
    // The node's close under way: a forced call ends its wait (its promise, awaited by closeWith).
    if (this.#node?.state === 'draining') void this.#node.close({ force: true });
  }

  /**
   * Lets running attempts finish for up to `timeoutMs` (`force`: not at all), interrupts the rest
   * (requeued without spending their budget), leaves the cluster, rejects pending waits with
   * CLOSED, and ends every connection. Every step runs even when one fails.
   */
  protected async closeWith({ timeoutMs }: Required<CloseOptions>): Promise<void> {
    // Held until closed, unref'd or not: the steps' connections and timers do not hold the process.
    const release = this.keepAlive.hold();
    this.lifecycle.set('draining', { timeoutMs, force: this.#forced });
    let failures = 0;
    const step = async (name: string, fn: () => unknown) => {
      try {
        await fn();
      } catch (error) {
        failures++;
        this.#log.error({ err: error, step: name }, 'close step failed');
      }
    };
    this.#stopping.abort();
    await step('retention', () => this.#retention?.stop());
    // Not yet begun when a forced call came during the steps before it: it begins forced.
    await step('node', () => this.#node?.close({ timeoutMs, force: this.#forced }));
    await this.endpoints.close(step);
    await step('waits', () => this.#waits.rejectAll(new TroupeError('CLOSED', 'the runtime closed before the task settled')));
    await step('events', () => this.#feed.close());
    await step('schedules', () => this.schedules.idle());
    await step('task counts', () => this.#counts.stop());
    await step('database', () => this.#db.end());
    this.keepAlive.close();
    this.lifecycle.set('closed', { failures });
    release();
  }

  /**
   * A commit's NOTIFY hints (whether the feed reads events or not): work came, so the node claims
   * now rather than at its next poll; the controls changed, so the freeze flag is read again.
   */
  #hinted(hints: readonly string[]): void {
    if (hints.includes(HINTS.control)) this.#control.refresh();
    if (hints.includes(HINTS.agents)) this.#agentRows.refresh();
    if (this.#agents.size > 0 && (hints.includes(HINTS.queued) || hints.includes(HINTS.control) || hints.includes(HINTS.agents))) this.#node?.wake();
  }

  async #read(id: string): Promise<Task | undefined> {
    const row = await readTask(this.#db, id);
    return row && this.#view(row);
  }

  #view(row: Parameters<typeof taskOf>[0]): Task {
    return taskOf(row, this.#agents.get(row.agent), { timeoutMs: this.#options.defaultTimeoutMs, retry: this.#options.defaultRetry });
  }

  #refuse(call: string): Promise<never> {
    return this.guard(call, async () => {
      throw unsupported(call);
    });
  }
}
