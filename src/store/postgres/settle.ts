/**
 * Ending attempts on the PostgreSQL queue (issue #15): what an attempt's exit does to its task,
 * decided by a pure function (end-decision.ts), and the fenced writes that make it so, one
 * transaction per batch, each with its settling event (`task.done`, `task.failed`,
 * `task.retrying`, `task.dropped`, …) in the same transaction. The sweeper (sweeper.ts) ends the attempts of dead nodes and expired leases
 * through the same writes, so a task settles, and is told of, the same way whoever ends its attempt.
 */
import type pg from 'pg';
import type { WireError } from '../../../actors/wire.js';
import type { AttemptExit, TaskState } from '../../../machines/index.js';
import type { TaskResult } from '../../api/tasks.js';
import { TroupeError } from '../../errors.js';
import { changesFastFails, foldFastFails, lockBackoffAgents, writeFastFails, type BackoffEnd } from './backoff.js';
import { checkLease, checkResult, type Lease } from './checks.js';
import { decideEnd, defaultError, type EndDecision } from './end-decision.js';
import { eventOf, type NewEvent } from './events.js';
import { SETTLE, SETTLE_SUCCESSES, WRITE_ENDS } from './ends-statement.js';
import { inputEndsStatement } from './input-ends.js';
import { jsonOf, jsonOfKnown, storeFailed, transaction } from './transaction.js';

export { decideEnd, type EndDecision } from './end-decision.js';

/** How one attempt ended, as its node reports it. */
export interface AttemptEnd extends Lease {
  exit: AttemptExit;
  /** The agent's output (plain JSON data). */
  output?: unknown;
  /**
   * The task's `result` once this end settles it: what the agent returned, less its output (see
   * src/tasks/outcome.ts resultOf). Only with the exit of its kind: success, fork or fail.
   */
  result?: TaskResult;
  /** What went wrong (exits other than success and fork); a default for the exit when absent. */
  error?: WireError;
  /** A retry waits this long on the database's clock before it can be claimed. @default 0 */
  retryDelayMs?: number;
  /**
   * The agent asked to sleep (only with exit success): the task goes to `sleeping` until
   * `wakeAfterMs` from the database's `now()`, then wakes into a new run (wakes.ts), whose
   * attempts see `followUp`.
   */
  sleep?: { wakeAfterMs: number; followUp?: unknown };
  /** An `interrupted` end that rt.kill() caused: its `task.queued` says `killed`, as on LMDB. */
  killed?: boolean;
  /**
   * Only for an attempt whose agent asked for input (inbox.ts): how many of the task's inputs its
   * agent took. Inputs delivered beyond them are given back for the next attempt, and the end may
   * find the task `waiting` (input-ends.ts). Ends without it take the plain statements.
   */
  handed?: number;
  /**
   * Its agent has a fast-failure backoff (its claim said so: ClaimedTask.backoff), and the attempt
   * ran `ms` on its node's clock: the settle counts the end toward a pause (backoff.ts).
   */
  backoff?: BackoffEnd;
}

/** What a settle did: the attempts it ended with their task's new state, and those it refused. */
export interface SettleResult {
  settled: Array<Lease & { state: TaskState }>;
  /** Attempts that are no longer current (token moved on, or the task is not running): nothing was written for them. */
  stale: Lease[];
}

const EXITS: ReadonlySet<string> = new Set<AttemptExit>(['success', 'fork', 'fail', 'error', 'timeout', 'lease_expired', 'cancelled', 'crashed', 'interrupted']);

/**
 * Ends the attempts of `ends` in one transaction. Each write is fenced by the attempt's token and
 * the task being `running`: an attempt that is no longer current writes nothing and comes back in
 * `stale`, whatever happens to the others. INVALID_INPUT (nothing written) for a malformed end.
 */
