/**
 * The control methods, mapped onto a Runtime. The socket server and the direct (no runtime
 * running) path both call this one table, so a command behaves the same either way. Params come
 * off the wire as untrusted JSON: each method checks them and names the bad one (INVALID_INPUT).
 */
import { isAbsolute } from 'node:path';
import { TroupeError } from '../errors.js';
import { SETTLED_FOR_WAIT } from '../../machines/index.js';
import type { Runtime } from '../api/runtime.js';
import type { Task, TaskSpec } from '../tasks/spec.js';
import type { ListOptions } from '../tasks/engine.js';
import type { ScheduleSpec } from '../scheduler/scheduler.js';
import type { EventType } from '../store/records.js';
import type { LogLine } from '../events/logs.js';
import type { TaskState } from '../../machines/index.js';

/** Params of a call: a JSON object. */
export type Params = Record<string, unknown>;
/** A method that answers once. */
export type UnaryMethod = (params: Params, signal: AbortSignal) => Promise<unknown>;
/** A method that streams items until it ends, fails or `signal` aborts. */
export type StreamMethod = (params: Params, signal: AbortSignal) => AsyncIterable<unknown>;

/** Every method a runtime answers. */
export interface MethodTable {
  unary: Readonly<Record<string, UnaryMethod>>;
  streams: Readonly<Record<string, StreamMethod>>;
}

/**
 * Builds the method table of `rt`. `info` is what `ping` reports about the serving process. With
 * `freshCounts` (a runtime on PostgreSQL), `stats` first takes the cluster's task count due and
 * waits for it, as the dashboard's overview does: `stats()` alone shows the count last taken in
 * the background, none at all the first time.
 */
export function runtimeMethods(rt: Runtime, info: Record<string, unknown> = {}, options: { freshCounts?: boolean } = {}): MethodTable {
  const unary: Record<string, UnaryMethod> = {
    ping: async () => ({ ...info, pid: process.pid, state: rt.state, agents: rt.agents.list().map((a) => a.name) }),
    submit: (p) => rt.submit(object(p, 'spec') as TaskSpec),
    get: (p) => rt.get(string(p, 'id')),
    dashboard: async () => rt.dashboard() ?? null,
    list: (p) => rt.list(listOptions(p)),
    stats: async () => {
      if (options.freshCounts) await rt.metrics();
      return rt.stats();
    },
    instances: async () => rt.instances(),
    cancel: (p) => rt.cancel(string(p, 'id'), optionalString(p, 'reason')),
    retry: (p) => rt.retry(string(p, 'id')),
    freeze: async (p) => {
      await rt.freeze(optionalString(p, 'reason'));
      return rt.stats().freeze;
    },
    prune: (p) => {
      const before = p.before;
      if (before !== undefined && before !== null && typeof before !== 'number') throw invalid('params.before must be epoch milliseconds');
      const states = optionalStrings(p, 'states') as TaskState[] | undefined;
      return rt.prune({ ...(typeof before === 'number' ? { before } : {}), ...(states ? { states } : {}) });
    },
    backup: (p) => {
      const path = string(p, 'path');
      // The runtime may run in another directory: the CLI sends the path resolved.
      if (!isAbsolute(path)) throw invalid('params.path must be an absolute path');
      return rt.backup(path, { compact: optionalBoolean(p, 'compact') ?? false });
    },
    unfreeze: async () => {
      await rt.unfreeze();
      return rt.stats().freeze;
    },
    sendInput: (p) => {
      const id = string(p, 'id');
      if (!('message' in p)) throw invalid('params.message is required');
      const idempotencyKey = optionalString(p, 'idempotencyKey');
      return rt.sendInput(id, idempotencyKey === undefined ? { message: p.message } : { message: p.message, idempotencyKey });
    },
    wait: (p, signal) => rt.wait(string(p, 'id'), { timeoutMs: optionalInteger(p, 'timeoutMs'), signal }),
    'schedules.list': async () => rt.schedules.list(),
    'schedules.create': (p) => rt.schedules.create(object(p, 'spec') as unknown as ScheduleSpec),
    'schedules.delete': async (p) => {
      const id = string(p, 'id');
      await rt.schedules.delete(id);
      return { deleted: id };
    },
  };
  const streams: Record<string, StreamMethod> = {
    logs: (p, signal) => logs(rt, string(p, 'id'), { after: optionalString(p, 'after'), follow: optionalBoolean(p, 'follow') }, signal),
    events: (p, signal) => rt.events({ taskId: optionalString(p, 'taskId'), after: optionalString(p, 'after'), types: optionalStrings(p, 'types') as EventType[] | undefined, signal }),
    watch: (p, signal) => watch(rt, string(p, 'id'), signal),
  };
  return { unary, streams };
}

