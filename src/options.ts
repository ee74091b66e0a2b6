/**
 * The one options pipeline: documented options → DEFAULTS → resolveOptions() validates, names the
 * bad option, and freezes the result. Durations end in `Ms`.
 */
import { statSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { resolve } from 'node:path';
import { types } from 'node:util';
import type { Clock } from './clock.js';
import { systemClock } from './clock.js';
import { TroupeError } from './errors.js';
import type { LoggerOption } from './log.js';
import type { AgentPool, PiscinaPoolOptions } from './pool/pool.js';
import type { RetryPolicy } from './store/records.js';
import type { AgentRegistration } from './agents/registry.js';
import { resolveDashboard, type DashboardOptions, type ResolvedDashboard } from './dashboard/options.js';
import { resolveRuntimeRetention, type ResolvedRetention, type RuntimeRetention } from './tasks/retention-rules.js';

/** Options of `createRuntime()`. */
export interface RuntimeOptions {
  /** Directory of the LMDB environment and the lock file. @default './.troupe' */
  dataDir?: string;
  /** Worker threads (agent slots are threads × slotsPerThread). @default os.availableParallelism() */
  threads?: number;
  /** Attempts one thread runs at once (Piscina's concurrentTasksPerWorker). @default 4 */
  slotsPerThread?: number;
  /**
   * Most attempts the dispatcher may start ahead of a free slot, so that the durable start commit
   * of the next attempts overlaps the running ones; their threads queue them and run each as soon
   * as a slot frees. The window adapts: it covers the start commit's latency for fast agents and
   * shrinks to zero for slow ones. Prefetched attempts count against agent and instance limits as
   * running, and a crash counts them against their retry budget like any started attempt (as
   * graphile-worker counts the jobs its local queue has locked). @default max(1024, threads × slotsPerThread)
   */
  prefetch?: number;
  /**
   * Queued tasks beyond which submit rejects with AT_CAPACITY (nothing stored). On PostgreSQL the
   * cluster's queued tasks, checked exactly in each submit's transaction, and only when given (see
   * README, "Running on many machines"). @default 100_000 (PostgreSQL: no limit)
   */
  maxQueued?: number;
  /** Instance actors kept in memory; idle ones beyond are passivated to disk. @default 10_000 */
  maxLiveInstances?: number;
  /** Consecutive failed attempts that degrade an instance; 0 disables. @default 0 */
  failedAttemptThreshold?: number;
  /** How long a cancelled or timed-out attempt may take to stop before its thread is terminated. @default 5_000 */
  cancelGraceMs?: number;
  /**
   * Lease of a running attempt. Workers renew it on their own (three heartbeats per lease) while
   * their event loop runs; an agent that blocks its thread longer than this loses the attempt
   * (`lease_expired`, retried) and its thread is terminated. @default 30_000
   */
  leaseMs?: number;
  /** Default per-attempt timeout for agents that set none; 0 = no timeout. @default 0 */
  defaultTimeoutMs?: number;
  /** Default retry policy for agents that set none. @default {maxAttempts: 3, backoff: 'exponential', delayMs: 1_000, maxDelayMs: 60_000, jitter: 0.2} */
  defaultRetry?: Partial<RetryPolicy>;
  /**
   * Opt-in agent backoff for agents that set none: after `failures` consecutive failed attempts
   * (agent faults, each shorter than `fastFailMs`), the agent pauses for `pauseMs` (persisted,
   * shown in stats, `heldBy` and events). A failure the agent reports on purpose (`{kind: 'fail'}`,
   * a non-retryable `AgentError`) never counts. `true` or `{}` takes the values
   * {failures: 3, fastFailMs: 60_000, pauseMs: 1_800_000}. @default false (no pause)
   */
  defaultBackoff?: Partial<FastFailBackoff> | boolean;
  /**
   * How long a task may sit queued on a degraded instance before it is dropped with reason
   * `instance_degraded` (counted from when it queued or the instance degraded, whichever is later).
   * 0 keeps such tasks queued until `resetInstance`. @default 0
   */
  degradedDropMs?: number;
  /** How often the supervisor cycle runs while work is queued: starvation ladder, degraded drops. @default 1_000 */
  supervisorIntervalMs?: number;
  /**
   * After a commit failed (a full disk) and the store stopped, how long to wait before each try to
   * open the data dir again; the runtime resumes on its own once one succeeds. @default 5_000
   */
  storeRetryMs?: number;
  /**
   * The starvation ladder, counted in supervisor cycles once a task has been queued longer than
   * `minQueuedMs`: `task.starved` once at cycle `starvedAfterCycles`, then `needs_attention` at
   * cycle `attentionAfterCycles` (0 = never). `false` turns the ladder off.
   * @default {minQueuedMs: 3_600_000, starvedAfterCycles: 1, attentionAfterCycles: 0}
   */
  starvation?: Partial<StarvationPolicy> | false;
  /**
   * How long settled tasks are kept, per state: an age in ms, or `{ ageMs, count }` (the `count`
   * most recently settled per agent), whichever removes first; `Infinity` keeps for good. A
   * background sweep every `sweepMs` removes the tasks past their rule with everything they left
   * (as `rt.prune()` does), in small batches. An agent's `retention` replaces a state's rule for
   * its tasks, a task's own (submit's `retention`) for that task; a parent stays until its children
   * go. A task's horizon is fixed when it settles. `false`: nothing is removed in the background.
   * On PostgreSQL: the same rules, with agents' and tasks' stored in the database, swept by one runtime at a time.
   * @default {done: 7 days, failed: 30 days, dropped: 30 days, cancelled: 30 days, sweepMs: 60_000}
   */
  retention?: RuntimeRetention | false;
  /** Serve Prometheus `/metrics` on 127.0.0.1 at this port (on PostgreSQL too: this runtime's `metrics()`); 0 turns it off. @default 0 */
  metricsPort?: number;
  /**
   * Serve the web dashboard (see `rt.dashboard()`): `true`, or `{ port, host, token }`. It binds
   * 127.0.0.1 unless told otherwise; any other host requires a token (generated and logged once
   * when none is given). @default false
   */
  dashboard?: DashboardOptions | boolean;
  /** A pino logger, pino options, or false for silence. @default pino at level 'warn' */
  logger?: LoggerOption;
  /** Agents to register at start. */
  agents?: AgentRegistration[];
  /** Time source for timers, backoff, timeouts and grace periods. @default the system clock */
  clock?: Clock;
  /** Random source in [0, 1) for backoff jitter. @default Math.random */
  random?: () => number;
  /**
   * Where the runtime keeps its state: absent, the LMDB data dir (`dataDir`); `{ postgres: url }`,
   * a PostgreSQL database that any number of runtime processes share (README: "Running on many
   * machines"; `dataDir` is then not used). Without this option, the environment variable
   * `TROUPE_STORE` (a `postgres://` URL) picks PostgreSQL the same way. @default LMDB in `dataDir`
   */
  store?: StoreOption;
  /** @internal Replaces the Piscina pool (tests). */
  createPool?: (options: PiscinaPoolOptions) => AgentPool;
}

/** The store option: a PostgreSQL connection string, e.g. `postgres://user@127.0.0.1:5432/app`. */
export interface StoreOption {
  postgres: string;
}

/**
 * After `failures` consecutive failed attempts (agent faults), each shorter than `fastFailMs`, the
 * agent pauses for `pauseMs`: a misconfigured agent should not burn through its queue.
 */
export interface FastFailBackoff {
  failures: number;
  fastFailMs: number;
  pauseMs: number;
}

/** Thresholds of the starvation ladder (see {@link RuntimeOptions.starvation}). */
export interface StarvationPolicy {
  minQueuedMs: number;
  starvedAfterCycles: number;
  attentionAfterCycles: number;
}

/** Options after defaults and validation. */
export type ResolvedOptions = Readonly<Required<Omit<RuntimeOptions, 'logger' | 'createPool' | 'defaultRetry' | 'defaultBackoff' | 'starvation' | 'retention' | 'dashboard' | 'store'>>> & {
  /** null: LMDB in `dataDir`. */
  readonly store: Readonly<StoreOption> | null;
  /** null: off. */
  readonly dashboard: ResolvedDashboard | null;
  readonly logger: LoggerOption | undefined;
  readonly createPool: ((options: PiscinaPoolOptions) => AgentPool) | undefined;
  readonly defaultRetry: Readonly<RetryPolicy>;
  /** null: off. */
  readonly defaultBackoff: Readonly<FastFailBackoff> | null;
  /** null: off. */
  readonly starvation: Readonly<StarvationPolicy> | null;
  /** null: off. */
  readonly retention: ResolvedRetention | null;
};

/** The values of an opted-in fast-failure backoff: 3 failures, each under 60 s, pause 30 min. */
export const DEFAULT_BACKOFF: Readonly<FastFailBackoff> = Object.freeze({ failures: 3, fastFailMs: 60_000, pauseMs: 1_800_000 });

/** The default starvation ladder: `task.starved` after an hour queued, never `needs_attention`. */
export const DEFAULT_STARVATION: Readonly<StarvationPolicy> = Object.freeze({ minQueuedMs: 3_600_000, starvedAfterCycles: 1, attentionAfterCycles: 0 });

/** Default retry policy. */
export const DEFAULT_RETRY: Readonly<RetryPolicy> = Object.freeze({ maxAttempts: 3, backoff: 'exponential', delayMs: 1_000, maxDelayMs: 60_000, jitter: 0.2 });

/** Defaults of every option that has one. */
export const DEFAULTS = {
  dataDir: './.troupe',
  threads: 0, // resolved from the machine
  slotsPerThread: 4,
  prefetch: -1, // resolved from threads and slotsPerThread
  maxQueued: 100_000,
  maxLiveInstances: 10_000,
  failedAttemptThreshold: 0,
  cancelGraceMs: 5_000,
  leaseMs: 30_000,
  defaultTimeoutMs: 0,
  defaultRetry: DEFAULT_RETRY,
  defaultBackoff: false as Partial<FastFailBackoff> | boolean,
  degradedDropMs: 0,
  supervisorIntervalMs: 1_000,
  storeRetryMs: 5_000,
  metricsPort: 0,
  dashboard: false as DashboardOptions | boolean,
  starvation: DEFAULT_STARVATION as Partial<StarvationPolicy> | false,
  retention: {} as RuntimeRetention | false, // resolved over DEFAULT_RETENTION (tasks/retention-rules.ts)
  agents: [] as AgentRegistration[],
  clock: systemClock,
  random: Math.random,
} satisfies Required<Omit<RuntimeOptions, 'logger' | 'createPool' | 'store'>>;

const KNOWN = new Set<string>([...Object.keys(DEFAULTS), 'logger', 'createPool', 'store']);
/** Upper bounds of the pool's size: beyond them a typo (100000 threads) would take the host down. */
const MAX_THREADS = 256;
const MAX_SLOTS_PER_THREAD = 1_000;

/** Validates and freezes runtime options. Throws INVALID_OPTIONS naming the option. */
export function resolveOptions(input: RuntimeOptions = {}, env: Readonly<Record<string, string | undefined>> = process.env): ResolvedOptions {
  if (typeof input !== 'object' || input === null) throw invalid('options must be an object');
  for (const key of Object.keys(input)) if (!KNOWN.has(key)) throw invalid(`options.${key} is not a known option`);
  const store = resolveStore(input.store, env.TROUPE_STORE);
  if (store) checkPostgresOptions(input);
  const o = { ...DEFAULTS, ...stripUndefined(input) };
  if (typeof o.dataDir !== 'string' || o.dataDir.length === 0) throw invalid('options.dataDir must be a non-empty string');
  if (o.dataDir.includes('\0')) throw invalid('options.dataDir must not contain a NUL byte');
  let existing: ReturnType<typeof statSync>;
  try {
    existing = statSync(o.dataDir, { throwIfNoEntry: false });
  } catch (error) {
    throw invalid(`options.dataDir ${o.dataDir} cannot be used (${(error as Error).message})`);
  }
  if (existing && !existing.isDirectory()) throw invalid(`options.dataDir ${o.dataDir} exists and is not a directory`);
  const threads = input.threads ?? Math.max(1, availableParallelism());
  positiveInt('threads', threads);
  if (threads > MAX_THREADS) throw invalid(`options.threads must be at most ${MAX_THREADS} (each thread is a V8 isolate of its own)`);
  positiveInt('slotsPerThread', o.slotsPerThread);
  if (o.slotsPerThread > MAX_SLOTS_PER_THREAD) throw invalid(`options.slotsPerThread must be at most ${MAX_SLOTS_PER_THREAD}`);
  const prefetch = input.prefetch ?? Math.max(1024, threads * o.slotsPerThread);
  nonNegativeInt('prefetch', prefetch);
  positiveInt('maxQueued', o.maxQueued);
  positiveInt('maxLiveInstances', o.maxLiveInstances);
  nonNegativeInt('failedAttemptThreshold', o.failedAttemptThreshold);
  nonNegativeInt('cancelGraceMs', o.cancelGraceMs);
  positiveInt('leaseMs', o.leaseMs);
  nonNegativeInt('defaultTimeoutMs', o.defaultTimeoutMs);
  nonNegativeInt('degradedDropMs', o.degradedDropMs);
  positiveInt('supervisorIntervalMs', o.supervisorIntervalMs);
  positiveInt('storeRetryMs', o.storeRetryMs);
  if (!(Number.isSafeInteger(o.metricsPort) && o.metricsPort >= 0 && o.metricsPort <= 65_535)) throw invalid('options.metricsPort must be a port number (1..65535), or 0 for off');
  if (!Array.isArray(o.agents)) throw invalid('options.agents must be an array of agent registrations');
  const clock = o.clock;
  if (!clock || typeof clock.now !== 'function' || typeof clock.setTimeout !== 'function' || typeof clock.clearTimeout !== 'function') {
    throw invalid('options.clock must implement now(), setTimeout() and clearTimeout()');
  }
  if (typeof o.random !== 'function') throw invalid('options.random must be a function returning [0, 1)');
  if (input.createPool !== undefined && typeof input.createPool !== 'function') throw invalid('options.createPool must be a function');
  const logger = input.logger;
  if (logger !== undefined && logger !== false && (typeof logger !== 'object' || logger === null)) {
    throw invalid('options.logger must be a pino logger, pino options, or false');
  }
  return Object.freeze({
    ...o,
    dataDir: resolve(o.dataDir),
    // The default guards the LMDB runtime's memory (its task table); on PostgreSQL queued tasks
    // are rows on disk, and each admission costs a count (store/postgres/admission.ts): opt-in.
    maxQueued: store && input.maxQueued === undefined ? Infinity : o.maxQueued,
    threads,
    prefetch,
    defaultRetry: resolveRetry(input.defaultRetry, DEFAULT_RETRY, 'options.defaultRetry'),
    defaultBackoff: resolveBackoff(input.defaultBackoff, null, 'options.defaultBackoff'),
    starvation: resolveStarvation(input.starvation),
    retention: resolveRuntimeRetention(input.retention),
    dashboard: resolveDashboard(input.dashboard),
    agents: [...o.agents],
    logger,
    createPool: input.createPool,
    store,
  });
}

/**
 * The store: `options.store` when given, else `TROUPE_STORE` when set (a `postgres://` URL), else
 * null (LMDB). A connection string must parse as a `postgres:` or `postgresql:` URL; the error
 * names where it came from and never echoes it (it may hold a password).
 */
export function resolveStore(given: unknown, fromEnv: string | undefined): Readonly<StoreOption> | null {
  if (given === undefined) {
    if (fromEnv === undefined || fromEnv === '') return null;
    return Object.freeze({ postgres: postgresUrl(fromEnv, 'the environment variable TROUPE_STORE') });
  }
  if (typeof given !== 'object' || given === null || Array.isArray(given)) throw invalid('options.store must be { postgres: connectionString }');
  for (const key of Object.keys(given)) if (key !== 'postgres') throw invalid(`options.store.${key} is not a store option (postgres)`);
  return Object.freeze({ postgres: postgresUrl((given as { postgres?: unknown }).postgres, 'options.store.postgres') });
}

/**
 * `value` if it is a PostgreSQL connection string; else INVALID_OPTIONS naming `where` (the option
 * or variable it came from) and never echoing it. The CLI checks `--store` with it before anything
 * starts.
 */
export function postgresUrl(value: unknown, where: string): string {
  if (typeof value !== 'string' || value.length === 0) throw invalid(`${where} must be a PostgreSQL connection string (postgres://…)`);
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw invalid(`${where} is not a URL: it must be a PostgreSQL connection string (postgres://…)`);
  }
  if (url.protocol !== 'postgres:' && url.protocol !== 'postgresql:') throw invalid(`${where} must be a postgres:// or postgresql:// URL, not ${url.protocol}`);
  return value;
}

