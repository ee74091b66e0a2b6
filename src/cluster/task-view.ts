/**
 * Tasks of the runtime on PostgreSQL, at its edges: a submitted spec checked by the LMDB runtime's
 * own validation (src/tasks/spec.ts), then turned into the queue's row, with the fields the
 * cluster cannot honour yet refused (UNSUPPORTED_STORE, naming the field); and a stored row turned
 * into the public Task, the shape the LMDB runtime returns. Pure: no I/O, no clock reads.
 */
import type { Task, TaskResult, TaskSpec } from '../api/tasks.js';
import type { RegisteredAgent } from '../agents/registry.js';
import { TroupeError } from '../errors.js';
import type { RetryPolicy } from '../store/records.js';
import { retentionFromJson, type NewTask } from '../store/postgres/checks.js';
import type { TaskRow } from '../store/postgres/tasks.js';
import { validateSpec } from '../tasks/spec.js';

/** UNSUPPORTED_STORE for `what` on this store. */
export function unsupported(what: string): TroupeError {
  return new TroupeError('UNSUPPORTED_STORE', `${what} is not supported on the PostgreSQL store yet (README: "Running on many machines")`);
}

/**
 * A spec checked as the LMDB runtime checks it (UNKNOWN_AGENT, INVALID_INPUT naming the field),
 * then as the queue's row: the agent, input, priority, labels, idempotency key, a delay (from
 * `delayMs` or `runAt`, against `now`), the attempt budget (`retry.maxAttempts` over the
 * agent's), the task's own `timeoutMs`, other retry fields and `retention`, its `requires`, and a
 * workspace given as a path. A lane other than `default` is UNSUPPORTED_STORE, and so is a workspace
 * without a path: the directory Troupe would make for the task would be one node's.
 */
export function newTaskOf(spec: TaskSpec, lookup: (name: string) => RegisteredAgent | undefined, where: string, now: number, id: string): NewTask {
  const valid = validateSpec(spec, lookup, where, now);
  if (valid.lane !== 'default') throw unsupported(`${where}.lane`);
  if (valid.workspaceKeep !== undefined) throw unsupported(`${where}.workspace without a path (a workspace Troupe creates for the task)`);
  const task: NewTask = { id, agent: valid.agentName, input: valid.input, priority: valid.priority, labels: valid.labels };
  // A spec with `requires` and no agent is routed in the submit's transaction
  // (store/postgres/routing.ts): its budget is its own, or the routed agent's as its row stores it.
  const routed = valid.agentName === '';
  if (!routed || spec.retry?.maxAttempts !== undefined) task.maxAttempts = valid.retry.maxAttempts;
  if (valid.requires !== undefined) task.requires = valid.requires;
  if (valid.unmatched && !routed) task.unmatched = true;
  // The task's own timeout and retry fields are kept as given: the node that claims it lays them
  // over its registration of the agent (queue.ts ClaimedTask), which may differ from this one's.
  if (spec.timeoutMs !== undefined) task.timeoutMs = spec.timeoutMs;
  const { maxAttempts: _budget, ...retry } = spec.retry ?? {};
  if (Object.values(retry).some((value) => value !== undefined)) task.retry = retry;
  if (valid.idempotencyKey !== undefined) task.idempotencyKey = valid.idempotencyKey;
  if (spec.parentId !== undefined) task.parentId = spec.parentId;
  if (valid.retention !== undefined) task.retention = valid.retention;
  if (valid.runAt !== undefined) task.delayMs = valid.runAt - now;
  if (valid.workspace !== undefined) task.workspace = valid.workspace;
  return task;
}

/** What a task view takes from the runtime: the agent's registration here, if any, and the defaults. */
export interface ViewDefaults {
  timeoutMs: number;
  retry: Readonly<RetryPolicy>;
}

/**
 * The public Task of a stored row. Times are the database's, in whole ms. The retry policy and
 * timeout are the task's own fields over the agent's as registered on this runtime (the defaults
 * for an agent it does not run), with the task's own attempt budget. There are no execution instances on PostgreSQL:
 * `instanceKey` is '' and `lane` 'default'.
 */
export function taskOf(row: TaskRow, agent: RegisteredAgent | undefined, defaults: ViewDefaults): Task {
  const task: Task = {
    id: row.id,
    agent: row.agent,
    state: row.state,
    input: row.input,
    attempts: row.attempts,
    runs: row.run,
    priority: row.priority,
    lane: 'default',
    instanceKey: '',
    labels: { ...row.labels },
    timeoutMs: row.timeout_ms !== null ? Number(row.timeout_ms) : (agent?.timeoutMs ?? defaults.timeoutMs),
    retry: { ...(agent?.retry ?? defaults.retry), ...row.retry, maxAttempts: row.max_attempts },
    createdAt: ms(row.created_at),
    updatedAt: ms(row.updated_at),
  };
  if (row.output !== null) task.output = row.output;
  if (row.result !== null) task.result = row.result as TaskResult;
  if (row.error !== null) task.error = row.error as Task['error'] & object;
  if (row.state === 'cancelled' && row.cancel_reason !== null) task.reason = row.cancel_reason;
  if (row.state === 'dropped') task.reason = 'retry_exhausted';
  // The only way into needs_attention on this store: no agent covers its `requires`.
  if (row.state === 'needs_attention') task.reason = 'unmatched';
  if (row.requires !== null) task.requires = [...row.requires];
  if (row.idempotency_key !== null) task.idempotencyKey = row.idempotency_key;
  if (row.parent_id !== null) task.parentId = row.parent_id;
  if (row.workspace !== null) task.workspace = row.workspace;
  if (row.retention !== null) task.retention = retentionFromJson(row.retention);
  // The last progress its attempts reported in this run, with the agent's `at` (as the LMDB runtime's record keeps it).
  if (row.progress !== null) task.progress = { ...row.progress };
  // When the task last entered `queued`, kept once it left it, as the LMDB runtime keeps it.
  task.queuedAt = ms(row.queued_at);
  if (row.state === 'queued' && row.run_at > row.queued_at + 1) task.runAt = ms(row.run_at);
  // A sleeping task's wake, as the LMDB runtime shows it.
  if (row.state === 'sleeping') task.runAt = ms(row.run_at);
  if (row.started_at !== null) task.startedAt = ms(row.started_at);
  if (row.settled_at !== null) task.settledAt = ms(row.settled_at);
  if (row.state === 'running' && row.attempt_started_at !== null) task.attemptStartedAt = ms(row.attempt_started_at);
  if (row.state === 'running' && row.lease_until !== null) task.attemptLeaseUntil = ms(row.lease_until);
  if (row.state === 'waiting' && row.waiting_for !== null) task.waitingFor = row.waiting_for;
  return task;
}

function ms(epoch: number): number {
  return Math.round(epoch);
}