export async function settleAttempts(pool: pg.Pool, ends: readonly AttemptEnd[]): Promise<SettleResult> {
  if (!Array.isArray(ends)) throw new TroupeError('INVALID_INPUT', 'ends must be an array');
  // Each output's JSON text, made once by the check and sent as the statement's parameter.
  const texts = new Map<AttemptEnd, string | null>();
  const checked = ends.map((end, i) => checkEnd(end, `ends[${i}]`, texts));
  if (checked.length === 0) return { settled: [], stale: [] };
  const inputs = checked.some((end) => end.handed !== undefined);
  // Ends that count toward an agent's backoff: ends of agents without one never take this branch.
  const counted = checked.filter((end) => end.backoff !== undefined && changesFastFails(end.exit, end.error));
  if (!inputs && counted.length === 0 && checked.every((end) => ROW_FREE_EXITS.has(end.exit)) && new Set(checked.map((end) => end.taskId)).size === checked.length) return settleInOneStatement(pool, checked, texts);
  return transaction(pool, 'settling attempts', async (client) => {
    // The agents' rows before the tasks' (backoff.ts: the lock order, and why first).
    const agents = counted.length > 0 ? await lockBackoffAgents(client, counted.map((end) => end.backoff!.agent)) : undefined;
    const current = await lockRunning(client, checked.map((e) => e.taskId), inputs);
    const writes: EndWrite[] = [];
    const written: AttemptEnd[] = [];
    const stale: Lease[] = [];
    for (const end of checked) {
      const task = current.get(end.taskId);
      // A second end of one attempt in a batch finds the first one's write pending: it is stale too.
      if (!task || task.token !== end.token) {
        stale.push({ taskId: end.taskId, token: end.token });
        continue;
      }
      current.delete(end.taskId);
      writes.push(writeOf(end, task, texts.get(end)));
      written.push(end);
    }
    const ended = await writeEnds(client, writes, inputs);
    if (agents) {
      const attemptIds = new Map(writes.map((w) => [w.task.id, w.task.attemptId]));
      await writeFastFails(client, foldFastFails(agents, written.filter((end) => ended.has(end.taskId))), (taskId) => attemptIds.get(taskId)!);
    }
    return resultOf(writes.map((w) => ({ taskId: w.task.id, token: w.task.token })), ended, stale);
  });
}

/** The write that ends `end`'s attempt of `task`, decided from the task's attempt budget. */
function writeOf(end: AttemptEnd, task: RunningTask, outputJson?: string | null): EndWrite {
  const attemptError = end.exit === 'success' || end.exit === 'fork' ? undefined : (end.error ?? defaultError(end.exit));
  const write: EndWrite = { task, exit: end.exit, decision: decideEnd(end.exit, end.error, task.attempts, task.maxAttempts, end.sleep !== undefined), output: end.output, result: end.result, attemptError, delayMs: end.sleep?.wakeAfterMs ?? end.retryDelayMs };
  if (outputJson !== undefined) write.outputJson = outputJson;
  if (end.sleep?.followUp !== undefined) write.followUp = end.sleep.followUp;
  if (end.killed === true) write.killed = true;
  if (end.handed !== undefined) write.handed = end.handed;
  return write;
}

/** Each of `leases` settled (with the state the write left) or stale (not written), after those already found stale. */
function resultOf(leases: readonly Lease[], ended: Map<string, TaskState>, stale: Lease[] = []): SettleResult {
  const settled: SettleResult['settled'] = [];
  for (const { taskId, token } of leases) {
    const state = ended.get(taskId);
    if (state === undefined) stale.push({ taskId, token });
    else settled.push({ taskId, token, state });
  }
  return { settled, stale };
}

/**
 * Exits whose end {@link decideEnd} decides without the task's row (the attempt budget plays no
 * part): what the task becomes, and its event but for the row's run and attempt, are known before
 * the row is read.
 */
const ROW_FREE_EXITS: ReadonlySet<AttemptExit> = new Set<AttemptExit>(['success', 'fork', 'fail', 'cancelled', 'interrupted']);

/**
 * {@link settleAttempts} of ends that are all {@link ROW_FREE_EXITS}, of distinct tasks, as one
 * statement outside an explicit transaction (atomic all the same): one round trip instead of four
 * (BEGIN, the lock, the writes, COMMIT). The statement locks the current attempts' rows in id
 * order, then writes as {@link writeEnds} does, fenced the same way.
 */
