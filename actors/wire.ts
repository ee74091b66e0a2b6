/**
 * Wire types: the plain data that crosses between the host and the worker threads. A class
 * instance loses its prototype in `postMessage`, so nothing here is a class, and both sides build
 * these shapes in exactly one place each (actors/worker.ts and src/pool/).
 */
import { types } from 'node:util';
import type { MessagePort } from 'node:worker_threads';

/** Who is to blame for a failed attempt. Infrastructure faults never count against an agent's health. */
export type Fault = 'agent' | 'infrastructure';

/** A failure as it crosses the thread boundary and as it is stored on the task. */
export interface WireError {
  code: string;
  message: string;
  retryable: boolean;
  fault: Fault;
  /** Truncated stack of the original error, for operators. */
  stack?: string;
}

/** What an agent may return (besides a plain value, which means success with that output). */
export type AgentResult =
  | { kind: 'success'; summary?: string; output?: unknown; branch?: string; rev?: string }
  | { kind: 'fork'; branch: string; rev: string; summary?: string; output?: unknown }
  | { kind: 'fail'; summary?: string; output?: unknown }
  | { kind: 'sleep'; wakeAfterMs: number; followUp?: unknown; summary?: string };

/** One attempt whose start is durable, as the host hands it to the pool (host side only: the wire carries {@link StartTuple}s). */
export interface AttemptRequest {
  /** `file:` URL of the agent module. */
  module: string;
  agent: string;
  taskId: string;
  /** `taskId:run:attempt`. */
  attemptId: string;
  run: number;
  /** 1-based attempt number within the run. */
  attempt: number;
  /** Fencing token: only ever increases; every message back carries it. */
  token: number;
  input: unknown;
  workspace?: string;
  followUp?: unknown;
  /** W3C trace context of the attempt's span, when tracing is on: the agent runs inside it. */
  traceparent?: string;
  tracestate?: string;
}

/** The outcome of one attempt. */
export type WireResult = { ok: true; result: AgentResult } | { ok: false; error: WireError };

/** A log line: [level, message, epoch ms, fields?]. */
export type WireLogLine = [level: LogLevel, message: string, at: number, fields?: Record<string, unknown>];

/** Levels of `ctx.log`. */
export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

/**
 * What the host posts to a thread on its channel: the attempts whose start became durable in one
 * turn. The thread queues them and runs at most `slots` at once (an attempt waiting on the host for
 * an input or a join gives its slot back meanwhile), so the host can hand a thread its next attempts
 * before a slot frees: no round trip between two attempts. Agents the thread has not been told of
 * come first, each once per thread, so an attempt names its agent by number.
 */
export interface StartBatch {
  t: 'start';
  slots: number;
  /** How often the thread heartbeats each running attempt. */
  heartbeatMs: number;
  /** New agents for this thread: [number, name, module URL], …. */
  agents?: Array<[index: number, name: string, module: string]>;
  /** {@link START_STRIDE} values per attempt: see {@link StartTuple}. */
  starts: unknown[];
  /**
   * The trace context of the attempts that have one (tracing on), {@link TRACE_STRIDE} values each:
   * [attempt's position in `starts`, traceparent, tracestate | undefined], …. Absent otherwise, so
   * attempts without one cost the batch nothing.
   */
  traces?: unknown[];
}

/** One attempt in {@link StartBatch.starts}, flat: structured cloning copies no property names. */
export type StartTuple = [agent: number, taskId: string, run: number, attempt: number, token: number, input: unknown, workspace: string | undefined, followUp: unknown];
export const START_STRIDE = 8;
export const TRACE_STRIDE = 3;

/**
 * What a thread posts to the host in one turn: its reports, in order, {@link REPORT_STRIDE} values
 * each, `[kind, attemptId, token, payload]` (see {@link Report}). Everything an attempt reported
 * comes before its end.
 */
export type WorkerBatch = unknown[];
export const REPORT_STRIDE = 4;

/** Report kinds (the first value of each report) and their payloads. */
export const Report = {
  /** The thread took the attempt from its queue and runs it: its lease and timeout start. Payload: epoch ms. Left out when the attempt ends in the same turn (its end implies it). */
  BEGIN: 1,
  /** The attempt returned a plain value: success with that output. Payload: the output. */
  OUTPUT: 2,
  /** The attempt ended any other way. Payload: a {@link WireResult}. */
  END: 3,
  /** The attempt was aborted while queued on the thread: it never ran. Payload: the abort reason. */
  DROPPED: 4,
  /** Payload: {@link WireLogLine}[]. */
  LOG: 5,
  /** Payload: [value 0..1, message | undefined, epoch ms]. */
  PROGRESS: 6,
  /** Payload: epoch ms. */
  HEARTBEAT: 7,
  /**
   * An error the agent's code did not catch (a timer that threw, a promise nobody awaited) that
   * could not fail a running attempt: its attempt had ended, or nothing tells whose it is. The
   * thread carries on. Payload: a description, for the host's log. The attempt id may be ''.
   */
  STRAY: 8,
  /**
   * This attempt's code is ending the thread (`process.exit`): sent from the thread's exit handler,
   * so the host knows the culprit among the attempts the thread takes down. Payload: the exit code.
   */
  EXIT: 9,
} as const;

