/**
 * The argument checks of the PostgreSQL queue's verbs (queue.ts, settle.ts, limits.ts,
 * schedules.ts): each names what is wrong with INVALID_INPUT before any transaction starts, so bad
 * input writes nothing.
 */
import { isAbsolute } from 'node:path';
import { TroupeError } from '../../errors.js';
import { checkId, checkText, MAX_ID } from '../../ids.js';
import type { RetryPolicy, TaskRetention } from '../../api/tasks.js';
import type { TraceCarrier } from '../records.js';
import { DEFAULT_RETRY, resolveRetry } from '../../options.js';
import { resolveTaskRetention } from '../../tasks/retention-rules.js';
import { jsonOf } from './transaction.js';

/** The largest value of a PostgreSQL integer (int4). */
export const INT4_MAX = 2 ** 31 - 1;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** A task to enqueue. */
export interface NewTask {
  /** Its id: the caller mints it (the runtime's are time-ordered ULIDs). */
  id: string;
  /**
   * The agent that runs it; claims are per agent. '' with `requires`: routed at submit to an agent
   * whose stored capabilities cover them (routing.ts), or `needs_attention` when none does.
   */
  agent: string;
  /** Capabilities the task needs (schema version 18): routed by them when `agent` is ''. */
  requires?: string[];
  /** The named agent does not cover `requires`: stored `needs_attention` (reason `unmatched`), as on LMDB. */
  unmatched?: boolean;
  /** Plain JSON data. */
  input?: unknown;
  /** Lower runs first, like the public API's. An int4. @default 0 */
  priority?: number;
  /** Attempts per run, the first included. @default 3 (DEFAULT_RETRY.maxAttempts); a routed task's agent's when not given */
  maxAttempts?: number;
  /** A second submit with the same key returns the first task and stores nothing. Permanent. */
  idempotencyKey?: string;
  /** Not claimed until this many ms after the database's `now()` at submit. @default 0 */
  delayMs?: number;
  /** Free-form string labels (the public Task's `labels`). @default {} */
  labels?: Record<string, string>;
  /** The task's own attempt timeout (ms, 0: none), over its agent's. @default the agent's */
  timeoutMs?: number;
  /** The task's own retry policy fields but `maxAttempts` (that is {@link maxAttempts}), over its agent's. */
  retry?: Partial<Omit<RetryPolicy, 'maxAttempts'>>;
  /** The task that spawned it (schema version 16; children.ts). */
  parentId?: string;
  /**
   * The task's own retention (schema version 19): per settled state, ms kept after its settle
   * (Infinity, or null as a stored template holds it: for good), over its agent's rule.
   */
  retention?: TaskRetention | Partial<Record<keyof TaskRetention, number | null>>;
  /** The W3C trace context of its submit's span (schema version 21), when tracing was on: its attempts' spans are its children. */
  trace?: TraceCarrier;
  /** The directory its agent works in (schema version 23), an absolute path handed to each attempt as `ctx.workspace`. */
  workspace?: string;
}

/** A task checked and turned into the insert's columns. */
export interface TaskRow {
  id: string;
  agent: string;
  /** Sorted, without duplicates; null: none. */
  requires: string[] | null;
  /** Stored `needs_attention` (its named agent does not cover `requires`), or routed and found none (routing.ts). */
  unmatched: boolean;
  priority: number;
  maxAttempts: number;
  /** `maxAttempts` was given, not defaulted: routing keeps it instead of the agent's. */
  ownMaxAttempts: boolean;
  key: string | null;
  /** The input as the text of a jsonb parameter. */
  input: string | null;
  delayMs: number;
  /** The labels as the text of a jsonb parameter. */
  labels: string;
  timeoutMs: number | null;
  /** The task's own retry fields as the text of a jsonb parameter, or null. */
  retry: string | null;
  parentId: string | null;
  /** The task's own retention as the text of a jsonb parameter (null for for good), or null. */
  retention: string | null;
  /** Its submit span's trace context as the text of a jsonb parameter, or null. */
  trace: string | null;
  workspace: string | null;
}

