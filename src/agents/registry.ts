/**
 * Agent registrations: name → module, limits and policy. Agents are registered in-process at every
 * start (like BullMQ workers); queued tasks of an agent that is not registered yet simply wait.
 */
import { statSync } from 'node:fs';
import { isAbsolute } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { RetryPolicy } from '../store/records.js';
import { TroupeError } from '../errors.js';
import { assertNonNegativeInt, assertPositiveInt, invalidOptions, resolveBackoff, resolveRetry, type FastFailBackoff } from '../options.js';
import { dailyAt } from '../scheduler/cron.js';
import { resolveAgentRetention, type ResolvedPolicy, type RetentionPolicy } from '../tasks/retention-rules.js';

/** What `rt.agents.register()` takes. */
export interface AgentRegistration {
  /** Unique name tasks refer to. Letters, digits, `.`, `_`, `-`; up to 64 characters. */
  name: string;
  /** The agent module: a `file:` URL, or an absolute path. Its default export is `defineAgent(...)`. */
  module: URL | string;
  /**
   * Attempts of this agent running at once, across all its instances: a number, or
   * `{ total?, [model]: n }`, where a task's `labels.model` picks the sub-limit it also counts
   * against. @default unlimited
   */
  concurrency?: number | ConcurrencyLimits;
  /** What the agent can do: tasks that name `requires` are routed to an agent covering all of them. */
  capabilities?: string[];
  /** Rate pacing: a token bucket of `limit` attempt starts, refilled evenly over `windowMs`. Survives a restart. */
  rate?: RateLimit;
  /** Most attempt starts per day; the day resets at `resetAt` ('HH:MM', default '00:00') in `tz` (default 'UTC'). */
  dailyLimit?: number | DailyLimit;
  /**
   * Pause the agent after repeated fast failures (opt-in): `true` or an object turns it on, merged
   * over options.defaultBackoff (or 3 failures under 60 s → 30 min); `false` turns it off.
   * @default options.defaultBackoff (off unless set)
   */
  backoff?: Partial<FastFailBackoff> | boolean;
  /** Per-attempt timeout; 0 = none. @default options.defaultTimeoutMs */
  timeoutMs?: number;
  /** Retry policy, merged over options.defaultRetry. */
  retry?: Partial<RetryPolicy>;
  /** How long this agent's settled tasks are kept, per state: each rule given replaces the runtime's for that state (see options.retention). */
  retention?: RetentionPolicy;
}

/** Per-model sub-limits under an optional total: `{ total: 5, 'gpt-5': 1 }`. */
export type ConcurrencyLimits = { total?: number } & { [model: string]: number | undefined };

/** A token bucket: at most `limit` starts in a burst, refilled at `limit` per `windowMs`. */
export interface RateLimit {
  limit: number;
  windowMs: number;
}

/** A daily start budget. */
export interface DailyLimit {
  limit: number;
  /** Wall time the day resets at, 'HH:MM' (24 h). @default '00:00' */
  resetAt?: string;
  /** IANA zone of `resetAt`. @default 'UTC' */
  tz?: string;
}

/** A validated registration. */
export interface RegisteredAgent {
  readonly name: string;
  /** `file:` URL href. */
  readonly module: string;
  /** Total concurrency (null = none). */
  readonly concurrency: number | null;
  /** Per-model sub-limits, picked by a task's `labels.model`. */
  readonly models: Readonly<Record<string, number>>;
  readonly capabilities: readonly string[];
  readonly rate: Readonly<RateLimit> | null;
  readonly dailyLimit: Readonly<Required<DailyLimit>> | null;
  readonly backoff: Readonly<FastFailBackoff> | null;
  readonly timeoutMs: number;
  readonly retry: Readonly<RetryPolicy>;
  /** The states the agent has retention rules of its own for (null: none). */
  readonly retention: ResolvedPolicy | null;
}

/** The names of the built-in agents. */
export type BuiltinAgentName = 'echo' | 'sleep' | 'fail' | 'shell';

/** The registration of a built-in agent: `rt.agents.register(builtinAgent('echo'))`. */
export function builtinAgent(name: BuiltinAgentName, overrides: Omit<Partial<AgentRegistration>, 'module'> = {}): AgentRegistration {
  if (name !== 'echo' && name !== 'sleep' && name !== 'fail' && name !== 'shell') throw invalidOptions(`unknown built-in agent ${JSON.stringify(name)}`);
  return { name, ...overrides, module: new URL(`../../actors/agents/${name}.agent.js`, import.meta.url) };
}

/** What an agent name may be: letters, digits, `.`, `_`, `-`, starting with a letter or digit; up to 64 characters. */
export const AGENT_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const KNOWN = new Set(['name', 'module', 'concurrency', 'capabilities', 'timeoutMs', 'retry', 'rate', 'dailyLimit', 'backoff', 'retention']);

