/**
 * The options of a cluster node (issue #15): documented, defaulted, validated and frozen in one
 * place, as the runtime's are (src/options.ts), with the runtime's own checks and agent validation.
 */
import { availableParallelism } from 'node:os';
import type pg from 'pg';
import type { AttemptExit } from '../../machines/index.js';
import { validateRegistration, type AgentRegistration, type RegisteredAgent } from '../agents/registry.js';
import { systemClock, type Clock } from '../clock.js';
import type { LoggerOption } from '../log.js';
import { assertNonNegativeInt, assertPositiveInt, DEFAULT_RETRY, invalidOptions, stripUndefined } from '../options.js';
import type { AgentPool, PiscinaPoolOptions } from '../pool/pool.js';
import { writeLogLines, type LogWrite, type LogWriteResult } from '../store/postgres/logs.js';
import { writeProgress, type ProgressWrite, type ProgressWriteResult } from '../store/postgres/progress.js';
import { anyRunnable, claimTasks, renewLeases, type ClaimedTask, type Lease, type Renewal } from '../store/postgres/queue.js';
import { fireDue, type FireResult } from '../store/postgres/schedule-fire.js';
import { settleAttempts, type AttemptEnd, type SettleResult } from '../store/postgres/settle.js';
import { wakeDue } from '../store/postgres/wakes.js';
import { Tracing } from '../telemetry/tracing.js';

/** Options of `startClusterNode()`. */
export interface ClusterNodeOptions {
  /** The cluster's PostgreSQL database, e.g. `postgres://127.0.0.1:5432/app`. Required. */
  connectionString: string;
  /**
   * The agents this node runs: it claims tasks of these agents only. Required, at least one. A
   * registration's name, module, `timeoutMs` and `retry` (its backoff: the attempt budget is the
   * task's own, set at submit) apply; `concurrency` (with its per-model sub-limits), `rate` and
   * `dailyLimit`, when any is given, are stored as the agent's limits across the cluster, and so
   * is a `backoff` (store/postgres/backoff.ts), and `capabilities` are stored for routing by
   * `requires` (store/postgres/routing.ts), and a `retention` (store/postgres/retention.ts).
   */
  agents: AgentRegistration[];
  /** Worker threads. @default os.availableParallelism() */
  threads?: number;
  /** Attempts one thread runs at once: never more than threads × slotsPerThread execute on the node. @default 4 */
  slotsPerThread?: number;
  /**
   * Most attempts the node claims beyond its slots, to be queued on its threads (the cap of the
   * start-ahead window, src/tasks/start-ahead.ts: the window is 0 until attempts are known to be
   * fast). The node never holds more than threads × slotsPerThread + prefetch running rows, from
   * claim to settle. 0: claim only for free slots. @default max(512, threads × slotsPerThread)
   */
  prefetch?: number;
  /** Lease of a claimed attempt, on the database's clock; renewed about every third of it. @default 30_000 */
  leaseMs?: number;
  /** How often the node looks for tasks again after a claim found fewer than it asked for. @default 250 */
  pollMs?: number;
  /** Time between two sweeps for dead nodes and expired leases (runSweeper's interval). @default 150 */
  sweepMs?: number;
  /**
   * Time between two fires of the cluster's due cron schedules (fireDue), the first at start. Every
   * node fires; each tick fires once, on one of them, at most about this late. @default 250
   */
  fireMs?: number;
  /** How long a timed-out or fenced attempt may take to stop before its thread is terminated. @default 5_000 */
  cancelGraceMs?: number;
  /** A pino logger, pino options, or false for silence. @default pino at level 'warn' */
  logger?: LoggerOption;
  /** Called once if the node loses its liveness connection: it has stopped claiming and aborted its attempts. */
  onLost?: (error: Error) => void;
  /** Time source of timeouts, grace periods, renewals and polls. @default the system clock */
  clock?: Clock;
  /** Random source in [0, 1) for retry backoff jitter. @default Math.random */
  random?: () => number;
  /** @internal The queue's durable verbs (tests count and delay calls). */
  queue?: Partial<ClusterQueue>;
  /** @internal Replaces the Piscina pool (tests). */
  createPool?: (options: PiscinaPoolOptions) => AgentPool;
  /** @internal Hears the node's attempts start and end (the runtime's metrics). */
  observer?: AttemptObserver;
  /** @internal OpenTelemetry tracing (src/telemetry/tracing.ts, the runtime's): spans of its attempts and spawns. */
  tracing?: Tracing | undefined;
  /** Queued tasks of the cluster past which an agent's `ctx.spawn` is refused with AT_CAPACITY (the runtime's `maxQueued`). @default no limit */
  maxQueued?: number;
}

/**
 * What a node tells of its attempts as they go (the runtime on PostgreSQL counts them for
 * `rt.metrics()`). Called on the claim and settle paths: a listener only counts.
 */