async function settleInOneStatement(pool: pg.Pool, ends: readonly AttemptEnd[], texts: ReadonlyMap<AttemptEnd, string | null>): Promise<SettleResult> {
  let ended: Map<string, TaskState>;
  try {
    const result = plainSuccessesResult(ends);
    if (result !== undefined) ended = await queryEnds(pool, 'troupe-settle-successes', SETTLE_SUCCESSES, [ends.map((end) => end.taskId), ends.map((end) => end.token), ends.map((end) => texts.get(end) ?? null), result]);
    else {
      // The run and attempt are the row's: the statement puts them in the event (see endsStatement);
      // the budget plays no part in these exits.
      const writes = ends.map((end) => writeOf(end, { id: end.taskId, token: end.token, run: 0, attempt: 0, attempts: 1, maxAttempts: 1, ownerNode: '', attemptId: '' }, texts.get(end)));
      ended = await runEnds(pool, writes, 'troupe-settle', SETTLE);
    }
  } catch (error) {
    throw storeFailed('settling attempts', error);
  }
  return resultOf(ends, ended);
}

/**
 * When every end is a plain success (exit `success` with no error, sleep, retry delay or kill,
 * and the same result: `{ kind: 'success' }` on all, or none), that result's text (null: none),
 * for ends-statement.ts SETTLE_SUCCESSES, which writes what runEnds would from three arrays;
 * undefined otherwise. The usual batch of a busy node is all of these.
 */
function plainSuccessesResult(ends: readonly AttemptEnd[]): string | null | undefined {
  const withResult = ends[0]?.result !== undefined;
  for (const end of ends) {
    if (end.exit !== 'success' || end.error !== undefined || end.sleep !== undefined || end.retryDelayMs !== undefined || end.killed === true || end.handed !== undefined) return undefined;
    if ((end.result !== undefined) !== withResult) return undefined;
    if (end.result !== undefined && (end.result.kind !== 'success' || Object.keys(end.result).length !== 1)) return undefined;
  }
  return withResult ? SUCCESS_RESULT : null;
}

const SUCCESS_RESULT = JSON.stringify({ kind: 'success' });

/** A running task as the end of its attempt needs it. */
export interface RunningTask {
  id: string;
  token: number;
  run: number;
  attempt: number;
  attempts: number;
  maxAttempts: number;
  ownerNode: string;
  attemptId: string;
}

/** Locks the tasks of `ids` in id order and returns the running ones (`waiting` too: ends of attempts that asked for input). */
async function lockRunning(client: pg.PoolClient, ids: readonly string[], waiting = false): Promise<Map<string, RunningTask>> {
  const { rows } = await client.query<RunningRow>({ name: 'troupe-lock-running', text: LOCK_RUNNING, values: [ids] });
  return new Map(rows.filter((r) => r.state === 'running' || (waiting && r.state === 'waiting')).map((r) => [r.id, runningOf(r)]));
}

/** The columns {@link runningOf} reads. */
export const RUNNING_COLUMNS = 'id, state, token, run, attempt_seq, attempts, max_attempts, owner_node, attempt_id';

/** Locks the named tasks in id order (prepared by name: see queue.ts CLAIM). */
const LOCK_RUNNING = `SELECT ${RUNNING_COLUMNS} FROM troupe_tasks WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE`;

/** A row of {@link RUNNING_COLUMNS}. */
export interface RunningRow {
  id: string;
  state: TaskState;
  token: string;
  run: number;
  attempt_seq: number;
  attempts: number;
  max_attempts: number;
  owner_node: string;
  attempt_id: string;
}

/** The running task of a row of {@link RUNNING_COLUMNS}. */
export function runningOf(r: RunningRow): RunningTask {
  return { id: r.id, token: Number(r.token), run: r.run, attempt: r.attempt_seq, attempts: r.attempts, maxAttempts: r.max_attempts, ownerNode: r.owner_node, attemptId: r.attempt_id };
}

/** One attempt to end, decided. */
export interface EndWrite {
  task: RunningTask;
  exit: AttemptExit;
  decision: EndDecision;
  output?: unknown;
  /** `output`'s JSON text when it was made already (checked by settleAttempts), so it is not made twice. */
  outputJson?: string | null;
  /** The task's `result` (see {@link AttemptEnd.result}). */
  result?: TaskResult | undefined;
  /** The attempt's own error, kept on its attempt row. */
  attemptError?: WireError | undefined;
  /** A retry's delay, or a sleep's length (ms on the database's clock). */
  delayMs?: number | undefined;
  /** A sleep's follow-up, for the runs after its wake. */
  followUp?: unknown;
  /** See {@link AttemptEnd.killed}. */
  killed?: boolean;
  /** See {@link AttemptEnd.handed}. */
  handed?: number | undefined;
  /** Why an attempt that does not count ended (its event's `reason`). @default 'interrupted' */
  reason?: string | undefined;
}

