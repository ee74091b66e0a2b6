/**
 * Task specs (what `submit` takes), their validation, the instance key, and the public Task view.
 * Validation runs before anything is stored, and every problem names the field.
 */
import { createHash } from 'node:crypto';
import { resolve as resolvePath } from 'node:path';
import { types } from 'node:util';
import { describeUnserializable, messageOf } from '../../actors/wire.js';
import { plainConstructor } from '../allocation.js';
import { TroupeError } from '../errors.js';
import { checkId } from '../ids.js';
import { DEFAULT_RETRY, resolveRetry, stripUndefined } from '../options.js';
import type { RegisteredAgent } from '../agents/registry.js';
import { resolveTaskRetention } from './retention-rules.js';
import type { RetryPolicy, TaskRecord, TaskRetention } from '../store/records.js';

export type { WorkspaceSpec, WorkspaceKeep, TaskSpec, Task, TaskHold } from '../api/tasks.js';
import type { WorkspaceKeep, WorkspaceSpec, TaskSpec, Task } from '../api/tasks.js';

/** Stands in for a per-task workspace in instance keys: such tasks share their instance. */
export const PER_TASK_WORKSPACE = '(per-task)';

/** A spec after validation, ready to become a record. */
export interface ValidSpec {
  /** The agent to run it; undefined when `requires` matched no registered agent. */
  agent: RegisteredAgent | undefined;
  /** No agent covers `requires`: the task goes to needs_attention (reason `unmatched`). */
  unmatched: boolean;
  requires?: string[];
  /** What the spec itself set, kept for an unmatched task so a later route can apply its agent's defaults. */
  unrouted?: { retry?: Partial<RetryPolicy>; timeoutMs?: number };
  /** The agent name to store: the picked or named agent, '' while unrouted. */
  agentName: string;
  input: unknown;
  priority: number;
  lane: string;
  /** A given path, or {@link PER_TASK_WORKSPACE} for one created per task. */
  workspace?: string;
  /** Set for a workspace Troupe creates (and may clean). */
  workspaceKeep?: WorkspaceKeep;
  labels: Record<string, string>;
  idempotencyKey?: string;
  parentId?: string;
  timeoutMs: number;
  retry: Readonly<RetryPolicy>;
  instanceKey: string;
  /** Delayed start (epoch ms), if any. */
  runAt?: number;
  retention?: TaskRetention;
}

const KNOWN = new Set(['agent', 'requires', 'input', 'priority', 'lane', 'workspace', 'labels', 'idempotencyKey', 'parentId', 'timeoutMs', 'retry', 'runAt', 'delayMs', 'retention']);
const LANE = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$/;

/**
 * Validates a spec. Throws UNKNOWN_AGENT or INVALID_INPUT naming the field; stores nothing.
 * `route` picks an agent for a spec that names only `requires` (undefined: none covers them).
 */
export function validateSpec(
  spec: TaskSpec,
  lookup: (name: string) => RegisteredAgent | undefined,
  where = 'task',
  now = Date.now(),
  route: (requires: readonly string[]) => RegisteredAgent | undefined = () => undefined,
): ValidSpec {
  if (types.isProxy(spec)) throw bad(`${where} is a Proxy; a task spec must be a plain object`);
  try {
    return checkSpec(spec, lookup, where, now, route);
  } catch (error) {
    if (error instanceof TroupeError) throw error;
    // A getter of the spec or of one of its fields threw: the spec cannot be read, so it is bad input.
    throw bad(`${where} could not be read: ${messageOf(error)}`);
  }
}

