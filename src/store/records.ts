/**
 * The records Troupe keeps in LMDB, one named database each (see DESIGN.md, "Vocabulary and data
 * model"). These are storage shapes; the public views are built from them in src/tasks/.
 */
import { isTerminal, type AttemptExit, type TaskState } from '../../machines/index.js';
import type { WireError } from '../../actors/wire.js';
import type { Key } from './port.js';

export type { RetryPolicy, TaskResult, TaskRetention } from '../api/tasks.js';
import type { RetryPolicy, Task, TaskResult, TaskRetention } from '../api/tasks.js';

/**
 * A task as stored: the public task's fields (api/tasks.ts `Task`, which documents each), with the
 * values the public view types more narrowly kept as stored, and the bookkeeping it leaves out.
 * A settled task holds its final attempt (`attemptStartedAt`, `attemptLeaseUntil`, `attemptExit`):
 * that attempt is not written as a record of its own until a retry starts a new run, so a task that
 * settles is one record, not two; `endedAttemptOf` (steps/common.ts) gives the record.
 */
export interface TaskRecord extends Omit<Task, 'id' | 'input' | 'output' | 'error' | 'heldBy'> {
  id: string;
  input: unknown;
  output?: unknown;
  error?: WireError;
  /** Why the current run started. */
  runReason: RunReason;
  /** When the current run started. */
  runCreatedAt: number;
  /** Attempt numbers handed out in the current run (interrupted attempts take a number but do not count). */
  attemptSeq: number;
  /** Fencing token of the current attempt (0 before the first). */
  token: number;
  /** FIFO key: the event seq at which the task last entered `queued`. */
  queuedOrder: number;
  /** The spec's own retry and timeout of a task no agent matched yet, applied once it is routed. */
  unrouted?: { retry?: Partial<RetryPolicy>; timeoutMs?: number };
  /** Inputs sent to the task so far (inbox seqs 1..inbox), and how many of them were delivered. */
  inbox?: number;
  delivered?: number;
  /** Where a long-queued task stands on the starvation ladder (supervisor cycles, durable). */
  ladder?: { firstCycle: number; rung: 0 | 1 };
  /** What the next run is told (sleep/wake). */
  followUp?: unknown;
  /** The seq of the task's first event (its submit's): where `events({ taskId })` starts reading the log. */
  firstSeq?: number;
  /** The W3C trace context of its submit's span, when tracing was on then: its attempts' spans are its children. */
  trace?: TraceCarrier;
}

/** A W3C trace context as headers carry it (src/telemetry/). */
export interface TraceCarrier {
  traceparent: string;
  tracestate?: string;
}

/** One execution of a task in a slot. */
export interface AttemptRecord {
  taskId: string;
  run: number;
  attempt: number;
  attemptId: string;
  token: number;
  /** The runtime that ran it (its data dir's runtimeId). */
  owner: string;
  startedAt: number;
  /** Lease expiry as first granted; renewals by heartbeats are kept in memory only, because a lease cannot outlive its process. */
  leaseExpiresAt: number;
  endedAt?: number;
  exit?: AttemptExit;
  error?: WireError;
}

/** Why a run started. */
export type RunReason = 'submit' | 'retry' | 'wake' | 'resume';

/** A durable input sent to a task (inbox database, key [taskId, seq]). */
export interface InboxRecord {
  seq: number;
  message: unknown;
  idempotencyKey?: string;
  at: number;
  /** When an attempt received it (the attempt's id); absent while pending. */
  deliveredAt?: number;
  deliveredTo?: string;
}

/** One settled pass of a task toward an outcome. */
export interface RunRecord {
  taskId: string;
  run: number;
  reason: RunReason;
  createdAt: number;
  settledAt: number;
  outcome: TaskState;
  attempts: number;
  result?: TaskResult;
  error?: WireError;
}