/** Checks a task named `where` and returns its columns. */
export function checkTask(task: NewTask, where: string): TaskRow {
  if (typeof task !== 'object' || task === null || Array.isArray(task)) throw invalid(`${where} must be an object`);
  const id = checkId(task.id, `${where}.id`);
  const requires = task.requires === undefined ? null : requiresOf(task.requires, `${where}.requires`);
  if (requires === null || task.agent !== '') checkAgent(task.agent, `${where}.agent`);
  const priority = task.priority ?? 0;
  if (!Number.isSafeInteger(priority) || Math.abs(priority) > INT4_MAX) throw invalid(`${where}.priority must be an integer of at most 31 bits`);
  const maxAttempts = task.maxAttempts ?? DEFAULT_RETRY.maxAttempts;
  if (!Number.isSafeInteger(maxAttempts) || maxAttempts <= 0 || maxAttempts > INT4_MAX) throw invalid(`${where}.maxAttempts must be a positive integer`);
  const key = task.idempotencyKey === undefined ? null : pgText(checkId(task.idempotencyKey, `${where}.idempotencyKey`), `${where}.idempotencyKey`);
  const delayMs = task.delayMs ?? 0;
  if (!Number.isSafeInteger(delayMs) || delayMs < 0) throw invalid(`${where}.delayMs must be a non-negative integer`);
  const labels = task.labels ?? {};
  if (typeof labels !== 'object' || labels === null || Array.isArray(labels) || Object.values(labels).some((v) => typeof v !== 'string')) throw invalid(`${where}.labels must be an object of string values`);
  const timeoutMs = task.timeoutMs ?? null;
  if (timeoutMs !== null && !(Number.isSafeInteger(timeoutMs) && timeoutMs >= 0)) throw invalid(`${where}.timeoutMs must be a non-negative integer`);
  const parentId = task.parentId === undefined ? null : checkId(task.parentId, `${where}.parentId`);
  const unmatched = task.unmatched ?? false;
  if (typeof unmatched !== 'boolean' || (unmatched && (requires === null || task.agent === ''))) throw invalid(`${where}.unmatched is only for a named agent with requires`);
  return { id, agent: task.agent, requires, unmatched, priority, maxAttempts, ownMaxAttempts: task.maxAttempts !== undefined, key, input: jsonOf(task.input, `${where}.input`), delayMs, labels: jsonOf(labels, `${where}.labels`)!, timeoutMs, retry: retryOf(task.retry, `${where}.retry`), parentId, retention: retentionOf(task.retention, `${where}.retention`), trace: traceOf(task.trace, `${where}.trace`), workspace: workspaceOf(task.workspace, `${where}.workspace`) };
}

/** A workspace (see {@link NewTask.workspace}): an absolute path that a text column holds (no NUL), or null for none. */
function workspaceOf(workspace: string | undefined, where: string): string | null {
  if (workspace === undefined) return null;
  if (typeof workspace !== 'string' || !isAbsolute(workspace) || workspace.includes('\u0000')) throw invalid(`${where} must be an absolute path without a NUL character`);
  return workspace;
}

/** A trace context (see {@link NewTask.trace}) as jsonb text, or null for none: its two headers as strings, and nothing else. */
export function traceOf(trace: NewTask['trace'], where: string): string | null {
  if (trace === undefined) return null;
  if (
    typeof trace !== 'object' || trace === null || Array.isArray(trace) || typeof trace.traceparent !== 'string' ||
    (trace.tracestate !== undefined && typeof trace.tracestate !== 'string') || Object.keys(trace).some((field) => field !== 'traceparent' && field !== 'tracestate')
  ) {
    throw invalid(`${where} must be { traceparent, tracestate? } with string values`);
  }
  return jsonOf(trace, where);
}

/**
 * A task's own retention (see {@link NewTask.retention}) checked as the LMDB runtime checks it
 * (ages only), as jsonb text with null for Infinity (JSON has no Infinity), or null for none.
 */
function retentionOf(retention: NewTask['retention'], where: string): string | null {
  if (retention === undefined) return null;
  let own: TaskRetention | undefined;
  try {
    const given = typeof retention === 'object' && retention !== null ? Object.fromEntries(Object.entries(retention).map(([state, age]) => [state, age === null ? Infinity : age])) : retention;
    own = resolveTaskRetention(given, where);
  } catch (error) {
    throw invalid((error as Error).message);
  }
  return own === undefined ? null : JSON.stringify(own, (_key, value: unknown) => (value === Infinity ? null : value));
}

/** A stored task retention (jsonb, null for Infinity) as the public TaskRetention. */
export function retentionFromJson(stored: Record<string, number | null>): TaskRetention {
  return Object.fromEntries(Object.entries(stored).map(([state, age]) => [state, age ?? Infinity])) as TaskRetention;
}

/**
 * A task's own retry fields (see {@link NewTask.retry}) as jsonb text, or null for none: each is
 * checked as a registration's policy is (over the library default), so a claim can lay them over
 * any agent's policy as they are.
 */
