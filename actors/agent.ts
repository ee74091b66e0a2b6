/**
 * The agent SDK, imported by agent modules as `troupe/agent`. It runs inside worker threads and
 * depends only on actors/ and wire types.
 */
import type { AgentResult } from './wire.js';
import type { TaskState } from '../machines/states.js';
import type { TaskErrorCode } from '../src/api/tasks.js';

export type { AgentResult, LogLevel } from './wire.js';

/** Durable log lines: each one is stored under the task and streamed by `rt.logs()`. */
export interface AgentLogger {
  debug(message: string, fields?: Record<string, unknown>): void;
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
  error(message: string, fields?: Record<string, unknown>): void;
}

/** What an agent receives besides its input. */
export interface AgentContext {
  readonly taskId: string;
  readonly runId: string;
  readonly attemptId: string;
  /** 1-based attempt number within the current run. */
  readonly attempt: number;
  /** The task's workspace directory, when it has one. */
  readonly workspace?: string;
  /** What a previous run returned as `followUp` when it slept. */
  readonly followUp?: unknown;
  /** Aborts on cancel, timeout or shutdown. Cancellation is cooperative: check it and stop. */
  readonly signal: AbortSignal;
  /**
   * The W3C `traceparent` of this attempt's span, when the host traces tasks (OpenTelemetry with a
   * tracer provider registered): for agents that propagate it by hand, e.g. as an HTTP header. With
   * `@opentelemetry/api` in the thread, the agent already runs inside that span's context.
   */
  readonly traceparent?: string;
  /** The W3C `tracestate` that goes with {@link AgentContext.traceparent}, when there is one. */
  readonly tracestate?: string;
  readonly log: AgentLogger;
  /** Live progress, 0..1, with an optional message. Coalesced and throttled to 10 per second. */
  progress(value: number, message?: string): void;
  /** Tells the host the agent is alive during long synchronous stretches. */
  heartbeat(): void;
  /**
   * Waits for the next input sent with `rt.sendInput()`. Until one arrives the task is `waiting`
   * and shows `prompt`. Inputs queue: each is delivered once, in order. Rejects with code
   * `INPUT_TIMEOUT` after `timeoutMs`, and with `ABORTED` when the attempt is cancelled.
   */
  waitForInput(options?: WaitForInputOptions): Promise<unknown>;
  /** Every input, as it arrives, until the attempt is aborted. */
  inputs(): AsyncIterable<unknown>;
  /**
   * Creates a subtask with `parentId` set to this task. Idempotent: with `spec.idempotencyKey`, per
   * parent task and key (a retried attempt gets the same child); without, per attempt and call order.
   * Rejects (code `INVALID_INPUT`, `UNKNOWN_AGENT`, …) for a spec submit would reject.
   */
  spawn(spec: SpawnSpec): Promise<SpawnedTask>;
  /** Waits until every task in `ids` is terminal (the task is `waiting` meanwhile); resolves with their outcomes. */
  join<const Ids extends readonly string[]>(ids: Ids): Promise<{ -readonly [K in keyof Ids]: JoinedTask }>;
}

/** Options of `ctx.waitForInput()`. */
export interface WaitForInputOptions {
  /** What the agent asks; shown on the task and in its `task.waiting` event. Plain data. */
  prompt?: unknown;
  /** Give up after this long. */
  timeoutMs?: number;
}

/** What `ctx.spawn()` takes: a task spec (see the runtime's `TaskSpec`); `parentId` is set for you. */
export interface SpawnSpec {
  agent?: string;
  requires?: string[];
  input?: unknown;
  priority?: number;
  lane?: string;
  workspace?: string;
  labels?: Record<string, string>;
  idempotencyKey?: string;
  timeoutMs?: number;
  retry?: Record<string, unknown>;
  runAt?: number;
  delayMs?: number;
}

/** A subtask as `ctx.spawn()` returns it. */
export interface SpawnedTask {
  id: string;
  agent: string;
  state: TaskState;
}

/** A joined task's outcome. */
export interface JoinedTask {
  id: string;
  state: TaskState;
  output?: unknown;
  result?: { kind: 'success' | 'fork' | 'fail' | 'sleep'; summary?: string; branch?: string; rev?: string };
  /** `code`: one of the catalogue's, or the code the task's agent gave its AgentError. */
  error?: { code: TaskErrorCode; message: string };
}

/** An agent's function. A plain return value means success with that value as output. */
export type AgentFunction<I = unknown, O = unknown> = (input: I, ctx: AgentContext) => O | AgentResult | Promise<O | AgentResult>;

const AGENT_BRAND = Symbol.for('troupe.agent');
const AGENT_ERROR_BRAND = Symbol.for('troupe.agentError');

/** A defined agent: the default export of an agent module. */
export interface Agent<I = unknown, O = unknown> {
  readonly [AGENT_BRAND]: true;
  readonly run: AgentFunction<I, O>;
}

/** Declares an agent. Export the result as the module's default export. */
export function defineAgent<I = unknown, O = unknown>(run: AgentFunction<I, O>): Agent<I, O> {
  if (typeof run !== 'function') throw new TypeError('defineAgent expects a function (input, ctx) => result');
  return Object.freeze({ [AGENT_BRAND]: true as const, run });
}

/** Returns the agent function of a module's default export, or undefined if it is not an agent. */
export function agentFunctionOf(exported: unknown): AgentFunction | undefined {
  if (typeof exported === 'function') return exported as AgentFunction;
  if (typeof exported === 'object' && exported !== null && (exported as Agent)[AGENT_BRAND] === true) {
    return (exported as Agent).run;
  }
  return undefined;
}

/** Options of {@link AgentError}. */
export interface AgentErrorOptions {
  /** False fails the task at once; true (the default) retries it per policy. */
  retryable?: boolean;
  /** A short machine-readable code stored on the task error. @default 'AGENT_ERROR' */
  code?: string;
  cause?: unknown;
}

/** Throw this from an agent to control retry: `new AgentError('bad input', { retryable: false })`. */
export class AgentError extends Error {
  readonly retryable: boolean;
  readonly code: string;
  readonly [AGENT_ERROR_BRAND] = true;

  constructor(message: string, options: AgentErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'AgentError';
    this.retryable = options.retryable ?? true;
    this.code = options.code ?? 'AGENT_ERROR';
  }
}

/** Recognises an AgentError even across module instances. */
export function isAgentError(value: unknown): value is AgentError {
  return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[AGENT_ERROR_BRAND] === true;
}