export { EVENT_TYPES } from '../api/events.js';
export type { EventType } from '../api/events.js';
import type { EventType } from '../api/events.js';

/** An entry of the append-only event log. */
export interface EventRecord {
  seq: number;
  at: number;
  type: EventType;
  taskId?: string;
  attemptId?: string;
  data?: Record<string, unknown>;
}

/** A durable timer. */
export interface TimerRecord {
  id: string;
  due: number;
  kind: 'start' | 'retry' | 'wake';
  taskId: string;
  run: number;
}

/** The envelope around an instance actor's persisted snapshot. */
export interface InstanceEnvelope {
  schema: 1;
  machine: 'instance';
  version: number;
  /** Event seq when it was written; orders envelopes. */
  seq: number;
  /** Boot that wrote it: a different boot means its transient attempt counts are stale. */
  bootId: string;
  snapshot: unknown;
}

/** A stored log line. */
export interface LogRecord {
  level: 'debug' | 'info' | 'warn' | 'error';
  message: string;
  at: number;
  attemptId: string;
  fields?: Record<string, unknown>;
}

/** What a schedule does when a tick comes while its previous run is not terminal. */
export type OverlapPolicy = 'skip' | 'allow' | 'queue_one';
/** Which ticks missed during downtime (within `catchUpWindowMs`) fire on open. */
export type CatchUpPolicy = 'skip' | 'once' | 'all';

/** A stored cron schedule. */
export interface ScheduleRecord {
  id: string;
  cron: string;
  tz: string;
  /** The task each tick submits (a task spec without idempotencyKey, runAt or delayMs). */
  task: Record<string, unknown>;
  overlap: OverlapPolicy;
  catchUp: CatchUpPolicy;
  catchUpWindowMs: number;
  paused: boolean;
  /** The next tick to fire (epoch ms); advanced by compare-and-swap in the step that submits its task. */
  nextRunAt: number;
  /** The last tick that fired, and the task it submitted. */
  lastTickAt?: number;
  lastTaskId?: string;
  /** queue_one: a tick that came while the previous run was busy, fired when it settles. */
  pendingTick?: number;
  /** Ticks that submitted a task, and ticks skipped (overlap, catch-up or an error). */
  fired: number;
  skipped: number;
  createdAt: number;
  updatedAt: number;
}

/** The durable runtime controls (`control` database, key `runtime`). */
export interface RuntimeControl {
  frozen: boolean;
  /** Why, and whether `kill()` did it. */
  reason?: string;
  killed?: boolean;
  since?: number;
}

/** An agent's durable flow-control state (`control` database, key `agent:<name>`). */
export interface AgentFlowState {
  /** Token bucket of `rate`: tokens left as of `refilledAt`. */
  tokens?: number;
  refilledAt?: number;
  /** `dailyLimit`: attempts started in the window that began at `dayStart`. */
  dayStart?: number;
  dayCount?: number;
  /** Consecutive fast failed attempts. */
  fastFails: number;
  /** Paused by backoff until then (epoch ms). */
  pausedUntil?: number;
}

/** Every field of a task record, undefined, in the record's one order (see {@link createTaskRecord}). Never changed. */
const BLANK_TASK_RECORD: TaskRecord = {
  id: undefined,
  agent: undefined,
  state: undefined,
  input: undefined,
  output: undefined,
  result: undefined,
  error: undefined,
  reason: undefined,
  progress: undefined,
  priority: undefined,
  lane: undefined,
  workspace: undefined,
  workspaceKeep: undefined,
  instanceKey: undefined,
  parentId: undefined,
  idempotencyKey: undefined,
  labels: undefined,
  timeoutMs: undefined,
  retry: undefined,
  runs: undefined,
  runReason: undefined,
  runCreatedAt: undefined,
  attempts: undefined,
  attemptSeq: undefined,
  token: undefined,
  queuedOrder: undefined,
  queuedAt: undefined,
  requires: undefined,
  unrouted: undefined,
  waitingFor: undefined,
  inbox: undefined,
  delivered: undefined,
  ladder: undefined,
  runAt: undefined,
  followUp: undefined,
  createdAt: undefined,
  updatedAt: undefined,
  startedAt: undefined,
  settledAt: undefined,
  attemptStartedAt: undefined,
  attemptLeaseUntil: undefined,
  attemptExit: undefined,
  retention: undefined,
  firstSeq: undefined,
  trace: undefined,
} as unknown as TaskRecord;