/**
 * Options a runtime on PostgreSQL cannot honour yet: refused when given (set to anything but off),
 * so a switch of store never drops one in silence. `dataDir` is ignored (nothing is kept on disk).
 */
const NOT_ON_POSTGRES = ['maxLiveInstances', 'failedAttemptThreshold', 'degradedDropMs', 'supervisorIntervalMs', 'storeRetryMs', 'starvation'] as const;

function checkPostgresOptions(input: RuntimeOptions): void {
  for (const key of NOT_ON_POSTGRES) {
    const value = input[key];
    if (value === undefined || value === false || value === 0) continue;
    throw invalid(`options.${key} is not supported with store.postgres yet (README: "Running on many machines")`);
  }
}

/** Merges a partial retry policy over a base and validates it; `where` names it in errors. */
export function resolveRetry(partial: Partial<RetryPolicy> | undefined, base: Readonly<RetryPolicy>, where: string): Readonly<RetryPolicy> {
  if (partial === undefined) return base;
  if (typeof partial !== 'object' || partial === null) throw invalid(`${where} must be an object`);
  for (const key of Object.keys(partial)) {
    if (!(key in DEFAULT_RETRY)) throw invalid(`${where}.${key} is not a retry option`);
  }
  const policy = { ...base, ...stripUndefined(partial) };
  positiveInt(`${where}.maxAttempts`, policy.maxAttempts, where);
  if (policy.backoff !== 'fixed' && policy.backoff !== 'exponential') throw invalid(`${where}.backoff must be 'fixed' or 'exponential'`);
  nonNegativeInt(`${where}.delayMs`, policy.delayMs, where);
  nonNegativeInt(`${where}.maxDelayMs`, policy.maxDelayMs, where);
  if (typeof policy.jitter !== 'number' || !(policy.jitter >= 0 && policy.jitter <= 1)) throw invalid(`${where}.jitter must be a number in [0, 1]`);
  return Object.freeze(policy);
}