/**
 * Writes decided ends in the caller's transaction, in one statement: each task leaves `running`
 * with its token bumped (so its attempt can write nothing more), the end's output and result
 * (schema version 9; none for an end without them) and, when requeued, a new place at the end of
 * the queue; its attempt's row is written (schema version 7: an attempt's only write there), with
 * what the task's row held of it while it ran, its end and its exit, and the event of each end
 * written ({@link endEvent}). Fenced by token and state. Returns the new state of each task
 * written. The caller holds the rows (settleAttempts, the sweeper).
 */
export async function writeEnds(client: pg.PoolClient, writes: readonly EndWrite[], inputs = false): Promise<Map<string, TaskState>> {
  return inputs ? runEnds(client, writes, 'troupe-write-input-ends', WRITE_INPUT_ENDS, true) : runEnds(client, writes, 'troupe-write-ends', WRITE_ENDS);
}

/** Runs {@link endsStatement} `text`, prepared by name (see queue.ts CLAIM), for `writes`. */
async function runEnds(on: Pick<pg.Pool, 'query'>, writes: readonly EndWrite[], name: string, text: string, inputs = false): Promise<Map<string, TaskState>> {
  if (writes.length === 0) return new Map();
  // Each end's event is decided here; the statement adds the attempt's length (it runs on the
  // database's clock), and its run and attempt from the row, and appends the events of the ends it
  // wrote, in order.
  const events = writes.map((w) => endEvent(w, 0));
  const values: unknown[] = [
      writes.map((w) => w.task.id),
      writes.map((w) => w.task.token),
      writes.map((w) => w.decision.state),
      writes.map((w) => w.decision.counts),
      writes.map((w, i) => (w.outputJson !== undefined ? w.outputJson : jsonOf(w.output, `writes[${i}].output`))),
      writes.map((w, i) => jsonOfKnown(w.decision.error, `writes[${i}].decision.error`)),
      writes.map((w) => w.delayMs ?? 0),
      writes.map((w) => w.exit),
      writes.map((w, i) => jsonOfKnown(w.attemptError, `writes[${i}].attemptError`)),
      events.map((ev) => ev.type),
      events.map((ev) => JSON.stringify(ev.data)),
      writes.map((w, i) => jsonOfKnown(w.result, `writes[${i}].result`)),
      writes.map((w, i) => jsonOf(w.followUp, `writes[${i}].followUp`)),
  ];
  if (inputs) values.push(writes.map((w) => w.handed ?? null));
  return queryEnds(on, name, text, values);
}

/** Runs an ends statement (ends-statement.ts) prepared by name: the state each task it wrote was left in. */
async function queryEnds(on: Pick<pg.Pool, 'query'>, name: string, text: string, values: unknown[]): Promise<Map<string, TaskState>> {
  const { rows } = await on.query<{ id: string; state: TaskState }>({ name, text, values });
  return new Map(rows.map((r) => [r.id, r.state]));
}

/** The writes of ends of attempts that asked for input (input-ends.ts). */
const WRITE_INPUT_ENDS = inputEndsStatement();

/**
 * The event of an attempt's end, with the type and payload the LMDB runtime's settle step gives it
 * (src/steps/settle.ts): done, failed, cancelled, dropped (`retry_exhausted`), retrying after a
 * failure, or queued again without counting after an interruption.
 */
