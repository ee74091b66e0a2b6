/**
 * Wire types: the plain data that crosses between the host and the worker threads. A class
 * instance loses its prototype in `postMessage`, so nothing here is a class, and both sides build
 * these shapes in exactly one place each (actors/worker.ts and src/pool/).
 */
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

/** One attempt, as the host hands it to Piscina. */
export interface AttemptRequest {
  /** `file:` URL of the agent module. */
  module: string;
  agent: string;
  taskId: string;
  runId: string;
  attemptId: string;
  /** 1-based attempt number within the run. */
  attempt: number;
  /** Fencing token: only ever increases; every message back carries it. */
  token: number;
  input: unknown;
  workspace?: string;
  followUp?: unknown;
  /** The worker heartbeats this attempt this often while its thread's event loop runs. */
  heartbeatMs: number;
}

/** The outcome of one attempt. */
export type WireResult = { ok: true; result: AgentResult } | { ok: false; error: WireError };

/** A log line: [level, message, epoch ms, fields?]. */
export type WireLogLine = [level: LogLevel, message: string, at: number, fields?: Record<string, unknown>];

/** Levels of `ctx.log`. */
export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

/** Fire-and-forget traffic from a worker thread, in order, on its channel (coalesced per turn into a {@link WorkerBatch}). */
export type WorkerMessage =
  /** The attempt returned or threw: its outcome. Everything it posted before comes first. */
  | { t: 'end'; attemptId: string; token: number; result: WireResult }
  | { t: 'log'; attemptId: string; token: number; lines: WireLogLine[] }
  | { t: 'progress'; attemptId: string; token: number; value: number; message?: string; at: number }
  | { t: 'heartbeat'; attemptId: string; token: number; at: number }
  /** The thread took the attempt from its queue and runs it now: its lease and timeout start. */
  | { t: 'begin'; attemptId: string; token: number; at: number }
  /** A request from the agent to the host (input, spawn, join); answered by a {@link HostReply}. */
  | { t: 'call'; attemptId: string; token: number; callId: number; call: AgentCall };

/** What an agent can ask of the host through its context. */
export type AgentCall =
  /** Wait for the next input; the task shows `waiting` with the prompt until one arrives. */
  | { method: 'input'; prompt?: unknown }
  /** The agent gave up waiting (its own timeout): the task is running again. */
  | { method: 'unwait'; inputCallId: number }
  /** Create a subtask; `key` makes it idempotent (per parent task), else the nth spawn of this attempt. */
  | { method: 'spawn'; spec: Record<string, unknown>; key: string }
  /** Wait until these tasks are terminal; the task shows `waiting` until then. */
  | { method: 'join'; ids: string[] };

/** The host's answer to an {@link AgentCall}, sent on the same thread channel. */
export type HostReply = { t: 'reply'; callId: number; ok: true; value: unknown } | { t: 'reply'; callId: number; ok: false; error: { code: string; message: string } };

/** What the host posts to a thread: the attempts whose start became durable this turn, or a reply to an agent call. */
export type HostMessage =
  /**
   * Attempts whose start is durable. The thread queues them and runs at most `slots` at once (an
   * attempt waiting on the host for an input or a join gives its slot back meanwhile), so the host
   * can hand a thread its next attempts before a slot frees: no round trip between two attempts.
   */
  | { t: 'start'; requests: AttemptRequest[]; slots: number }
  | HostReply;

/** What a thread posts to the host in one turn: its messages, in order. */
export interface WorkerBatch {
  t: 'batch';
  messages: WorkerMessage[];
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

/** Channel multiplexing tags: comlink traffic and fire-and-forget messages share one port, in order. */
export const CHANNEL_RPC = 'r';
export const CHANNEL_EVENT = 'e';

/** An envelope on a thread channel. */
export type ChannelEnvelope = { c: typeof CHANNEL_RPC; m: unknown } | { c: typeof CHANNEL_EVENT; m: HostMessage | WorkerBatch };

/**
 * Describes why `value` cannot be stored and sent between threads, or returns undefined when it can.
 * Accepted: null, booleans, numbers, strings, bigints, arrays, plain objects, Dates, Uint8Arrays.
 * `undefined` is accepted as an object property or top-level value (it is dropped or kept as is).
 */
export function describeUnserializable(value: unknown, path = 'value'): string | undefined {
  // Most inputs and results are primitives or null: no walk, no cycle set.
  if (value === null || typeof value !== 'object') return typeof value === 'function' || typeof value === 'symbol' ? walk(value, path, new Set()) : undefined;
  return walk(value, path, new Set());
}

function walk(value: unknown, path: string, seen: Set<object>): string | undefined {
  switch (typeof value) {
    case 'string':
    case 'number':
    case 'boolean':
    case 'bigint':
    case 'undefined':
      return undefined;
    case 'function':
      return `${path} is a function`;
    case 'symbol':
      return `${path} is a symbol`;
  }
  if (value === null) return undefined;
  const object = value as object;
  if (object instanceof Date || object instanceof Uint8Array) return undefined;
  if (seen.has(object)) return `${path} is a circular reference`;
  seen.add(object);
  try {
    if (Array.isArray(object)) {
      for (let i = 0; i < object.length; i++) {
        const problem = walk(object[i], `${path}[${i}]`, seen);
        if (problem) return problem;
      }
      return undefined;
    }
    const proto = Object.getPrototypeOf(object);
    if (proto !== Object.prototype && proto !== null) {
      const name = (proto?.constructor as { name?: string } | undefined)?.name ?? 'unknown';
      return `${path} is a ${name} instance (only plain objects, arrays, Dates and Uint8Arrays are stored)`;
    }
    for (const key of Object.keys(object)) {
      const problem = walk((object as Record<string, unknown>)[key], `${path}.${key}`, seen);
      if (problem) return problem;
    }
    if (Object.getOwnPropertySymbols(object).length > 0) return `${path} has symbol keys`;
    return undefined;
  } finally {
    seen.delete(object);
  }
}
