/**
 * The public types of tasks: what `submit` takes, what `get`, `wait` and `list` return, and the
 * `Agents` registry an app augments so that submits check their input and waits know their output
 * (graphile-worker's `GraphileWorker.Tasks` pattern):
 *
 *   declare module 'troupe' {
 *     interface Agents {
 *       coder: typeof import('./coder.agent.js').default; // an Agent<Input, Output> from defineAgent
 *       review: { input: { pr: number }; output: { approved: boolean } };
 *     }
 *   }
 *
 * This module imports nothing but other declaration-only modules: a program compiles against it
 * without the declarations of lmdb, Piscina or XState.
 */
import type { Agent } from '../../actors/agent.js';
import type { Fault } from '../../actors/wire.js';
import type { AttemptExit, TaskState } from '../../machines/states.js';
import type { TroupeErrorCode } from '../errors.js';

/**
 * The agents an app declares, by name: each an `Agent<Input, Output>` (the type of an agent
 * module's default export) or `{ input: Input; output: Output }`. Empty until augmented; agents
 * not declared here still run, with `unknown` input and output.
 */
// eslint-disable-next-line @typescript-eslint/no-empty-interface
export interface Agents {}

/** The input type of agent `A` as declared in {@link Agents}; `unknown` for an undeclared name. */
export type AgentInput<A extends string> = A extends keyof Agents
  ? Agents[A] extends Agent<infer I, any>
    ? I
    : Agents[A] extends { input: infer I }
      ? I
      : unknown
  : unknown;

/** The output type of agent `A` as declared in {@link Agents}; `unknown` for an undeclared name. */
export type AgentOutput<A extends string> = A extends keyof Agents
  ? Agents[A] extends Agent<any, infer O>
    ? O
    : Agents[A] extends { output: infer O }
      ? O
      : unknown
  : unknown;

declare const outputOf: unique symbol;

/**
 * A task id. At run time a plain string; in types it remembers the task's output type, so
 * `rt.wait(task.id)` returns a `Task<Output>`. Any string is accepted where one is taken.
 */
export type TaskId<O = unknown> = string & { readonly [outputOf]?: O };

/** How a task is retried after a retryable failure. */
export interface RetryPolicy {
  /** Attempts per run, including the first. */
  maxAttempts: number;
  backoff: 'fixed' | 'exponential';
  /** Base delay before a retry. */
  delayMs: number;
  /** Upper bound of any single delay. */
  maxDelayMs: number;
  /** Randomise each delay by up to this fraction (0..1), to spread retries. */
  jitter: number;
}

/** Result fields of a task that settled `done` (or carried a summary). */
export interface TaskResult {
  kind: 'success' | 'fork' | 'fail' | 'sleep';
  summary?: string;
  branch?: string;
  rev?: string;
}

/** The settled states, each with how long a task is kept after settling in it (ms; Infinity: for good). */
export type TaskRetention = Partial<Record<'done' | 'failed' | 'dropped' | 'cancelled', number>>;

/**
 * The code of a task's error: one of the catalogue (`AGENT_ERROR`, `TIMEOUT`, `CRASHED`, …), or
 * the code an agent gave its own `AgentError`.
 */
export type TaskErrorCode = TroupeErrorCode | (string & {});

/** Why a task failed, was dropped or was last retried. */
export interface TaskError {
  code: TaskErrorCode;
  message: string;
  retryable: boolean;
  /** Whose fault: the agent's, or the infrastructure's (a thread crash, a lost lease). */
  fault: Fault;
  /** Truncated stack of the original error, for operators. */
  stack?: string;
}

/** A hold that keeps a queued task back: `until` when its end is known (epoch ms). */
export interface TaskHold {
  kind: 'rate' | 'daily' | 'backoff' | 'frozen' | 'target' | 'degraded';
  until?: number;
}

/** When a workspace Troupe created is kept after its task settles. */
export type WorkspaceKeep = 'always' | 'never' | 'on_failure';

/** A workspace request: see {@link TaskSpecFields.workspace}. */
export interface WorkspaceSpec {
  path?: string | undefined;
  keep?: WorkspaceKeep | undefined;
}