/** Validates a registration against the runtime defaults. Throws INVALID_OPTIONS naming the field. */
export function validateRegistration(
  registration: AgentRegistration,
  defaults: { timeoutMs: number; retry: Readonly<RetryPolicy>; backoff: Readonly<FastFailBackoff> | null },
): RegisteredAgent {
  if (typeof registration !== 'object' || registration === null) throw invalidOptions('agents.register expects an object');
  for (const key of Object.keys(registration)) if (!KNOWN.has(key)) throw invalidOptions(`agent.${key} is not a known agent option`);
  const { name } = registration;
  if (typeof name !== 'string' || !AGENT_NAME.test(name)) {
    throw invalidOptions(`agent.name must match ${AGENT_NAME.source} (got ${JSON.stringify(name)})`);
  }
  const where = `agent ${name}`;
  const module = moduleHref(registration.module, where);
  const { total, models } = concurrencyOf(registration.concurrency, where);
  if (registration.timeoutMs !== undefined) assertNonNegativeInt(`${where}: timeoutMs`, registration.timeoutMs, where);
  const capabilities = registration.capabilities ?? [];
  if (!Array.isArray(capabilities) || capabilities.some((c) => typeof c !== 'string' || c.length === 0)) {
    throw invalidOptions(`${where}: capabilities must be an array of non-empty strings`);
  }
  return Object.freeze({
    name,
    module,
    concurrency: total,
    models,
    capabilities: Object.freeze([...new Set(capabilities)]),
    rate: rateOf(registration.rate, where),
    dailyLimit: dailyLimitOf(registration.dailyLimit, where),
    backoff: resolveBackoff(registration.backoff, defaults.backoff, `${where}: backoff`),
    timeoutMs: registration.timeoutMs ?? defaults.timeoutMs,
    retry: resolveRetry(registration.retry, defaults.retry, `${where}: retry`),
    retention: resolveAgentRetention(registration.retention, where) ?? null,
  });
}

function concurrencyOf(value: AgentRegistration['concurrency'], where: string): { total: number | null; models: Readonly<Record<string, number>> } {
  if (value === undefined) return { total: null, models: Object.freeze({}) };
  if (typeof value === 'number') {
    assertPositiveInt(`${where}: concurrency`, value, where);
    return { total: value, models: Object.freeze({}) };
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw invalidOptions(`${where}: concurrency must be a positive integer or { total?, [model]: n }`);
  }
  const models: Record<string, number> = {};
  let total: number | null = null;
  for (const [key, limit] of Object.entries(value)) {
    if (limit === undefined) continue;
    assertPositiveInt(`${where}: concurrency.${key}`, limit, where);
    if (key === 'total') total = limit;
    else models[key] = limit;
  }
  return { total, models: Object.freeze(models) };
}

function rateOf(value: unknown, where: string): Readonly<RateLimit> | null {
  if (value === undefined) return null;
  if (typeof value !== 'object' || value === null) throw invalidOptions(`${where}: rate must be { limit, windowMs }`);
  const { limit, windowMs, ...rest } = value as RateLimit;
  if (Object.keys(rest).length > 0) throw invalidOptions(`${where}: rate.${Object.keys(rest)[0]} is not a rate option`);
  assertPositiveInt(`${where}: rate.limit`, limit, where);
  assertPositiveInt(`${where}: rate.windowMs`, windowMs, where);
  return Object.freeze({ limit, windowMs });
}

function dailyLimitOf(value: unknown, where: string): Readonly<Required<DailyLimit>> | null {
  if (value === undefined) return null;
  const daily = typeof value === 'number' ? { limit: value } : value;
  if (typeof daily !== 'object' || daily === null) throw invalidOptions(`${where}: dailyLimit must be a number or { limit, resetAt?, tz? }`);
  const { limit, resetAt = '00:00', tz = 'UTC', ...rest } = daily as DailyLimit;
  if (Object.keys(rest).length > 0) throw invalidOptions(`${where}: dailyLimit.${Object.keys(rest)[0]} is not a dailyLimit option`);
  assertPositiveInt(`${where}: dailyLimit.limit`, limit, where);
  // Compiling the reset schedule validates 'HH:MM' (INVALID_OPTIONS) and the zone (INVALID_TIMEZONE).
  try {
    dailyAt(resetAt, tz);
  } catch (error) {
    if (error instanceof TroupeError) throw new TroupeError(error.code, `${where}: dailyLimit: ${error.message}`);
    throw error;
  }
  return Object.freeze({ limit, resetAt, tz });
}

function moduleHref(module: URL | string, where: string): string {
  let url: URL;
  let path: string;
  try {
    if (module instanceof URL) url = module;
    else if (typeof module === 'string' && module.startsWith('file:')) url = new URL(module);
    else if (typeof module === 'string' && isAbsolute(module)) url = pathToFileURL(module);
    else throw invalidOptions(`${where}: module must be a file: URL or an absolute path (got ${JSON.stringify(module)})`);
    if (url.protocol !== 'file:') throw invalidOptions(`${where}: module must be a file: URL`);
    // Throws for what no file path can be: a host other than localhost, a NUL byte, an encoded slash.
    path = fileURLToPath(url);
  } catch (error) {
    if (error instanceof TroupeError) throw error;
    throw invalidOptions(`${where}: module ${String(module)} is not a local file URL or path (${(error as Error).message})`);
  }
  let found: ReturnType<typeof statSync>;
  try {
    found = statSync(path, { throwIfNoEntry: false });
  } catch (error) {
    // Not a missing file: a path through a file (ENOTDIR), too long, or not ours to read.
    throw new TroupeError('INVALID_OPTIONS', `${where}: module ${path} cannot be read (${(error as Error).message})`);
  }
  if (!found) throw new TroupeError('INVALID_OPTIONS', `${where}: module not found at ${path}`);
  if (!found.isFile()) throw new TroupeError('INVALID_OPTIONS', `${where}: module ${path} is not a file`);
  return url.href;
}

/** The live registry. */
export class AgentRegistry {
  readonly #agents = new Map<string, RegisteredAgent>();

  set(agent: RegisteredAgent): void {
    this.#agents.set(agent.name, agent);
  }

  get(name: string): RegisteredAgent | undefined {
    return this.#agents.get(name);
  }

  list(): RegisteredAgent[] {
    return [...this.#agents.values()];
  }

  /** Registered agents that cover every capability in `requires`, in registration order. */
  covering(requires: readonly string[]): RegisteredAgent[] {
    return this.list().filter((agent) => requires.every((c) => agent.capabilities.includes(c)));
  }
}