/** A task record's fields in its one order: the order the store writes them positionally in. */
export const TASK_RECORD_FIELDS = Object.keys(BLANK_TASK_RECORD) as ReadonlyArray<keyof TaskRecord>;

/**
 * A task record with every field present, in one order (absent ones undefined). Records built
 * from this one, and spread from each other, share one shape: V8 keeps their property access
 * monomorphic, and the store encodes them with one structure.
 *
 * The record is a spread of {@link BLANK_TASK_RECORD}, not an object literal. That gives it the
 * map of every `{ ...task, … }` the steps make (a literal's map is another one: checked with
 * `%HaveSameMap`), and it keeps the record out of V8's allocation-site pretenuring. V8 tracks the
 * objects a literal makes and, once nearly all of them outlive a scavenge, allocates every later
 * one in the old generation. Under load a queued task's record lives about as long as the time
 * between two scavenges, so the literal was pretenured (seen with
 * `--trace-pretenuring-statistics`). Each record then died in the old generation and kept the
 * young objects it pointed at alive through scavenges until they were promoted as well. A spread,
 * like an object made by a constructor, is never pretenured. The other per-task objects that live
 * as long are made by constructors for the same reason (governor entries and nodes, overlay
 * entries).
 */
export function createTaskRecord(fields: Pick<TaskRecord, 'id' | 'agent' | 'state' | 'input' | 'priority' | 'lane' | 'instanceKey' | 'labels' | 'timeoutMs' | 'retry' | 'runReason' | 'createdAt'>): TaskRecord {
  return {
    ...BLANK_TASK_RECORD,
    id: fields.id,
    agent: fields.agent,
    state: fields.state,
    input: fields.input,
    priority: fields.priority,
    lane: fields.lane,
    instanceKey: fields.instanceKey,
    labels: fields.labels,
    timeoutMs: fields.timeoutMs,
    retry: fields.retry,
    runs: 1,
    runReason: fields.runReason,
    runCreatedAt: fields.createdAt,
    attempts: 0,
    attemptSeq: 0,
    token: 0,
    queuedOrder: 0,
    createdAt: fields.createdAt,
    updatedAt: fields.createdAt,
  };
}

/** Every field of an attempt record, in its one order (the order the codec stores them in). Never changed. */
const BLANK_ATTEMPT_RECORD: AttemptRecord = {
  taskId: '',
  run: 0,
  attempt: 0,
  attemptId: '',
  token: 0,
  owner: '',
  startedAt: 0,
  leaseExpiresAt: 0,
  endedAt: undefined,
  exit: undefined,
  error: undefined,
};

/** The attempt record's fields in their stored order: appended to only (see codec.ts). */
export const ATTEMPT_RECORD_FIELDS = Object.keys(BLANK_ATTEMPT_RECORD) as ReadonlyArray<keyof AttemptRecord>;

/** A copy of the blank attempt record, with {@link createAttemptRecord}'s shape: what the codec decodes into. */
export function blankAttemptRecord(): AttemptRecord {
  return { ...BLANK_ATTEMPT_RECORD };
}

/**
 * A started attempt's record, with the fields it gets when it ends present (undefined) from the
 * start, so the ended version (`{ ...attempt, endedAt, exit }`) keeps its shape. A spread of
 * {@link BLANK_ATTEMPT_RECORD} rather than a literal, as {@link createTaskRecord} is: the record
 * lives as long as its attempt runs, which under load outlasts a scavenge, and V8 pretenured the
 * literal it replaced (its samples were the larger part of the start step's).
 */
