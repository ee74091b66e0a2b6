/**
 * The store port: what the runtime sees of durable storage. Writes go in through `commit`, one
 * transaction per call or per turn's batch; reads by key and range scans come out through `read`,
 * and see every change as soon as it is decided, committed or not yet. Nothing here names LMDB:
 * `src/store/lmdb/` is the default backend, and another (PostgreSQL) implements the same port.
 */
import type { TroupeError } from '../errors.js';
import type { PrunedDatabase } from '../steps/types.js';
import type { TaskState } from '../../machines/index.js';
import type { EventData } from '../api/events.js';
import type {
  AgentFlowState,
  AttemptRecord,
  EventRecord,
  EventType,
  InboxRecord,
  InstanceEnvelope,
  ListedValue,
  LogRecord,
  RunRecord,
  RuntimeControl,
  ScheduleRecord,
  TaskRecord,
  TimerRecord,
} from './records.js';

/** A key: a string, a number, or an array of them (compared element by element). */
export type Key = string | number | Array<string | number>;

/** Bounds of a range scan: `start` inclusive, `end` exclusive, in key order (or reversed). */
export interface RangeOptions {
  start?: Key;
  end?: Key;
  reverse?: boolean;
  limit?: number;
}

/** Reads of one database. A record that cannot be read is quarantined and skipped, never thrown. */
export interface SafeDatabase<V, K> {
  get(key: K): V | undefined;
  /** Entries in key order. */
  range(options?: RangeOptions): Iterable<{ key: K; value: V }>;
  keys(options?: RangeOptions): Iterable<K>;
  has(key: K): boolean;
}

/** Reads of every database the runtime uses. */
export interface SafeReads {
  tasks: SafeDatabase<TaskRecord, string>;
  /** Ids of tasks that are not terminal: what a rebuild scans instead of every task. */
  active: SafeDatabase<true, string>;
  attempts: SafeDatabase<AttemptRecord, [string, number, number]>;
  runs: SafeDatabase<RunRecord, [string, number]>;
  events: SafeDatabase<EventRecord, number>;
  timers: SafeDatabase<TimerRecord, [number, string]>;
  instances: SafeDatabase<InstanceEnvelope, string>;
  logs: SafeDatabase<LogRecord, [string, number, number, number]>;
  idempotency: SafeDatabase<string, string>;
  /** Inputs sent to tasks, key [taskId, seq]. */
  inbox: SafeDatabase<InboxRecord, [string, number]>;
  schedules: SafeDatabase<ScheduleRecord, string>;
  /** Which tasks a parent has, key [parentId, childId] (written with the child's submit). */
  children: SafeDatabase<true, [string, string]>;
  /**
   * Settled tasks under a retention rule of their own, key [expiresAt, id]. Written as settled
   * records reach their database (so a settle still in the log shows up a little later), and left
   * behind by a retry: a reader checks each entry against its task.
   */
  expiry: SafeDatabase<true, [number, string]>;
  /**
   * Settled tasks for `list()`, in id order: by agent and state, key [agent, state, id]; and by
   * label, key [label, value, id] (labels short enough for a key). They include settled tasks not
   * in their database yet; a retried task's entry may linger until its retry lands, so a reader
   * checks each entry against its task. A `listed` entry's value is the task's settle instant
   * while it is under its agent's (or the runtime's) retention rule, which retention reads, and
   * false under a rule of its own (see ListedValue).
   */
  listed: SafeDatabase<ListedValue, [string, string, string]>;
  labelled: SafeDatabase<true, [string, string, string]>;
  /** The `listed` entries in their database only: the settled tasks whose settle has landed (and which the settled counts hold). */
  listedStored: SafeDatabase<ListedValue, [string, string, string]>;
  /** Durable controls: the frozen flag (`runtime`), agent flow state (`agent:<name>`), the supervisor cycle. */
  control: SafeDatabase<RuntimeControl | AgentFlowState | { cycle?: number } | unknown, string>;
}

/** Collects the writes of one step; everything it writes commits in one transaction. */
export interface StepWriter {
  /**
   * `final`: the record is done changing for now (a settled task): write it to its database in
   * this commit rather than logging it for later, which also frees it from memory soonest.
   */
  putTask(task: TaskRecord, final?: boolean): void;
  /**
   * Drops an id from the active index. The store keeps that index itself, from the task records
   * (an id is in it while its task is not terminal); this only repairs an entry left behind.
   */
  removeActive(taskId: string): void;
  /** Attempt and run records are written once, when they end: in this commit, never logged. */
  putAttempt(attempt: AttemptRecord): void;
  putRun(run: RunRecord): void;
  putInstance(key: string, envelope: InstanceEnvelope): void;
  putTimer(timer: TimerRecord): void;
  removeTimer(timer: TimerRecord): void;
  putIdempotency(key: string, taskId: string): void;
  putLog(key: [string, number, number, number], line: LogRecord): void;
  putInbox(taskId: string, item: InboxRecord): void;
  putSchedule(schedule: ScheduleRecord): void;
  removeSchedule(id: string): void;
  /** Removes a record of a pruned task: logged like any change, or (runs, attempts) in this commit. */
  remove(db: PrunedDatabase, key: Key): void;
  /**
   * Removes a settled task's entries in the indexes of settled tasks (settledIndexEntries), in this
   * commit, with the settled counts; nothing when the settled version was decided in this same
   * batch and so never written (a retry right after the settle).
   */
  unindexSettled(task: TaskRecord): void;
  /** Notes that `childId` is a child of `parentId` (the children index). */
  putChild(parentId: string, childId: string): void;
  /** Writes a durable control value (see {@link SafeReads.control}). */
  putControl(key: string, value: unknown): void;
  /** Appends an event, stamping it with the next seq; it is published to listeners after the commit. */
  event<K extends EventType>(type: K, fields: { at: number; taskId?: string; attemptId?: string; data: EventData<K> }): EventRecord;
  /** Appends an event already stamped with a seq from {@link Store.allocateSeq}. */
  putEvent(event: EventRecord): void;
}

