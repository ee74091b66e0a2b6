/**
 * Agent registrations: name → module, limits and policy. Agents are registered in-process at every
 * start (like BullMQ workers); queued tasks of an agent that is not registered yet simply wait.
 */
import { existsSync } from 'node:fs';
import { isAbsolute } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { RetryPolicy } from '../store/records.js';
import { TroupeError } from '../errors.js';
import { assertNonNegativeInt, assertPositiveInt, invalidOptions, resolveRetry } from '../options.js';

/** What `rt.agents.register()` takes. */
export interface AgentRegistration {
  /** Unique name tasks refer to. Letters, digits, `.`, `_`, `-`; up to 64 characters. */
  name: string;
  /** The agent module: a `file:` URL, or an absolute path. Its default export is `defineAgent(...)`. */
  module: URL | string;
  /** Attempts of this agent running at once, across all its instances. @default unlimited */
  concurrency?: number;
  /** What the agent can do (used for `requires` routing). */
  capabilities?: string[];
  /** Per-attempt timeout; 0 = none. @default options.defaultTimeoutMs */
  timeoutMs?: number;
  /** Retry policy, merged over options.defaultRetry. */
  retry?: Partial<RetryPolicy>;
}

/** A validated registration. */
export interface RegisteredAgent {
  readonly name: string;
  /** `file:` URL href. */
  readonly module: string;
  readonly concurrency: number | null;
  readonly capabilities: readonly string[];
  readonly timeoutMs: number;
  readonly retry: Readonly<RetryPolicy>;
}

/** The names of the built-in agents. */
export type BuiltinAgentName = 'echo' | 'sleep' | 'fail';

/** The registration of a built-in agent: `rt.agents.register(builtinAgent('echo'))`. */
export function builtinAgent(name: BuiltinAgentName, overrides: Omit<Partial<AgentRegistration>, 'module'> = {}): AgentRegistration {
  if (name !== 'echo' && name !== 'sleep' && name !== 'fail') throw invalidOptions(`unknown built-in agent ${JSON.stringify(name)}`);
  return { name, ...overrides, module: new URL(`../../actors/agents/${name}.agent.js`, import.meta.url) };
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const KNOWN = new Set(['name', 'module', 'concurrency', 'capabilities', 'timeoutMs', 'retry']);

/** Validates a registration against the runtime defaults. Throws INVALID_OPTIONS naming the field. */
export function validateRegistration(
  registration: AgentRegistration,
  defaults: { timeoutMs: number; retry: Readonly<RetryPolicy> },
): RegisteredAgent {
  if (typeof registration !== 'object' || registration === null) throw invalidOptions('agents.register expects an object');
  for (const key of Object.keys(registration)) if (!KNOWN.has(key)) throw invalidOptions(`agent.${key} is not a known agent option`);
  const { name } = registration;
  if (typeof name !== 'string' || !NAME.test(name)) {
    throw invalidOptions(`agent.name must match ${NAME.source} (got ${JSON.stringify(name)})`);
  }
  const where = `agent ${name}`;
  const module = moduleHref(registration.module, where);
  if (registration.concurrency !== undefined) assertPositiveInt(`${where}: concurrency`, registration.concurrency, where);
  if (registration.timeoutMs !== undefined) assertNonNegativeInt(`${where}: timeoutMs`, registration.timeoutMs, where);
  const capabilities = registration.capabilities ?? [];
  if (!Array.isArray(capabilities) || capabilities.some((c) => typeof c !== 'string' || c.length === 0)) {
    throw invalidOptions(`${where}: capabilities must be an array of non-empty strings`);
  }
  return Object.freeze({
    name,
    module,
    concurrency: registration.concurrency ?? null,
    capabilities: Object.freeze([...capabilities]),
    timeoutMs: registration.timeoutMs ?? defaults.timeoutMs,
    retry: resolveRetry(registration.retry, defaults.retry, `${where}: retry`),
  });
}

function moduleHref(module: URL | string, where: string): string {
  let url: URL;
  if (module instanceof URL) url = module;
  else if (typeof module === 'string' && module.startsWith('file:')) url = new URL(module);
  else if (typeof module === 'string' && isAbsolute(module)) url = pathToFileURL(module);
  else throw invalidOptions(`${where}: module must be a file: URL or an absolute path (got ${JSON.stringify(module)})`);
  if (url.protocol !== 'file:') throw invalidOptions(`${where}: module must be a file: URL`);
  const path = fileURLToPath(url);
  if (!existsSync(path)) throw new TroupeError('INVALID_OPTIONS', `${where}: module not found at ${path}`);
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
}