/**
 * Merges a partial fast-failure backoff over a base (or, with no base, over the opted-in values);
 * `false` turns it off (null), `true` is `{}`.
 */
export function resolveBackoff(partial: Partial<FastFailBackoff> | boolean | undefined, base: Readonly<FastFailBackoff> | null, where: string): Readonly<FastFailBackoff> | null {
  if (partial === false) return null;
  if (partial === undefined) return base;
  if (partial === true) return base ?? DEFAULT_BACKOFF;
  if (typeof partial !== 'object' || partial === null) throw invalid(`${where} must be an object or a boolean`);
  for (const key of Object.keys(partial)) if (!(key in DEFAULT_BACKOFF)) throw invalid(`${where}.${key} is not a backoff option`);
  const merged = { ...(base ?? DEFAULT_BACKOFF), ...stripUndefined(partial) };
  positiveInt(`${where}.failures`, merged.failures, where);
  positiveInt(`${where}.fastFailMs`, merged.fastFailMs, where);
  positiveInt(`${where}.pauseMs`, merged.pauseMs, where);
  return Object.freeze(merged);
}

/** Validates the starvation ladder; its thresholds must climb (starved no later than attention). */
function resolveStarvation(partial: Partial<StarvationPolicy> | false | undefined): Readonly<StarvationPolicy> | null {
  if (partial === false) return null;
  if (partial === undefined) return DEFAULT_STARVATION;
  const where = 'options.starvation';
  if (typeof partial !== 'object' || partial === null) throw invalid(`${where} must be an object or false`);
  for (const key of Object.keys(partial)) if (!(key in DEFAULT_STARVATION)) throw invalid(`${where}.${key} is not a starvation option`);
  const policy = { ...DEFAULT_STARVATION, ...stripUndefined(partial) };
  positiveInt(`${where}.minQueuedMs`, policy.minQueuedMs, where);
  positiveInt(`${where}.starvedAfterCycles`, policy.starvedAfterCycles, where);
  nonNegativeInt(`${where}.attentionAfterCycles`, policy.attentionAfterCycles, where);
  if (policy.attentionAfterCycles !== 0 && policy.attentionAfterCycles < policy.starvedAfterCycles) {
    throw invalid(`${where}: the ladder must climb: attentionAfterCycles (${policy.attentionAfterCycles}) must be 0 or at least starvedAfterCycles (${policy.starvedAfterCycles})`);
  }
  return Object.freeze(policy);
}