export function endEvent(write: EndWrite, attemptMs: number): NewEvent {
  const { task, exit, decision } = write;
  const { run, attempt } = task;
  const error = decision.error;
  // Each data object is one literal: a spread of the fields every end shares, at every end of a
  // batch, cost more than the rest of this function (see attempt-end.ts).
  switch (decision.state) {
    case 'done': {
      const kind = exit === 'fork' ? 'fork' : 'success';
      const summary = write.result?.summary;
      return eventOf('task.done', summary === undefined ? { run, attempt, exit, attemptMs, kind } : { run, attempt, exit, attemptMs, kind, summary }, task.id, task.attemptId);
    }
    case 'failed':
      return eventOf('task.failed', error === undefined ? { run, attempt, exit, attemptMs } : { run, attempt, exit, attemptMs, error }, task.id, task.attemptId);
    case 'cancelled':
      return eventOf('task.cancelled', { run, attempt, exit, attemptMs, reason: error?.message ?? 'cancelled' }, task.id, task.attemptId);
    case 'sleeping':
      // Its `wakeAt` is the statement's to write (the database's clock), as are run, attempt and attemptMs.
      return eventOf('task.sleeping', { run, attempt, exit, attemptMs, wakeAt: 0 }, task.id, task.attemptId);
    case 'dropped':
      return eventOf('task.dropped', error === undefined ? { run, attempt, exit, attemptMs, reason: 'retry_exhausted' } : { run, attempt, exit, attemptMs, reason: 'retry_exhausted', error }, task.id, task.attemptId);
    default:
      // A `reason` of its own (a sweep's process_crashed) is for a waiting task's detach (input-ends.ts), whose event is task.waiting.
      if (!decision.counts) return eventOf('task.queued', { run, attempt, exit, attemptMs, reason: write.killed === true ? 'killed' : ((write.reason ?? 'interrupted') as 'interrupted') }, task.id, task.attemptId);
      return eventOf('task.retrying', error === undefined ? { run, attempt, exit, attemptMs, delayMs: write.delayMs ?? 0 } : { run, attempt, exit, attemptMs, delayMs: write.delayMs ?? 0, error }, task.id, task.attemptId);
  }
}

function checkEnd(end: AttemptEnd, where: string, texts: Map<AttemptEnd, string | null>): AttemptEnd {
  checkLease(end, where);
  if (!EXITS.has(end.exit)) throw new TroupeError('INVALID_INPUT', `${where}.exit must be one of ${[...EXITS].join(', ')}`);
  if (end.error !== undefined) {
    const e = end.error;
    if (typeof e !== 'object' || e === null || typeof e.code !== 'string' || typeof e.message !== 'string' || typeof e.retryable !== 'boolean' || (e.fault !== 'agent' && e.fault !== 'infrastructure')) {
      throw new TroupeError('INVALID_INPUT', `${where}.error must be {code, message, retryable, fault: 'agent' | 'infrastructure'}`);
    }
  }
  if (end.retryDelayMs !== undefined && !(Number.isSafeInteger(end.retryDelayMs) && end.retryDelayMs >= 0)) throw new TroupeError('INVALID_INPUT', `${where}.retryDelayMs must be a non-negative integer`);
  if (end.result !== undefined) checkResult(end.result, end.sleep !== undefined ? 'sleep' : end.exit, `${where}.result`);
  if (end.backoff !== undefined) checkBackoff(end.backoff, `${where}.backoff`);
  if (end.sleep !== undefined) checkSleep(end.sleep, end.exit, `${where}.sleep`);
  if (end.handed !== undefined && !(Number.isSafeInteger(end.handed) && end.handed >= 0)) throw new TroupeError('INVALID_INPUT', `${where}.handed must be a non-negative integer`);
  // Checked now, so a value jsonb cannot hold fails the call before its transaction, not inside it.
  texts.set(end, jsonOfKnown(end.output, `${where}.output`));
  jsonOfKnown(end.error, `${where}.error`);
  jsonOfKnown(end.result, `${where}.result`);
  jsonOf(end.sleep?.followUp, `${where}.sleep.followUp`);
  return end;
}

/** A sleep ends a successful attempt only, for a whole number of ms. */
function checkSleep(sleep: NonNullable<AttemptEnd['sleep']>, exit: AttemptExit, where: string): void {
  if (typeof sleep !== 'object' || sleep === null) throw new TroupeError('INVALID_INPUT', `${where} must be an object`);
  if (exit !== 'success') throw new TroupeError('INVALID_INPUT', `${where}: only a success exit can sleep`);
  if (!Number.isSafeInteger(sleep.wakeAfterMs) || sleep.wakeAfterMs < 0) throw new TroupeError('INVALID_INPUT', `${where}.wakeAfterMs must be a non-negative integer`);
}

/** A backoff end names its agent and how long the attempt ran. */
function checkBackoff(backoff: BackoffEnd, where: string): void {
  if (typeof backoff !== 'object' || backoff === null || typeof backoff.agent !== 'string' || !(Number.isFinite(backoff.ms) && backoff.ms >= 0)) {
    throw new TroupeError('INVALID_INPUT', `${where} must be { agent, ms } with ms a non-negative number`);
  }
}
