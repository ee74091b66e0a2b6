/**
 * The one options pipeline: documented options → DEFAULTS → resolveOptions() validates, names the
 * bad option, and freezes the result. Durations end in `Ms`.
 */
import { availableParallelism } from 'node:os';
import { resolve } from 'node:path';
import type { Clock } from './clock.js';
import { systemClock } from './clock.js';
import { TroupeError } from './errors.js';
import type { LoggerOption } from './log.js';
import type { AgentPool, PiscinaPoolOptions } from './pool/pool.js';
import type { RetryPolicy } from './store/records.js';
import type { AgentRegistration } from './agents/registry.js';

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
   * of the next attempt overlaps the running ones. The window adapts: it covers the start commit's
   * latency for fast agents and shrinks to zero for slow ones. Prefetched attempts count against
   * agent and instance limits as running, and a crash counts them against their retry budget like any
   * started attempt. @default max(64, threads × slotsPerThread)
   */
  prefetch?: number;
  /** Queued tasks beyond which submit rejects with AT_CAPACITY (nothing stored). @default 100_000 */
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
  /** A pino logger, pino options, or false for silence. @default pino at level 'warn' */
  logger?: LoggerOption;
  /** Agents to register at start. */
  agents?: AgentRegistration[];
  /** Time source for timers, backoff, timeouts and grace periods. @default the system clock */
  clock?: Clock;
  /** Random source in [0, 1) for backoff jitter. @default Math.random */
  random?: () => number;
  /** Replaces the Piscina pool (tests). */
  createPool?: (options: PiscinaPoolOptions) => AgentPool;
}

/** Options after defaults and validation. */
export type ResolvedOptions = Readonly<Required<Omit<RuntimeOptions, 'logger' | 'createPool' | 'defaultRetry'>>> & {
  readonly logger: LoggerOption | undefined;
  readonly createPool: ((options: PiscinaPoolOptions) => AgentPool) | undefined;
  readonly defaultRetry: Readonly<RetryPolicy>;
};

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
  agents: [] as AgentRegistration[],
  clock: systemClock,
  random: Math.random,
} satisfies Required<Omit<RuntimeOptions, 'logger' | 'createPool'>>;

const KNOWN = new Set<string>([...Object.keys(DEFAULTS), 'logger', 'createPool']);

/** Validates and freezes runtime options. Throws INVALID_OPTIONS naming the option. */
export function resolveOptions(input: RuntimeOptions = {}): ResolvedOptions {
  if (typeof input !== 'object' || input === null) throw invalid('options must be an object');
  for (const key of Object.keys(input)) if (!KNOWN.has(key)) throw invalid(`options.${key} is not a known option`);
  const o = { ...DEFAULTS, ...stripUndefined(input) };
  if (typeof o.dataDir !== 'string' || o.dataDir.length === 0) throw invalid('options.dataDir must be a non-empty string');
  const threads = input.threads ?? Math.max(1, availableParallelism());
  positiveInt('threads', threads);
  positiveInt('slotsPerThread', o.slotsPerThread);
  const prefetch = input.prefetch ?? Math.max(64, threads * o.slotsPerThread);
  nonNegativeInt('prefetch', prefetch);
  positiveInt('maxQueued', o.maxQueued);
  positiveInt('maxLiveInstances', o.maxLiveInstances);
  nonNegativeInt('failedAttemptThreshold', o.failedAttemptThreshold);
  nonNegativeInt('cancelGraceMs', o.cancelGraceMs);
  positiveInt('leaseMs', o.leaseMs);
  nonNegativeInt('defaultTimeoutMs', o.defaultTimeoutMs);
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
    threads,
    prefetch,
    defaultRetry: resolveRetry(input.defaultRetry, DEFAULT_RETRY, 'options.defaultRetry'),
    agents: [...o.agents],
    logger,
    createPool: input.createPool,
  });
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

function stripUndefined<T extends object>(value: T): Partial<T> {
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