/** What an agent can ask of the host through its context (over comlink: {@link HostApi}). */
export type AgentCall =
  /** Wait for the next input; the task shows `waiting` with the prompt until one arrives. `waitId` names this wait for `unwait`. */
  | { method: 'input'; waitId: number; prompt?: unknown }
  /** The agent gave up waiting (its own timeout): the task is running again. */
  | { method: 'unwait'; waitId: number }
  /** Create a subtask; `key` makes it idempotent (per parent task), else the nth spawn of this attempt. */
  | { method: 'spawn'; spec: Record<string, unknown>; key: string }
  /** Wait until these tasks are terminal; the task shows `waiting` until then. */
  | { method: 'join'; ids: string[] };

/** Why what an agent call carries cannot be posted to the host (it is not plain data), or undefined. */
export function describeUnserializableCall(call: AgentCall): string | undefined {
  switch (call.method) {
    case 'input':
      return call.prompt === undefined ? undefined : describeUnserializable(call.prompt, 'prompt');
    case 'spawn':
      return describeUnserializable(call.spec, 'spec');
    case 'join':
      return describeUnserializable(call.ids, 'ids');
    default:
      return undefined;
  }
}

/** The host's answer to an {@link AgentCall}: a value, or an error with its code (comlink would drop the code of a thrown error). */
export type CallAnswer = { ok: true; value: unknown } | { ok: false; error: { code: string; message: string } };

/**
 * The host's answer to an input call whose agent stopped waiting (its `timeoutMs` passed, and its
 * `unwait` came first): the thread counts the call as waiting, its slot given back, until answered.
 */
export const INPUT_TIMED_OUT: CallAnswer = { ok: false, error: { code: 'INPUT_TIMEOUT', message: 'the agent stopped waiting for input (its timeoutMs passed)' } };

/** What the host exposes to each thread over comlink. */
export interface HostApi {
  /** An agent's call, answered once the step it causes is durable (or, for a wait, once it is over). */
  call(attemptId: string, token: number, call: AgentCall): Promise<CallAnswer>;
}

/** Posted once by every worker thread through `parentPort` when it starts; Piscina re-emits it as `'message'`. */
export interface ThreadHello {
  troupe: 'hello';
  threadId: number;
  /** The host's end of the thread's channel. */
  port: MessagePort;
}

/** Recognises a {@link ThreadHello}. */
export function isThreadHello(value: unknown): value is ThreadHello {
  return typeof value === 'object' && value !== null && (value as ThreadHello).troupe === 'hello';
}

/** Why the host aborts an attempt. */
export type AbortReason = 'cancelled' | 'timeout' | 'shutdown' | 'lease_expired' | 'killed';

/** The request/response API a worker exposes to the host over comlink. */
export interface WorkerControl {
  /** Aborts `ctx.signal` of a running attempt. Resolves true if this thread was running it. */
  abort(attemptId: string, token: number, reason: AbortReason): boolean;
}

/**
 * Channel multiplexing tags: both comlink directions and the fire-and-forget batches share one
 * port, in order. `a`: the host calls the thread (abort); `h`: the thread calls the host (agent calls).
 */
export type ChannelTag = 'a' | 'h' | 'e';

/** An envelope on a thread channel. */
export type ChannelEnvelope = { c: 'a' | 'h'; m: unknown } | { c: 'e'; m: StartBatch | WorkerBatch };

/** Values nested deeper than this are refused: the store's encoder and `postMessage` walk them recursively. */
export const MAX_DEPTH = 256;
/** BigInts msgpack stores and reads back as BigInts: 64-bit signed or unsigned. */
const MIN_INT64 = -(2n ** 63n);
const MAX_UINT64 = 2n ** 64n - 1n;

/**
 * Describes why `value` cannot be stored and sent between threads, or returns undefined when it can:
 * exactly what the store's encoder writes and reads back unchanged. Accepted: null, booleans,
 * numbers, strings, BigInts within 64 bits, dense arrays, plain objects (string keys), valid Dates
 * and Uint8Arrays, nested at most {@link MAX_DEPTH} levels. `undefined` is accepted as an object
 * property, array element or top-level value. Refused: larger BigInts (msgpack cannot write them),
 * functions, symbols, class instances (a Map would lose its entries), Proxies, sparse arrays,
 * circular references, and properties whose getters throw. Never throws.
 *
 * `json`: what JSON holds as well, as PostgreSQL's jsonb stores it (src/store/postgres): Dates,
 * Uint8Arrays and BigInts are refused too, so `JSON.stringify` then writes the value as it is.
 */
