/**
 * The one error class of the public API, and the catalogue of its codes.
 *
 * Every code is documented here and in the README's error table; a unit test keeps the two in step.
 * Normal state changes (a task failing, a retry) are events, never thrown errors.
 */

/** Every code a {@link TroupeError} can carry, with whether retrying the same call may succeed. */
export const ERROR_CODES = {
  /** A submitted task names an agent that is not registered. */
  UNKNOWN_AGENT: { retryable: false, summary: 'The task names an agent that is not registered.' },
  /** A task spec or its input is malformed or cannot be stored (e.g. a function in the input). */
  INVALID_INPUT: { retryable: false, summary: 'A task spec or its input is malformed or not serializable.' },
  /** Runtime or agent options are invalid; the message names the option. */
  INVALID_OPTIONS: { retryable: false, summary: 'An option is invalid; the message names it.' },
  /** Admission is full: more than `maxQueued` tasks are queued. Nothing was stored. */
  AT_CAPACITY: { retryable: true, summary: 'More than `maxQueued` tasks are queued; nothing was stored.' },
  /** No task with that id. */
  NOT_FOUND: { retryable: false, summary: 'No task (or instance) with that id.' },
  /** The task's state does not allow the requested change (e.g. retrying a done task). */
  ILLEGAL_TRANSITION: { retryable: false, summary: "The task's state does not allow that change." },
  /** Another runtime (this or another process) has the data dir open. */
  DATA_DIR_LOCKED: { retryable: true, summary: 'Another live runtime holds the data dir.' },
  /** The data dir was written by an unknown (newer) schema version. */
  SCHEMA_MISMATCH: { retryable: false, summary: 'The data dir was written by an unknown schema version.' },
  /** A cron expression does not parse. */
  INVALID_CRON: { retryable: false, summary: 'A cron expression does not parse, or has other than 5 or 6 fields.' },
  /** A time zone is not a known IANA zone. */
  INVALID_TIMEZONE: { retryable: false, summary: 'A time zone is not a known IANA zone name.' },
  /** The runtime is closing or closed. */
  CLOSED: { retryable: false, summary: 'The runtime is draining or closed.' },
  /** A call arrived in a lifecycle state that does not allow it (e.g. while starting); the message names the state. */
  ILLEGAL_STATE: { retryable: false, summary: 'The runtime is in a lifecycle state that does not allow the call; the message names it.' },
  /** `wait()` gave up before the task settled. */
  WAIT_TIMEOUT: { retryable: true, summary: '`wait()` gave up before the task settled.' },
  /** An agent module failed to import in a worker thread (task error code). */
  AGENT_LOAD_FAILED: { retryable: false, summary: "An agent module failed to import; the message is the import error's." },
  /** An agent threw (task error code). `retryable` follows the agent's AgentError, default true. */
  AGENT_ERROR: { retryable: true, summary: 'An agent threw; retried per policy unless marked non-retryable.' },
  /** An agent returned `{kind: 'fail'}` (task error code). */
  AGENT_FAILED: { retryable: false, summary: "An agent returned `{ kind: 'fail' }`." },
  /** An agent returned something that cannot cross a thread or be stored (task error code). */
  INVALID_RESULT: { retryable: false, summary: 'An agent returned a value that is not serializable.' },
  /** An attempt ran past its `timeoutMs` (task error code). */
  TIMEOUT: { retryable: true, summary: 'An attempt ran past its `timeoutMs`.' },
  /** An attempt stopped renewing its lease: its thread hung or blocked (task error code, infrastructure fault). */
  LEASE_EXPIRED: { retryable: true, summary: "The attempt's lease ran out: its thread hung or blocked (infrastructure fault)." },
  /** The worker thread died under an attempt (task error code, infrastructure fault). */
  THREAD_CRASHED: { retryable: true, summary: 'The worker thread died during the attempt (infrastructure fault).' },
  /** The process died during an attempt; found on the next open (task error code, infrastructure fault). */
  PROCESS_CRASHED: { retryable: true, summary: 'The process died during the attempt (infrastructure fault).' },
  /** The task was cancelled (task error code). */
  CANCELLED: { retryable: false, summary: 'The task was cancelled.' },
  /** Attempts ran out (task error code of a dropped task). */
  RETRY_EXHAUSTED: { retryable: false, summary: 'The retry policy ran out of attempts; the task is dropped.' },
  /** The task sat queued on a degraded instance past `degradedDropMs` (task error code of a dropped task). */
  INSTANCE_DEGRADED: { retryable: false, summary: 'The task sat queued on a degraded instance past `degradedDropMs`; it is dropped.' },
  /** The task's workspace directory could not be created (task error code, infrastructure fault). */
  WORKSPACE_FAILED: { retryable: true, summary: "The task's workspace directory could not be created (infrastructure fault)." },
  /** A call from an agent whose attempt is no longer current; the host ignored it (agent context). */
  FENCED: { retryable: false, summary: 'A call from an attempt that is no longer current was refused (agent context).' },
  /** The attempt was cancelled, timed out or shut down while the agent waited on the host (agent context). */
  ABORTED: { retryable: true, summary: 'The attempt was cancelled, timed out or shut down while the agent waited on the host (agent context).' },
  /** An agent called the host (input, spawn, join) and the host failed unexpectedly (agent context). */
  AGENT_CALL_FAILED: { retryable: true, summary: 'A call from the agent to the host (input, spawn, join) failed unexpectedly (agent context).' },
  /** An agent used its context after its attempt returned (agent context). */
  ATTEMPT_ENDED: { retryable: false, summary: 'The agent used its context after its attempt returned (agent context).' },
  /** `ctx.waitForInput({ timeoutMs })` gave up (agent context). */
  INPUT_TIMEOUT: { retryable: true, summary: '`ctx.waitForInput({ timeoutMs })` gave up before an input came (agent context).' },
  /** An `events({ after })` cursor is older than what the event log keeps (retention removed what followed it). */
  CURSOR_EXPIRED: { retryable: false, summary: 'An `events()` cursor is older than what the event log keeps; the message names the oldest cursor still available.' },
  /** The store failed to read or write. */
  STORE_FAILED: { retryable: true, summary: 'The LMDB store failed to read or write.' },
  /** The call (or option, or task field) is valid but has no backing on the runtime's store yet (PostgreSQL); the message names it and the store. */
  UNSUPPORTED_STORE: { retryable: false, summary: "The call, option or task field is not supported on this runtime's store yet (PostgreSQL); the message names it." },
  STORE_CORRUPT: { retryable: false, summary: 'The data file is damaged (empty, truncated, or without a valid meta page); it is left untouched.' },
} as const satisfies Record<string, { retryable: boolean; summary: string }>;