function checkSpec(
  spec: TaskSpec,
  lookup: (name: string) => RegisteredAgent | undefined,
  where: string,
  now: number,
  route: (requires: readonly string[]) => RegisteredAgent | undefined,
): ValidSpec {
  if (typeof spec !== 'object' || spec === null || Array.isArray(spec)) throw bad(`${where} must be an object`);
  for (const key in spec) if (!KNOWN.has(key) && Object.hasOwn(spec, key)) throw bad(`${where}.${key} is not a task field`);
  const requires = spec.requires === undefined ? undefined : requiresOf(spec.requires, where);
  if (spec.agent === undefined && requires === undefined) throw bad(`${where}.agent must be a non-empty string (or give requires)`);
  if (spec.agent !== undefined && (typeof spec.agent !== 'string' || spec.agent.length === 0)) throw bad(`${where}.agent must be a non-empty string`);
  const named = spec.agent === undefined ? undefined : lookup(spec.agent);
  if (spec.agent !== undefined && !named) throw new TroupeError('UNKNOWN_AGENT', `${where}.agent: no agent named ${JSON.stringify(spec.agent)} is registered`);
  const problem = describeUnserializable(spec.input, `${where}.input`);
  if (problem) throw bad(`${problem}; task input must be plain data`);
  const priority = spec.priority ?? 0;
  if (!Number.isSafeInteger(priority)) throw bad(`${where}.priority must be an integer`);
  const lane = spec.lane ?? 'default';
  if (typeof lane !== 'string' || !LANE.test(lane)) throw bad(`${where}.lane must match ${LANE.source}`);
  const workspace = workspaceOf(spec.workspace, where);
  const labels = spec.labels === undefined ? NO_LABELS : labelsOf(spec.labels, where);
  if (spec.idempotencyKey !== undefined) checkId(spec.idempotencyKey, `${where}.idempotencyKey`);
  if (spec.parentId !== undefined) checkId(spec.parentId, `${where}.parentId`);
  if (spec.timeoutMs !== undefined && !(Number.isSafeInteger(spec.timeoutMs) && spec.timeoutMs >= 0)) throw bad(`${where}.timeoutMs must be a non-negative integer`);
  if (spec.runAt !== undefined && spec.delayMs !== undefined) throw bad(`${where}: give runAt or delayMs, not both`);
  if (spec.runAt !== undefined && !(Number.isSafeInteger(spec.runAt) && spec.runAt >= 0)) throw bad(`${where}.runAt must be epoch milliseconds (a non-negative integer)`);
  if (spec.delayMs !== undefined && !(Number.isSafeInteger(spec.delayMs) && spec.delayMs >= 0)) throw bad(`${where}.delayMs must be a non-negative integer`);
  const runAt = spec.runAt ?? (spec.delayMs ? now + spec.delayMs : undefined);
  let retry: Readonly<RetryPolicy>;
  let retention: TaskRetention | undefined;
  try {
    // Validated against the library default first, so a bad policy fails even before routing.
    retry = resolveRetry(spec.retry, named?.retry ?? DEFAULT_RETRY, `${where}.retry`);
    retention = resolveTaskRetention(spec.retention, `${where}.retention`);
  } catch (error) {
    throw bad((error as Error).message);
  }
  // Route only a valid spec: picking an agent is the last step, and it must not be wasted.
  const agent = named ?? route(requires!);
  const unmatched = agent === undefined || (requires !== undefined && !requires.every((c) => agent.capabilities.includes(c)));
  if (agent && agent !== named) retry = resolveRetry(spec.retry, agent.retry, `${where}.retry`);
  const timeoutMs = spec.timeoutMs ?? agent?.timeoutMs ?? 0;
  const path = workspace?.path;
  const result: ValidSpec = {
    agent,
    unmatched,
    agentName: agent?.name ?? '',
    input: spec.input ?? null,
    priority,
    lane,
    workspace: path,
    labels,
    idempotencyKey: spec.idempotencyKey,
    parentId: spec.parentId,
    timeoutMs,
    retry,
    instanceKey: agent ? instanceKeyOf({ agent, lane, workspace: path, timeoutMs, retry }) : '',
  };
  if (requires !== undefined) result.requires = requires;
  if (workspace?.keep !== undefined) result.workspaceKeep = workspace.keep;
  if (!agent) result.unrouted = stripUndefined({ retry: spec.retry, timeoutMs: spec.timeoutMs });
  if (runAt !== undefined && runAt > now) result.runAt = runAt;
  if (retention !== undefined) result.retention = retention;
  return result;
}