export function describeUnserializable(value: unknown, path = 'value', json = false): string | undefined {
  // Most inputs and results are primitives or null: no walk, no cycle set.
  if (typeof value === 'string') return wellFormed(value) ? undefined : `${path} ${LONE_SURROGATE}`;
  if (value === null || (typeof value !== 'object' && typeof value !== 'function' && typeof value !== 'symbol' && typeof value !== 'bigint')) return undefined;
  const problem = walk(value, new Set(), 0, json);
  return problem && `${path}${problem.at} ${problem.what}`;
}

/** Where a value is not storable (a path below the value, built only on failure) and why. */
interface Problem {
  at: string;
  what: string;
}

/**
 * Whether a string is Unicode text: no lone UTF-16 surrogate, which neither store keeps as it is
 * (LMDB's UTF-8 would turn it into U+FFFD, PostgreSQL's jsonb refuses it). Node 20 has
 * `String.prototype.isWellFormed`; TypeScript's ES2023 library does not declare it.
 */
export function wellFormed(s: string): boolean {
  return (s as unknown as { isWellFormed(): boolean }).isWellFormed();
}
const LONE_SURROGATE = 'holds a lone UTF-16 surrogate (half of a pair), which is not Unicode text';

function walk(value: unknown, seen: Set<object>, depth: number, json: boolean): Problem | undefined {
  switch (typeof value) {
    case 'string':
      return wellFormed(value) ? undefined : { at: '', what: LONE_SURROGATE };
    case 'number':
    case 'boolean':
    case 'undefined':
      return undefined;
    case 'bigint':
      if (json) return { at: '', what: 'is a BigInt, which JSON does not hold (store it as a string)' };
      return value >= MIN_INT64 && value <= MAX_UINT64 ? undefined : { at: '', what: 'is a BigInt outside the 64-bit range that is stored (store it as a string)' };
    case 'function':
      return { at: '', what: 'is a function' };
    case 'symbol':
      return { at: '', what: 'is a symbol' };
  }
  if (value === null) return undefined;
  const object = value as object;
  if (types.isProxy(object)) return { at: '', what: 'is a Proxy (only plain data is stored)' };
  if (object instanceof Date || object instanceof Uint8Array) {
    if (json) return { at: '', what: `is a ${object.constructor.name}, which JSON does not hold` };
    return object instanceof Date && Number.isNaN(object.getTime()) ? { at: '', what: 'is an invalid Date' } : undefined;
  }
  if (depth >= MAX_DEPTH) return { at: '', what: `is nested deeper than ${MAX_DEPTH} levels` };
  if (seen.has(object)) return { at: '', what: 'is a circular reference' };
  seen.add(object);
  try {
    if (Array.isArray(object)) {
      for (let i = 0; i < object.length; i++) {
        if (!(i in object)) return { at: `[${i}]`, what: 'is a hole (sparse arrays are not stored)' };
        const problem = walk(object[i], seen, depth + 1, json);
        if (problem) return { at: `[${i}]${problem.at}`, what: problem.what };
      }
      return undefined;
    }
    const proto = Object.getPrototypeOf(object);
    if (proto !== Object.prototype && proto !== null) {
      const name = (proto?.constructor as { name?: string } | undefined)?.name ?? 'unknown';
      return { at: '', what: `is a ${name} instance (only plain objects, arrays, Dates and Uint8Arrays are stored)` };
    }
    for (const key of Object.keys(object)) {
      if (!wellFormed(key)) return { at: '', what: `has a key that ${LONE_SURROGATE}` };
      let item: unknown;
      try {
        item = (object as Record<string, unknown>)[key];
      } catch (error) {
        return { at: `.${key}`, what: `could not be read (its getter threw: ${messageOf(error)})` };
      }
      const problem = walk(item, seen, depth + 1, json);
      if (problem) return { at: `.${key}${problem.at}`, what: problem.what };
    }
    if (Object.getOwnPropertySymbols(object).length > 0) return { at: '', what: 'has symbol keys' };
    return undefined;
  } finally {
    seen.delete(object);
  }
}

/** The message of something thrown, whatever it is (its own getters may throw too). */
export function messageOf(error: unknown): string {
  try {
    return error instanceof Error ? error.message : String(error);
  } catch {
    return 'an unprintable value';
  }
}