/**
 * Yields the task now and again after each of its events, ending with the task wait() settles with
 * (terminal or needs_attention). Fails with CLOSED if the runtime closes first. A runtime that is
 * draining refuses get(), but running attempts may still finish: the last task is the one wait()
 * resolves with, never a get() after it.
 */
async function* watch(rt: Runtime, id: string, signal: AbortSignal): AsyncGenerator<Task> {
  let changed = true;
  let wake: (() => void) | undefined;
  // Subscribe before the first read, so no change falls between the two.
  const off = rt.on('*', (event) => {
    if (event.taskId !== id) return;
    changed = true;
    wake?.();
  });
  let ended: { task: Task } | { error: unknown } | undefined;
  void rt.wait(id, { signal }).then(
    (task) => {
      ended = { task };
      wake?.();
    },
    (error: unknown) => {
      ended = { error };
      wake?.();
    },
  );
  const onAbort = () => wake?.();
  signal.addEventListener('abort', onAbort, { once: true });
  try {
    for (;;) {
      if (signal.aborted) return;
      if (ended && 'task' in ended) {
        yield ended.task;
        return;
      }
      if (ended) throw ended.error;
      if (changed) {
        changed = false;
        const task = await rt.get(id).catch((error: unknown) => {
          // Draining: wait() says how the task ends.
          if ((error as { code?: unknown }).code === 'CLOSED') return undefined;
          throw error;
        });
        if (task === undefined) continue;
        yield task;
        if (SETTLED_FOR_WAIT.has(task.state as TaskState)) return;
        continue;
      }
      await new Promise<void>((resolve) => (wake = resolve));
      wake = undefined;
    }
  } finally {
    off();
    signal.removeEventListener('abort', onAbort);
  }
}

/**
 * rt.logs(), whose follow also ends when the runtime closes before the task settles: that end
 * fails with wait()'s CLOSED here, so a client can tell it from the task settling.
 */
async function* logs(rt: Runtime, id: string, options: { after?: string | undefined; follow?: boolean | undefined }, signal: AbortSignal): AsyncGenerator<LogLine> {
  if (!options.follow) {
    yield* rt.logs(id, { ...options, signal });
    return;
  }
  // Before the follow starts, so the task cannot settle unseen; handled at once, so a follow that
  // fails to start (NOT_FOUND) leaves no rejection unhandled.
  const settled = rt.wait(id, { signal }).then(
    () => undefined,
    (error: unknown) => ({ error }),
  );
  yield* rt.logs(id, { ...options, signal });
  if (signal.aborted) return;
  // The follow ended because the task settled or the runtime closed: wait() has settled too.
  const failure = await settled;
  if (failure && !signal.aborted) throw failure.error;
}

function listOptions(p: Params): ListOptions {
  const options: ListOptions = {};
  const state = optionalString(p, 'state');
  if (state !== undefined) options.state = state as TaskState;
  const agent = optionalString(p, 'agent');
  if (agent !== undefined) options.agent = agent;
  const limit = optionalInteger(p, 'limit');
  if (limit !== undefined) options.limit = limit;
  const after = optionalString(p, 'after');
  if (after !== undefined) options.after = after;
  if (p.labels !== undefined && p.labels !== null) options.labels = object(p, 'labels') as Record<string, string>;
  return options;
}

function invalid(message: string): TroupeError {
  return new TroupeError('INVALID_INPUT', message);
}

function string(p: Params, name: string): string {
  const value = p[name];
  if (typeof value !== 'string' || value.length === 0) throw invalid(`params.${name} must be a non-empty string`);
  return value;
}

function optionalString(p: Params, name: string): string | undefined {
  return p[name] === undefined || p[name] === null ? undefined : string(p, name);
}

function optionalInteger(p: Params, name: string): number | undefined {
  const value = p[name];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'number' || !Number.isSafeInteger(value)) throw invalid(`params.${name} must be an integer`);
  return value;
}

function optionalBoolean(p: Params, name: string): boolean | undefined {
  const value = p[name];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'boolean') throw invalid(`params.${name} must be a boolean`);
  return value;
}

function optionalStrings(p: Params, name: string): string[] | undefined {
  const value = p[name];
  if (value === undefined || value === null) return undefined;
  if (!Array.isArray(value) || value.some((v) => typeof v !== 'string')) throw invalid(`params.${name} must be an array of strings`);
  return value as string[];
}

function object(p: Params, name: string): Record<string, unknown> {
  const value = p[name];
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw invalid(`params.${name} must be an object`);
  return value as Record<string, unknown>;
}