/** Labels of a task without any: one shared frozen object (records are never changed in place). */
const NO_LABELS: Record<string, string> = Object.freeze({}) as Record<string, string>;

/** Labels as a task spec (or a list filter) gives them, checked and copied; INVALID_INPUT naming `where` for anything but a plain object of strings. */
export function labelsOf(labels: unknown, where: string): Record<string, string> {
  if (typeof labels !== 'object' || labels === null || Array.isArray(labels)) throw bad(`${where}.labels must be an object of string values`);
  // A Map (or any class instance) would be stored as {}: only a plain object is taken.
  const problem = describeUnserializable(labels, `${where}.labels`);
  if (problem) throw bad(`${problem}; labels must be a plain object of string values`);
  const copy: Record<string, string> = {};
  for (const [key, value] of Object.entries(labels)) {
    if (typeof value !== 'string') throw bad(`${where}.labels must be an object of string values`);
    copy[key] = value;
  }
  return copy;
}

/** What an instance key is made of. */
export interface InstanceKeyParts {
  agent: RegisteredAgent;
  lane: string;
  workspace?: string | undefined;
  timeoutMs: number;
  retry: Readonly<RetryPolicy>;
}

/**
 * Stable hash of (workspace, agent, lane, execution policy): tasks with the same key share one
 * instance actor. The readable prefix makes keys easy to spot in stats and logs.
 */
export function instanceKeyOf({ agent, lane, workspace, timeoutMs, retry }: InstanceKeyParts): string {
  // Most tasks use their agent's own policy: cache those keys per registration (a sha256 per
  // submit was measurable on the hot path).
  const cacheable = retry === agent.retry && timeoutMs === agent.timeoutMs;
  let cache = cacheable ? KEY_CACHE.get(agent) : undefined;
  const cacheKey = cacheable ? (workspace === undefined ? lane : `${lane}\u0000${workspace}`) : undefined;
  const cached = cacheKey !== undefined ? cache?.get(cacheKey) : undefined;
  if (cached !== undefined) return cached;
  const key = computeInstanceKey(agent.name, lane, workspace, timeoutMs, retry);
  if (cacheKey !== undefined && (cache?.size ?? 0) < KEY_CACHE_LIMIT) {
    if (!cache) KEY_CACHE.set(agent, (cache = new Map()));
    cache.set(cacheKey, key);
  }
  return key;
}

const KEY_CACHE = new WeakMap<RegisteredAgent, Map<string, string>>();
const KEY_CACHE_LIMIT = 10_000;

function computeInstanceKey(agent: string, lane: string, workspace: string | undefined, timeoutMs: number, retry: Readonly<RetryPolicy>): string {
  const policy = [timeoutMs, retry.maxAttempts, retry.backoff, retry.delayMs, retry.maxDelayMs, retry.jitter];
  const hash = createHash('sha256')
    .update(JSON.stringify([workspace ?? null, agent, lane, policy]))
    .digest('base64url')
    .slice(0, 12);
  return `${agent}/${lane}/${hash}`;
}

/** The public view of a stored task. */
export function toTask(record: TaskRecord): Task {
  return new TaskView(record);
}

/**
 * A task as callers get it: a plain object made by a constructor, not a literal, which V8
 * pretenured (every `submit()` and `wait()` makes one; see src/allocation.ts). Only the optional
 * fields the record has are set, in the body, where V8 sizes the object for them.
 */