/** A quarantined record: where it was, its raw bytes, and what was wrong with it. */
export interface QuarantineRecord {
  db: string;
  key: string;
  bytes: Uint8Array | undefined;
  problem: string;
  at: number;
}

/** What a backup wrote (see {@link Store.backup}). */
export interface BackupInfo {
  /** The directory holding the copy (absolute). */
  path: string;
  /** Size of the copy's data file. */
  bytes: number;
  /** Whether free pages were left out (slower, smaller). */
  compact: boolean;
}

/** An open store. */
export interface Store {
  readonly dataDir: string;
  /** Reads that see every decided change and survive bad data. */
  readonly read: SafeReads;
  /** Stable id of this data dir's runtime. */
  readonly runtimeId: string;
  /** Unique per open: tells snapshots of this boot from those of a previous one. */
  readonly bootId: string;
  /** Whether the previous run of this data dir closed cleanly. */
  readonly previousShutdownClean: boolean;
  /** The next event seq that will be allocated. */
  readonly nextSeq: number;
  /**
   * Runs `fn` and commits its writes. Every commit asked for in one turn, and every one asked for
   * while an earlier one is being flushed, share one transaction (group commit); each promise
   * resolves once that transaction is durable, in the order the commits were asked for. A `fn`
   * that throws writes nothing and burns no event seq.
   */
  commit(fn: (writer: StepWriter) => void): Promise<EventRecord[]>;
  /**
   * Like {@link Store.commit}, but resolves with nothing: the promise is the batch's own, shared by
   * every write of the batch (the pipeline attaches the batch's effects to it once).
   */
  stage(fn: (writer: StepWriter) => void): Promise<void>;
  /** Takes the next event seq (a step stamps its events, and an attempt's fencing token, with it). */
  allocateSeq(): number;
  /** Gives back every seq taken since `seq` was next (a step that threw after taking some). */
  rewindSeq(seq: number): void;
  /** Resolves once every commit issued so far (and any issued while waiting) has finished. */
  settled(): Promise<void>;
  /**
   * Set once a commit failed (a full disk, an I/O error): the store is stopped from then on. Memory
   * may hold changes no commit made durable, so nothing more is written (not even at close) and
   * every later step is refused with this error; opening the data dir again starts from what is durable.
   */
  readonly failure: TroupeError | undefined;
  /** Calls `listener` once, when a commit fails and the store stops. */
  onFailure(listener: (failure: TroupeError) => void): void;
  /**
   * The seq the next event to become durable takes: one past the last event of the last batch
   * that landed. After a failure it is where the event log goes on when the data dir is opened again.
   */
  readonly durableSeq: number;
  /**
   * Closes a failed store and opens its data dir again without letting go of it (the runtime's
   * recovery): resolves with the new store, built from what is durable. Rejects (STORE_FAILED)
   * while the cause lasts; this store is then closed but still holds the dir, and may be asked again.
   */
  reopen(): Promise<Store>;
  /**
   * Copies the store, as of its last commit, into `dest` (an absolute directory that is new or
   * empty, outside the data dir) while it keeps serving; `compact` leaves free pages out.
   * INVALID_INPUT for a bad destination (nothing written), STORE_FAILED if the copy fails.
   */
  backup(dest: string, compact: boolean): Promise<BackupInfo>;
  /**
   * Removes the oldest event log records whose events all happened before `before` (epoch ms), at
   * most `max` records, in the next commit; resolves with how many events went, once durable.
   */
  truncateEvents(before: number, max: number): Promise<number>;
  /** The stored settled tasks per agent and state: counts kept in the commits that settle, retry and prune them (as of the last one landed), not a scan. */
  countSettled(): Array<[agent: string, state: TaskState, count: number]>;
  /** The seq of the last event truncation removed (0: none): a reader that has seen it misses nothing kept. */
  readonly eventsRemovedThrough: number;
  /** Marks the shutdown clean or not, flushes and closes. */
  close(clean: boolean): Promise<void>;
}