/** A documented error code. */
export type TroupeErrorCode = keyof typeof ERROR_CODES;

/** Options accepted by the {@link TroupeError} constructor. */
export interface TroupeErrorOptions {
  /** Overrides the code's default retryability. */
  retryable?: boolean;
  /** The underlying error. */
  cause?: unknown;
}

/** The only error class Troupe throws. Switch on `code`, not on the message. */
export class TroupeError extends Error {
  /** Stable, documented code. */
  readonly code: TroupeErrorCode;
  /** Whether repeating the same call may succeed. */
  readonly retryable: boolean;

  constructor(code: TroupeErrorCode, message: string, options: TroupeErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'TroupeError';
    this.code = code;
    this.retryable = options.retryable ?? ERROR_CODES[code].retryable;
  }
}

/** Turns anything thrown into an Error, keeping Errors as they are. */
export function coerceError(value: unknown): Error {
  if (value instanceof Error) return value;
  if (typeof value === 'string') return new Error(value);
  try {
    return new Error(`non-error thrown: ${JSON.stringify(value)}`);
  } catch {
    return new Error(`non-error thrown: ${String(value)}`);
  }
}

/** True when `value` is a TroupeError with the given code. */
export function isTroupeError(value: unknown, code?: TroupeErrorCode): value is TroupeError {
  return value instanceof TroupeError && (code === undefined || value.code === code);
}