/** A copy without the keys whose value is undefined (so they do not override defaults). */
export function stripUndefined<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<T>;
}

function invalid(message: string): TroupeError {
  return new TroupeError('INVALID_OPTIONS', message);
}

function positiveInt(name: string, value: unknown, prefix?: string): void {
  if (!Number.isSafeInteger(value) || (value as number) < 1) throw invalid(`${prefix ? name : `options.${name}`} must be a positive integer`);
}

function nonNegativeInt(name: string, value: unknown, prefix?: string): void {
  if (!Number.isSafeInteger(value) || (value as number) < 0) throw invalid(`${prefix ? name : `options.${name}`} must be a non-negative integer`);
}

export { positiveInt as assertPositiveInt, nonNegativeInt as assertNonNegativeInt, invalid as invalidOptions };

/**
 * Checks the options object of an API call: undefined, or a plain object whose keys are all in
 * `known`. Anything else is INVALID_OPTIONS naming the call and the option (a typo such as
 * `{ State: 'done' }` would otherwise be ignored in silence).
 */
export function checkCallOptions(options: unknown, known: readonly string[], call: string): void {
  if (options === undefined) return;
  if (types.isProxy(options)) throw new TroupeError('INVALID_OPTIONS', `${call}: options must be a plain object`);
  const proto = typeof options === 'object' && options !== null ? Object.getPrototypeOf(options) : undefined;
  if (proto !== Object.prototype && proto !== null) throw new TroupeError('INVALID_OPTIONS', `${call}: options must be a plain object`);
  for (const key of Object.keys(options as object)) {
    if (!known.includes(key)) throw new TroupeError('INVALID_OPTIONS', `${call}: ${key} is not one of its options (${known.join(', ')})`);
  }
}

/** `rt.backup(path, options)`'s arguments, checked: the destination resolved against the working directory. */
export function checkBackupArgs(path: unknown, options: unknown): { dest: string; compact: boolean } {
  checkCallOptions(options, ['compact'], 'backup');
  if (typeof path !== 'string' || path.length === 0 || path.length > 4096) throw new TroupeError('INVALID_INPUT', 'backup: path must be a non-empty string of at most 4096 characters');
  const compact = (options as { compact?: unknown } | undefined)?.compact ?? false;
  if (typeof compact !== 'boolean') throw new TroupeError('INVALID_OPTIONS', 'backup: compact must be a boolean');
  return { dest: resolve(path), compact };
}