const TaskView = plainConstructor(function (this: Task, record: TaskRecord) {
  this.id = record.id;
  this.agent = record.agent;
  this.state = record.state;
  this.input = record.input;
  this.attempts = record.attempts;
  this.runs = record.runs;
  this.priority = record.priority;
  this.lane = record.lane;
  this.instanceKey = record.instanceKey;
  this.labels = { ...record.labels };
  this.timeoutMs = record.timeoutMs;
  this.retry = copyRetry(record.retry);
  this.createdAt = record.createdAt;
  this.updatedAt = record.updatedAt;
  if (record.output !== undefined) this.output = record.output;
  if (record.result !== undefined) this.result = { ...record.result };
  if (record.error !== undefined) this.error = { ...record.error };
  if (record.reason !== undefined) this.reason = record.reason;
  if (record.progress !== undefined) this.progress = { ...record.progress };
  if (record.workspace !== undefined) this.workspace = record.workspace;
  if (record.parentId !== undefined) this.parentId = record.parentId;
  if (record.idempotencyKey !== undefined) this.idempotencyKey = record.idempotencyKey;
  if (record.requires !== undefined) this.requires = [...record.requires];
  if (record.queuedAt !== undefined) this.queuedAt = record.queuedAt;
  if (record.waitingFor !== undefined) this.waitingFor = structuredClone(record.waitingFor);
  if (record.runAt !== undefined) this.runAt = record.runAt;
  if (record.startedAt !== undefined) this.startedAt = record.startedAt;
  if (record.settledAt !== undefined) this.settledAt = record.settledAt;
  if (record.retention !== undefined) this.retention = { ...record.retention };
});

/**
 * A task's retry policy, copied for its Task field by field over a template: the policies tasks
 * share are frozen, and V8 copies a frozen object's spread on a slow path (a microbenchmark: 78 ns
 * against 10-29; toTask runs twice a task, for the submit and for the wait).
 */
function copyRetry(retry: Readonly<RetryPolicy>): RetryPolicy {
  return { ...RETRY, maxAttempts: retry.maxAttempts, backoff: retry.backoff, delayMs: retry.delayMs, maxDelayMs: retry.maxDelayMs, jitter: retry.jitter } satisfies Required<RetryPolicy>;
}

/** What {@link copyRetry} spreads: a template with every field, not a literal (see src/allocation.ts). */
const RETRY: Required<RetryPolicy> = { maxAttempts: 1, backoff: 'fixed', delayMs: 0, maxDelayMs: 0, jitter: 0 };

const KEEP: readonly WorkspaceKeep[] = ['always', 'never', 'on_failure'];

function workspaceOf(value: unknown, where: string): { path: string; keep?: WorkspaceKeep } | undefined {
  if (value === undefined) return undefined;
  if (typeof value === 'string') {
    if (value.length === 0) throw bad(`${where}.workspace must be a non-empty path or { path?, keep? }`);
    return { path: resolvePath(value) };
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw bad(`${where}.workspace must be a non-empty path or { path?, keep? }`);
  const { path, keep, ...rest } = value as WorkspaceSpec;
  if (Object.keys(rest).length > 0) throw bad(`${where}.workspace.${Object.keys(rest)[0]} is not a workspace field`);
  if (path !== undefined && (typeof path !== 'string' || path.length === 0)) throw bad(`${where}.workspace.path must be a non-empty string`);
  if (keep !== undefined && !KEEP.includes(keep)) throw bad(`${where}.workspace.keep must be one of ${KEEP.join(', ')}`);
  if (path !== undefined) {
    if (keep !== undefined && keep !== 'always') throw bad(`${where}.workspace.keep: a given path is never removed; only a workspace Troupe creates can use keep '${keep}'`);
    return { path: resolvePath(path) };
  }
  return { path: PER_TASK_WORKSPACE, keep: keep ?? 'on_failure' };
}

function requiresOf(value: unknown, where: string): string[] {
  if (!Array.isArray(value) || value.length === 0 || value.some((c) => typeof c !== 'string' || c.length === 0)) {
    throw bad(`${where}.requires must be a non-empty array of non-empty strings`);
  }
  return [...new Set(value as string[])].sort();
}

function bad(message: string): TroupeError {
  return new TroupeError('INVALID_INPUT', message);
}