export interface AttemptObserver {
  /** A claimed attempt, its task queued for `queuedMs` (the database's clock) before the claim. */
  started(queuedMs: number): void;
  /** An attempt's end, settled (not stale): its exit, and the time from its claim to its end on the node's clock (ms). */
  ended(exit: AttemptExit, attemptMs: number): void;
  /** A spawn of an attempt refused with AT_CAPACITY. */
  refused?(): void;
}

/** The durable verbs a node calls, one transaction each (src/store/postgres/). */
export interface ClusterQueue {
  claim(pool: pg.Pool, node: string, agent: string, n: number, leaseMs: number): Promise<ClaimedTask[]>;
  /** Whether a claim could take a task of these agents now (a look before a poll's claim); ILLEGAL_STATE for a node no longer a member. */
  runnable(pool: pg.Pool, node: string, agents: readonly string[]): Promise<boolean>;
  renew(pool: pg.Pool, leases: readonly Lease[], leaseMs: number): Promise<Renewal>;
  settle(pool: pg.Pool, ends: readonly AttemptEnd[]): Promise<SettleResult>;
  fire(pool: pg.Pool, node: string): Promise<FireResult>;
  /** Stores attempts' log lines, fenced by their tokens (one statement). */
  log(pool: pg.Pool, lines: readonly LogWrite[]): Promise<LogWriteResult>;
  /** Stores attempts' progress reports, fenced by their tokens (one statement). */
  progress(pool: pg.Pool, reports: readonly ProgressWrite[]): Promise<ProgressWriteResult>;
  /** Wakes the sleeping tasks whose wake has come (one statement); resolves with how many. */
  wake(pool: pg.Pool): Promise<number>;
}

/** The real verbs on PostgreSQL. */
export const POSTGRES_QUEUE: ClusterQueue = Object.freeze({ claim: claimTasks, runnable: anyRunnable, renew: renewLeases, settle: settleAttempts, fire: (pool: pg.Pool, node: string) => fireDue(pool, node), log: writeLogLines, progress: writeProgress, wake: (pool: pg.Pool) => wakeDue(pool) });

/** Options after defaults and validation. */
export interface ResolvedNodeOptions {
  readonly connectionString: string;
  /** By name, in the order given. */
  readonly agents: ReadonlyMap<string, RegisteredAgent>;
  readonly threads: number;
  readonly slotsPerThread: number;
  readonly prefetch: number;
  readonly leaseMs: number;
  readonly pollMs: number;
  readonly sweepMs: number;
  readonly fireMs: number;
  readonly cancelGraceMs: number;
  readonly logger: LoggerOption | undefined;
  readonly onLost: ((error: Error) => void) | undefined;
  readonly clock: Clock;
  readonly random: () => number;
  readonly queue: ClusterQueue;
  readonly createPool: ((options: PiscinaPoolOptions) => AgentPool) | undefined;
  readonly observer: AttemptObserver | undefined;
  readonly tracing: Tracing | undefined;
  readonly maxQueued: number | undefined;
}

const DEFAULTS = { slotsPerThread: 4, leaseMs: 30_000, pollMs: 250, sweepMs: 150, fireMs: 250, cancelGraceMs: 5_000 };
const KNOWN = new Set(['connectionString', 'agents', 'threads', 'slotsPerThread', 'prefetch', 'leaseMs', 'pollMs', 'sweepMs', 'fireMs', 'cancelGraceMs', 'logger', 'onLost', 'clock', 'random', 'queue', 'createPool', 'observer', 'tracing', 'maxQueued']);