export function createAttemptRecord(fields: Pick<AttemptRecord, 'taskId' | 'run' | 'attempt' | 'attemptId' | 'token' | 'owner' | 'startedAt' | 'leaseExpiresAt'>): AttemptRecord {
  return {
    ...BLANK_ATTEMPT_RECORD,
    taskId: fields.taskId,
    run: fields.run,
    attempt: fields.attempt,
    attemptId: fields.attemptId,
    token: fields.token,
    owner: fields.owner,
    startedAt: fields.startedAt,
    leaseExpiresAt: fields.leaseExpiresAt,
  };
}

/**
 * The value of a settled task's `listed` entry: its settle instant (epoch ms) while it is under
 * its agent's (or the runtime's) retention rule for its state, which retention reads per agent and
 * state; `false` under a rule of its own, which the `expiry` index holds instead.
 */
export type ListedValue = number | false;

/**
 * The indexes of settled tasks: `listed` [agent, state, id] (list() by agent and state in id order,
 * and retention by its agent's rule), `labelled` [label, value, id] (list() by label) and `expiry`
 * [expiresAt, id] (a task under a retention rule of its own; Infinity when kept for good).
 */
export type SettledIndex = 'expiry' | 'listed' | 'labelled';

/**
 * Every index entry a settled task has, as [index, key, value]: its `expiry` entry when it has a
 * retention rule of its own, its `listed` entry (valued {@link ListedValue}) and a `labelled` entry
 * per label (valued true). Every stored settled task has exactly one `listed` entry, which is what
 * the settled counts are taken from at open. They are written as the settled record reaches its
 * database and go with a retry or a prune, all from this one list. Empty for a task not settled.
 */
export function settledIndexEntries(task: TaskRecord): Array<[SettledIndex, Key, ListedValue | true]> {
  const out: Array<[SettledIndex, Key, ListedValue | true]> = [];
  forEachSettledIndexEntry(task, (index, key, value) => out.push([index, key, value]));
  return out;
}

/**
 * {@link settledIndexEntries} one at a time, without building the list (the settle's hot path).
 * One entry for a plain task: retention by age or count reads the settle instant off the `listed`
 * entry, so a settle writes one index entry where it wrote two (a separate index by settle instant:
 * each B-tree put cost about 5% of the throughput at 2 threads × 16, npm run bench).
 */
export function forEachSettledIndexEntry(task: TaskRecord, visit: (index: SettledIndex, key: Key, value: ListedValue | true) => void): void {
  if (!isTerminal(task.state) || task.settledAt === undefined) return;
  const own = task.retention?.[task.state as keyof NonNullable<TaskRecord['retention']>];
  if (own !== undefined) visit('expiry', [task.settledAt + own, task.id], true);
  visit('listed', [task.agent, task.state, task.id], own === undefined ? task.settledAt : false);
  for (const label in task.labels) {
    const value = task.labels[label]!;
    if (isIndexedLabel(label, value)) visit('labelled', [label, value, task.id], true);
  }
}

/** Most UTF-8 bytes of a label and its value together that the `labelled` index holds (a key of LMDB's is at most 1,978 bytes). */
export const MAX_INDEXED_LABEL_BYTES = 1024;

/**
 * Whether a label is in the `labelled` index: one short enough for a key, without control
 * characters (which key encodings use as separators). A longer one is still matched by `list()`,
 * on the tasks another of its labels finds.
 */
export function isIndexedLabel(label: string, value: string): boolean {
  return Buffer.byteLength(label) + Buffer.byteLength(value) <= MAX_INDEXED_LABEL_BYTES && !CONTROL.test(label) && !CONTROL.test(value);
}
const CONTROL = /[\u0000-\u001f]/;