/** The fields of a task spec other than its agent and input (see {@link TaskSpec}). */
export interface TaskSpecFields {
  /**
   * Capabilities the task needs. Without `agent`, the least-loaded registered agent covering all of
   * them is picked; with it, that agent must cover them. If none does, the task is stored in
   * `needs_attention` with reason `unmatched`.
   */
  requires?: string[] | undefined;
  /** Lower runs first. Integer. @default 0 */
  priority?: number | undefined;
  /** A lane separates instances of the same agent (e.g. per tenant). @default 'default' */
  lane?: string | undefined;
  /**
   * The directory the agent works in (`ctx.workspace`): a path, or `{ path?, keep? }`. Without a
   * path, Troupe creates `<dataDir>/workspaces/<taskId>` for the task and removes it when the task
   * settles, per `keep`: `'on_failure'` (default: kept unless done), `'always'` or `'never'`. A
   * given path is never removed.
   */
  workspace?: string | WorkspaceSpec | undefined;
  /** Free-form string labels. */
  labels?: Record<string, string> | undefined;
  /** A second submit with the same key returns the first task and stores nothing. */
  idempotencyKey?: string | undefined;
  /** The parent task, for subtasks. */
  parentId?: string | undefined;
  /** Per-attempt timeout, overriding the agent's; 0 = none. */
  timeoutMs?: number | undefined;
  /** Retry policy, merged over the agent's. */
  retry?: Partial<RetryPolicy> | undefined;
  /** Not dispatched before this instant (epoch ms). A durable timer holds it until then. */
  runAt?: number | undefined;
  /** Not dispatched before this many ms from now (instead of `runAt`). */
  delayMs?: number | undefined;
  /**
   * How long this task is kept once settled, per state, in ms (`Infinity`: for good), in place of
   * its agent's rule for that state (see `RuntimeOptions.retention`).
   */
  retention?: TaskRetention | undefined;
}

/**
 * What `rt.submit()` takes. `agent` names a registered agent (give it, `requires`, or both); for an
 * agent declared in {@link Agents}, `input` must be its input type (and is required unless that
 * type accepts `undefined`). Input is plain data: what the store reads back unchanged.
 */
export type TaskSpec<A extends string = string> = TaskSpecFields & {
  /** Registered agent name. Give this, `requires`, or both. */
  agent?: A | undefined;
} & (undefined extends AgentInput<A> ? { input?: AgentInput<A> } : { input: AgentInput<A> });

/**
 * A task as the public API returns it: `O` is its output type and `I` its input type (see
 * {@link Agents}). Times are epoch milliseconds.
 */
export interface Task<O = unknown, I = unknown> {
  id: TaskId<O>;
  agent: string;
  state: TaskState;
  input: I;
  /** What the agent returned, once done. */
  output?: O;
  result?: TaskResult;
  error?: TaskError;
  /** Why the task was dropped, cancelled or needs attention. */
  reason?: string;
  /** Last progress the agent reported. */
  progress?: { value: number; message?: string; at: number };
  /** Lower runs first. */
  priority: number;
  lane: string;
  workspace?: string;
  /** Set when Troupe created the workspace: whether it is removed when the task settles. */
  workspaceKeep?: WorkspaceKeep;
  instanceKey: string;
  parentId?: string;
  idempotencyKey?: string;
  labels: Record<string, string>;
  timeoutMs: number;
  retry: RetryPolicy;
  /** Runs so far (1-based): a user retry, a wake or an input after a wait starts a new one. */
  runs: number;
  /** Attempts of the current run that count against `retry.maxAttempts`. */
  attempts: number;
  /** When the task last entered `queued`. */
  queuedAt?: number;
  /** Capabilities the task needs. */
  requires?: string[];
  /** What a `waiting` task waits for: an input (with the agent's prompt) or tasks to join. */
  waitingFor?: { kind: 'input'; prompt?: unknown } | { kind: 'join'; ids: string[] };
  /** Not dispatched before this instant (delayed start, retry backoff, sleep). */
  runAt?: number;
  createdAt: number;
  updatedAt: number;
  startedAt?: number;
  settledAt?: number;
  /** The attempt the task settled in: when it started, its lease, how it ended. */
  attemptStartedAt?: number;
  attemptLeaseUntil?: number;
  attemptExit?: AttemptExit;
  /** The task's own retention (the submit's `retention`). */
  retention?: TaskRetention;
  /** Why a queued task is held back right now, while flow control keeps it (not stored: read at the call). */
  heldBy?: TaskHold;
}

/** Filters and paging of `rt.list()`. */
export interface ListOptions {
  state?: TaskState | undefined;
  agent?: string | undefined;
  parentId?: string | undefined;
  /** Tasks that have every one of these labels with these values. */
  labels?: Record<string, string> | undefined;
  /** Page size, 1..1000. @default 100 */
  limit?: number | undefined;
  /** Cursor from a previous page's `next`. */
  after?: string | undefined;
}

/** One page of `rt.list()`, in task id (submit) order. */
export interface TaskPage {
  tasks: Task[];
  /** Cursor of the next page, or null at the end. */
  next: string | null;
}

/** Options of `rt.wait()`. */
export interface WaitOptions {
  /** Rejects with WAIT_TIMEOUT after this long. */
  timeoutMs?: number | undefined;
  signal?: AbortSignal | undefined;
}