/** Validates and freezes a node's options. Throws INVALID_OPTIONS naming the option. */
export function resolveNodeOptions(input: ClusterNodeOptions): ResolvedNodeOptions {
  if (typeof input !== 'object' || input === null) throw invalidOptions('options must be an object');
  for (const key of Object.keys(input)) if (!KNOWN.has(key)) throw invalidOptions(`options.${key} is not a cluster node option`);
  const o = { ...DEFAULTS, ...stripUndefined(input) };
  if (typeof o.connectionString !== 'string' || o.connectionString.length === 0) throw invalidOptions('options.connectionString must be a non-empty string');
  const threads = input.threads ?? Math.max(1, availableParallelism());
  assertPositiveInt('threads', threads);
  assertPositiveInt('slotsPerThread', o.slotsPerThread);
  // Claims of about 500 get most of what the queue can do (npm run bench:cluster); the LMDB
  // runtime's 1,024 would let one node take a larger share of a shared queue for little more.
  const prefetch = input.prefetch ?? Math.max(512, threads * o.slotsPerThread);
  assertNonNegativeInt('prefetch', prefetch);
  assertPositiveInt('leaseMs', o.leaseMs);
  assertPositiveInt('pollMs', o.pollMs);
  assertPositiveInt('sweepMs', o.sweepMs);
  assertPositiveInt('fireMs', o.fireMs);
  assertNonNegativeInt('cancelGraceMs', o.cancelGraceMs);
  if (o.maxQueued !== undefined) assertPositiveInt('maxQueued', o.maxQueued);
  const clock = o.clock ?? systemClock;
  if (typeof clock.now !== 'function' || typeof clock.setTimeout !== 'function' || typeof clock.clearTimeout !== 'function') throw invalidOptions('options.clock must implement now(), setTimeout() and clearTimeout()');
  const random = o.random ?? Math.random;
  if (typeof random !== 'function') throw invalidOptions('options.random must be a function returning [0, 1)');
  if (o.onLost !== undefined && typeof o.onLost !== 'function') throw invalidOptions('options.onLost must be a function');
  if (o.createPool !== undefined && typeof o.createPool !== 'function') throw invalidOptions('options.createPool must be a function');
  if (o.observer !== undefined && (typeof o.observer?.started !== 'function' || typeof o.observer.ended !== 'function')) throw invalidOptions('options.observer must have started() and ended()');
  if (o.tracing !== undefined && !(o.tracing instanceof Tracing)) throw invalidOptions('options.tracing must be a Tracing (src/telemetry/tracing.ts)');
  if (o.queue !== undefined && (typeof o.queue !== 'object' || o.queue === null)) throw invalidOptions('options.queue must be an object');
  return Object.freeze({
    connectionString: o.connectionString,
    agents: agentsOf(o.agents),
    threads,
    slotsPerThread: o.slotsPerThread,
    prefetch,
    leaseMs: o.leaseMs,
    pollMs: o.pollMs,
    sweepMs: o.sweepMs,
    fireMs: o.fireMs,
    cancelGraceMs: o.cancelGraceMs,
    logger: input.logger,
    onLost: o.onLost,
    clock,
    random,
    queue: Object.freeze({ ...POSTGRES_QUEUE, ...stripUndefined(o.queue ?? {}) }),
    createPool: o.createPool,
    observer: o.observer,
    tracing: o.tracing,
    maxQueued: o.maxQueued,
  });
}

/**
 * The agents whose registration says `backoff: false`: their stored policy is cleared
 * (agent-rows.ts storeLimits), where a registration that gives none leaves it. A RegisteredAgent shows
 * both as `backoff: null` (its shape is the LMDB runtime's, and frozen), so the difference is kept
 * here, by identity, as {@link checkClusterAgent} sees the registration.
 */
const BACKOFF_OFF = new WeakSet<RegisteredAgent>();

/** Whether `agent`'s registration turned the fast-failure pause off (`backoff: false`), overriding `defaultBackoff`. */
export function turnsBackoffOff(agent: RegisteredAgent): boolean {
  return BACKOFF_OFF.has(agent);
}

/**
 * Refuses, with INVALID_OPTIONS naming it, what a registration asks and a cluster node cannot
 * honour: a name jsonb or text[] cannot hold. Its `concurrency` (total and per-model sub-limits), `rate` and
 * `dailyLimit` hold across the cluster (stored with setAgentLimits), as do its fast-failure
 * `backoff` (setAgentBackoff; `false` clears a stored one: {@link turnsBackoffOff}) and its
 * `retention` (setAgentRetention), and its `capabilities` route tasks from every runtime
 * (setAgentCapabilities). A model name jsonb cannot hold (a NUL), or a capability a text[] cannot
 * (the same), is refused here, before anything is stored. Returns `agent`.
 */
export function checkClusterAgent(registration: AgentRegistration, agent: RegisteredAgent): RegisteredAgent {
  for (const capability of agent.capabilities) {
    if (capability.includes('\u0000')) throw invalidOptions(`agent ${agent.name}: capabilities: a capability must not contain NUL on the PostgreSQL store (${JSON.stringify(capability)})`);
  }
  for (const model of Object.keys(agent.models)) {
    if (model.includes('\u0000')) throw invalidOptions(`agent ${agent.name}: concurrency: a model name must not contain NUL on the PostgreSQL store (${JSON.stringify(model)})`);
  }
  if (registration.backoff === false) BACKOFF_OFF.add(agent);
  return agent;
}

function agentsOf(agents: unknown): ReadonlyMap<string, RegisteredAgent> {
  if (!Array.isArray(agents) || agents.length === 0) throw invalidOptions('options.agents must be a non-empty array of agent registrations');
  const byName = new Map<string, RegisteredAgent>();
  for (const registration of agents as AgentRegistration[]) {
    const agent = checkClusterAgent(registration, validateRegistration(registration, { timeoutMs: 0, retry: DEFAULT_RETRY, backoff: null }));
    if (byName.has(agent.name)) throw invalidOptions(`agent ${agent.name} is given twice`);
    byName.set(agent.name, agent);
  }
  return byName;
}