function retryOf(retry: NewTask['retry'], where: string): string | null {
  if (retry === undefined) return null;
  if (typeof retry !== 'object' || retry === null || Array.isArray(retry)) throw invalid(`${where} must be an object`);
  if ('maxAttempts' in retry) throw invalid(`${where}.maxAttempts is the task's maxAttempts`);
  const own = Object.fromEntries(Object.entries(retry).filter(([, value]) => value !== undefined));
  try {
    resolveRetry(own, DEFAULT_RETRY, where);
  } catch (error) {
    throw invalid((error as Error).message);
  }
  return Object.keys(own).length === 0 ? null : JSON.stringify(own);
}

/** Capabilities a task requires: a non-empty array of non-empty strings without NUL (text[] holds none), sorted and deduplicated. */
function requiresOf(requires: unknown, where: string): string[] {
  if (!Array.isArray(requires) || requires.length === 0 || requires.some((c) => typeof c !== 'string' || c.length === 0 || c.includes('\u0000'))) {
    throw invalid(`${where} must be a non-empty array of non-empty strings without NUL`);
  }
  return [...new Set(requires as string[])].sort();
}

/** Checks an agent name named `where`. */
export function checkAgent(agent: unknown, where: string): asserts agent is string {
  if (typeof agent !== 'string' || agent.length === 0 || agent.length > MAX_ID) throw invalid(`${where} must be a non-empty string of at most ${MAX_ID} characters`);
}

/** Checks a node id (the id joinCluster gave it). */
export function checkNode(node: unknown): asserts node is string {
  if (typeof node !== 'string' || !UUID.test(node)) throw invalid('node must be the id of a node that joined the cluster (a UUID)');
}

/** Checks a lease length in ms. */
export function checkLeaseMs(leaseMs: unknown): void {
  if (!Number.isSafeInteger(leaseMs) || (leaseMs as number) <= 0) throw invalid('leaseMs must be a positive integer');
}

/** An attempt a write is for: its task and its fencing token. */
export interface Lease {
  taskId: string;
  token: number;
}

/**
 * The leases among `writes` that a fenced write found stale: those whose (task, token) is not
 * among the `current` rows it locked (tokens as PostgreSQL answers a bigint: text). Each once.
 */
export function staleLeases(current: ReadonlyArray<{ id: string; token: string }>, writes: readonly Lease[]): Lease[] {
  const held = new Set(current.map((r) => `${r.id}\u0000${r.token}`));
  const stale = new Map<string, Lease>();
  for (const { taskId, token } of writes) {
    const key = `${taskId}\u0000${token}`;
    if (!held.has(key)) stale.set(key, { taskId, token });
  }
  return [...stale.values()];
}

/** Checks a lease (a task id and a token) named `where`. */
export function checkLease(lease: Lease, where: string): void {
  if (typeof lease !== 'object' || lease === null) throw invalid(`${where} must be an object`);
  checkId(lease.taskId, `${where}.taskId`);
  if (!Number.isSafeInteger(lease.token) || lease.token <= 0) throw invalid(`${where}.token must be a positive integer`);
}

/** The kinds of result an attempt's end carries: those of its exits success, fork and fail, and a sleep's. */
const RESULT_KINDS: ReadonlySet<unknown> = new Set(['success', 'fork', 'fail', 'sleep']);
const RESULT_TEXTS: ReadonlySet<string> = new Set(['summary', 'branch', 'rev']);

/**
 * Checks the result of an attempt's end named `where` (a task's `result`): its kind is the end's
 * `exit`, which must be success, fork or fail (or `sleep`, for an end that sleeps), and its other
 * fields are the strings summary, branch and rev.
 */
export function checkResult(result: unknown, exit: unknown, where: string): void {
  if (typeof result !== 'object' || result === null || Array.isArray(result)) throw invalid(`${where} must be an object`);
  const { kind, ...texts } = result as Record<string, unknown>;
  if (!RESULT_KINDS.has(exit) || kind !== exit) throw invalid(`${where}.kind must be the end's exit (${String(exit)}): only success, fork and fail ends carry a result`);
  for (const [key, value] of Object.entries(texts)) {
    if (!RESULT_TEXTS.has(key)) throw invalid(`${where}.${key} is not a field of a result (kind, summary, branch, rev)`);
    if (value !== undefined && typeof value !== 'string') throw invalid(`${where}.${key} must be a string`);
  }
}

/** `value` as text PostgreSQL stores as given (checkText: a string, no lone surrogate), or INVALID_INPUT when it also holds a NUL character, which PostgreSQL does not store in text. */
export function pgText(value: unknown, where: string): string {
  const text = checkText(value, where);
  if (text.includes('\u0000')) throw invalid(`${where} holds a NUL character (\\u0000), which PostgreSQL does not store in text`);
  return text;
}

/** INVALID_INPUT with `message`. */
export function invalid(message: string): TroupeError {
  return new TroupeError('INVALID_INPUT', message);
}
