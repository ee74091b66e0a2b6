/**
 * The LMDB store itself: group commit, the overlay and the log, replay on open, reads that see
 * every decided change, quarantine, close. `openStore` (store.ts) opens the environment and makes one.
 */
import { randomUUID } from 'node:crypto';
import { asBinary, type Database, type RootDatabase } from 'lmdb';
import { isTerminal } from '../../../machines/index.js';
import { TroupeError } from '../../errors.js';
import type { DataDirLock } from '../lock.js';
import type { LooseMode } from '../private-files.js';
import type { Key, QuarantineRecord, SafeReads, Store, StepWriter } from '../port.js';
import type { EventRecord, TaskRecord } from '../records.js';
import { Overlay, REMOVED, type DirtyEntry } from './overlay.js';
import { safeDatabase, VALIDATORS } from './safe-read.js';
import { eventReads, nextSeqOf } from './event-log.js';
import { databaseEncoder, eventBatchEncoder } from './codec.js';
import { CODECS, DATABASES, DB, encoded, FINAL, logEncoder, MATERIALIZE, PATCH, PATCHED, REMOVAL, STRUCTURES, UNLOGGED, type DbName, type LogEntry } from './layout.js';
import { MIGRATIONS, SCHEMA_VERSION } from './migrations.js';
import { replayLog } from './replay.js';
import { activeOf, mergedReads, overlayOf, pendingOf, type Decided } from './reads.js';
import { BatchWriter, newBatch, type Batch } from './batch-writer.js';
import { ChurnSet } from '../../collections.js';

/** Transactions that may be in flight at once. */
const MAX_IN_FLIGHT = 3;

/** Options of {@link openStore}. */
export interface StoreOptions {
  dataDir: string;
  /** Called, in commit order, with the events of each committed batch. */
  onCommitted?: (events: EventRecord[]) => void;
  /** Told about every record moved to quarantine. */
  onQuarantine?: (record: QuarantineRecord) => void;

  /**
   * Told, once per open, about each existing entry of the data dir (the dir itself included) that
   * group or others have permissions on. Troupe creates its own dirs `0700` and files `0600`, but
   * leaves the modes of what it finds alone.
   */
  onLooseMode?: (found: LooseMode) => void;
  /** Clock for quarantine events. */
  now?: () => number;
}

/** The store (see store.ts); made by {@link openStore}. */
export class LmdbStore implements Store {
  readonly dataDir: string;
  readonly bootId = randomUUID();
  runtimeId = '';
  previousShutdownClean = true;
  readonly read: SafeReads;
  #seq = 1;
  readonly #root: RootDatabase;
  readonly #dbs: Array<Database<unknown, Key>>;
  readonly #events: Database<EventRecord[], number>;
  readonly #log: Database<LogEntry, number>;
  readonly #meta: Database<unknown, string>;
  readonly #lock: DataDirLock;
  readonly #options: StoreOptions;
  readonly #overlay = new Overlay(DATABASES.length);
  /** Batches issued whose commit has not landed, oldest first: reads see their write-once records. */
  readonly #unlanded: Batch[] = [];
  /** Ids in the active index database, kept from the task records materialized (see #materialize). */
  readonly #activeInDb = new ChurnSet<string>();
  /** Records quarantined whose removal may not have landed yet: reads skip them. */
  readonly #quarantined = new Set<string>();
  #closed = false;
  /** Set by the first failed commit: the store writes nothing more (see Store.failure). */
  failure: TroupeError | undefined;
  readonly #failureListeners: Array<(failure: TroupeError) => void> = [];
  /** The batch being gathered. */
  #pending: Batch | undefined;
  /** Transactions issued and not yet landed, and the promise of the last one's resolution. */
  #inFlight = 0;
  #tail: Promise<void> = Promise.resolve();
  #flushQueued = false;
  #lastBatch = 0;
  #checkpoint = 0;
  readonly #writer: BatchWriter;
  /** The encoders of the positionally stored databases, by index (the ones those databases use). */
  readonly #encoders: Array<ReturnType<typeof databaseEncoder<unknown>> | undefined>;

  constructor(options: StoreOptions, root: RootDatabase, lock: DataDirLock) {
    this.dataDir = options.dataDir;
    this.#root = root;
    this.#lock = lock;
    this.#options = options;
    // Shared msgpack structures store each record shape once per database instead of in every
    // value: measured 4.2 µs against 7.8 µs per task put, and half the decode time.
    const named = <V, K extends Key>(name: string) => root.openDB<V, K>({ name, sharedStructuresKey: STRUCTURES });
    this.#encoders = DATABASES.map((_name, i) => {
      const codec = CODECS.get(i);
      return codec && databaseEncoder(codec);
    });
    this.#dbs = DATABASES.map((name, i) => {
      const encoder = this.#encoders[i];
      return encoder ? root.openDB<unknown, Key>(encoded(name, encoder)) : named<unknown, Key>(name);
    });
    this.#events = root.openDB(encoded('eventLog', eventBatchEncoder));
    this.#log = root.openDB(encoded('log', logEncoder));
    this.#meta = named('meta');
    this.#writer = new BatchWriter(() => this.#seq++);
    const quarantine = this.#quarantine.bind(this);
    const isQuarantined = (name: string, key: unknown) => this.#quarantined.size > 0 && this.#quarantined.has(quarantineKey(name, key));
    const overlay = this.#overlay;
    const safe = <V, K extends Key>(name: DbName, validate: ((value: unknown) => boolean) | undefined, decided: Decided = overlayOf(overlay, DB[name])) =>
      mergedReads<V, K>(decided, safeDatabase(name, this.#dbs[DB[name]] as Database<V, K>, validate ?? (() => true), quarantine, isQuarantined));
    this.read = {
      tasks: safe('tasks', VALIDATORS.tasks),
      active: safe('active', undefined, activeOf(overlay, DB.tasks)),
      attempts: safe('attempts', VALIDATORS.attempts, pendingOf(this.#gathered, DB.attempts)),
      runs: safe('runs', VALIDATORS.runs, pendingOf(this.#gathered, DB.runs)),
      events: eventReads(this.#events, quarantine, isQuarantined),
      timers: safe('timers', VALIDATORS.timers),
      instances: safe('instances', VALIDATORS.instances),
      logs: safe('logs', VALIDATORS.logs),
      idempotency: safe('idempotency', VALIDATORS.idempotency),
      inbox: safe('inbox', undefined),
      schedules: safe('schedules', VALIDATORS.schedules),
      control: safe('control', undefined),
    };
  }

  /** The batches whose write-once records are not in their databases yet: in flight, then the one gathering. */
  readonly #gathered = (): Batch[] => (this.#pending ? [...this.#unlanded, this.#pending] : this.#unlanded);

  get nextSeq(): number {
    return this.#seq;
  }

  async init(): Promise<void> {
    const meta = this.#meta;
    const stored = meta.get('schemaVersion') as number | undefined;
    if (stored === undefined && this.#holdsRecords()) {
      // Records without the meta that says what they are: opening would stamp them as a new store.
      throw new TroupeError('STORE_CORRUPT', `data dir ${this.dataDir} holds records but no schema version in its meta; Troupe refuses to open it and leaves it as it is`);
    }
    if (stored !== undefined && (!Number.isInteger(stored) || stored > SCHEMA_VERSION)) {
      throw new TroupeError(
        'SCHEMA_MISMATCH',
        `data dir ${this.dataDir} has schema version ${String(stored)}, this build reads version ${SCHEMA_VERSION}`,
      );
    }
    if (stored !== undefined && stored < SCHEMA_VERSION) {
      for (let version = stored; version < SCHEMA_VERSION; version++) {
        const migrate = MIGRATIONS[version];
        if (!migrate) throw new TroupeError('SCHEMA_MISMATCH', `no migration from schema version ${version} to ${version + 1}`);
        this.#root.transactionSync(() => migrate(this.#root));
      }
    }
    this.runtimeId = (meta.get('runtimeId') as string | undefined) ?? randomUUID();
    this.previousShutdownClean = stored === undefined || meta.get('cleanShutdown') === true;
    this.#lastBatch = this.#checkpoint = replayLog(this.#root, this.#dbs, this.#log, meta);
    for (const id of this.#dbs[DB.active]!.getKeys()) this.#activeInDb.add(id as string);
    this.#seq = nextSeqOf(this.#events);
    await committed(this.#root.transaction(() => {
      meta.put('schemaVersion', SCHEMA_VERSION);
      meta.put('runtimeId', this.runtimeId);
      meta.put('cleanShutdown', false);
      meta.put('openedAt', Date.now());
    }));
  }

  /** Whether any task, event or log record is stored. */
  #holdsRecords(): boolean {
    for (const db of [this.#dbs[DB.tasks]!, this.#events, this.#log] as Array<Database<unknown, Key>>) {
      for (const _key of db.getKeys({ limit: 1 })) return true;
    }
    return false;
  }

  allocateSeq(): number {
    return this.#seq++;
  }

  rewindSeq(seq: number): void {
    this.#seq = seq;
  }

  stage(fn: (writer: StepWriter) => void): Promise<void> {
    if (this.#closed) return Promise.reject(new TroupeError('CLOSED', 'the store is closed'));
    if (this.failure) return Promise.reject(this.failure);
    const batch = (this.#pending ??= newBatch(this.#lastBatch + 1));
    this.#write(batch, fn);
    return batch.done;
  }

  commit(fn: (writer: StepWriter) => void): Promise<EventRecord[]> {
    if (this.#closed) return Promise.reject(new TroupeError('CLOSED', 'the store is closed'));
    if (this.failure) return Promise.reject(this.failure);
    const batch = (this.#pending ??= newBatch(this.#lastBatch + 1));
    const eventsMark = batch.events.length;
    this.#write(batch, fn);
    if (batch.events.length === eventsMark) return batch.done.then(noEvents);
    const events = batch.events.slice(eventsMark);
    return batch.done.then(() => events);
  }

  /** Runs `fn` into the batch: all of its writes, or (when it throws) none and no seq burned. */
  #write(batch: Batch, fn: (writer: StepWriter) => void): void {
    const opsMark = batch.ops.length;
    const directMark = batch.direct.length;
    const eventsMark = batch.events.length;
    const firstSeq = this.#seq;
    this.#writer.batch = batch;
    try {
      fn(this.#writer);
    } catch (error) {
      // Nothing of a step that throws half-way is kept, and no seq is burned: the log has no gaps.
      batch.ops.length = opsMark;
      batch.direct.length = directMark;
      batch.events.length = eventsMark;
      this.#seq = firstSeq;
      throw error;
    }
    const { ops } = batch;
    const overlay = this.#overlay;
    // One clock read per batch, not per commit: the overlay only needs it to tell cold entries (500 ms).
    const at = batch.at;
    // The log holds each key's net change in the batch: an earlier op of the same key in this
    // batch is superseded and not logged, and what is logged is relative to the key's version
    // before the batch. So a task submitted, started and settled in one batch logs nothing.
    for (let i = opsMark; i < ops.length; i += 3) {
      const index = ops[i] as number;
      const key = ops[i + 1] as Key;
      const final = index >= FINAL;
      const removal = !final && index >= REMOVAL;
      const db = final ? index - FINAL : removal ? index - REMOVAL : index;
      const value = removal ? REMOVED : ops[i + 2];
      overlay.set(db, key, value, batch.no, at, final, i);
      if (overlay.priorOp >= 0) ops[overlay.priorOp] = UNLOGGED;
      if (final) {
        // Written in this commit: logged only as a marker over earlier changes still in the log.
        if (overlay.logged) ops[i + 2] = null;
        else ops[i] = UNLOGGED;
        continue;
      }
      if (removal) continue;
      const before = overlay.before;
      if (PATCHED.has(db)) batch.touched.push(overlay.entry!);
      // A new version of a record the log or its database holds: log only what changed (the same
      // object changed in place is logged whole).
      if (before !== undefined && before !== REMOVED && before !== value && PATCHED.has(db)) {
        ops[i] = db + PATCH;
        ops[i + 2] = CODECS.get(db)!.diff(before, value);
      }
    }
    this.#queueFlush();
  }

  /**
   * Flushes at the end of the turn. A few transactions may be in flight at once (lmdb-js commits
   * them one after the other); past that, the batch grows until one lands.
   */
  #queueFlush(): void {
    if (this.#flushQueued || this.#inFlight >= MAX_IN_FLIGHT) return;
    this.#flushQueued = true;
    setImmediate(() => {
      this.#flushQueued = false;
      this.#flush();
    });
  }

  #flush(): void {
    const batch = this.#pending;
    if (!batch || this.#inFlight >= MAX_IN_FLIGHT) return;
    this.#pending = undefined;
    if (this.failure) {
      // Gathered before the failure was known: it may build on what did not become durable.
      batch.reject(this.failure);
      return;
    }
    this.#unlanded.push(batch);
    // What the batch's patches were taken against is not needed any more: let it go now rather
    // than when the record next changes (an active task would keep two versions alive).
    for (const entry of batch.touched) entry.before = undefined;
    this.#lastBatch = batch.no;
    const materialized = this.#overlay.take({
      batch: batch.no,
      coolBatches: MATERIALIZE.coolBatches,
      coolMs: MATERIALIZE.coolMs,
      now: Date.now(),
      maxAgeBatches: MATERIALIZE.maxAgeBatches,
      budget: Math.max(MATERIALIZE.minBudget, batch.ops.length),
      maxEntries: MATERIALIZE.maxEntries,
    });
    const checkpoint = this.#overlay.checkpoint(batch.no);
    const previous = this.#checkpoint;
    let written: Promise<unknown>;
    try {
      // (committed() reads the cause lmdb-js leaves on a failed commit.)
      // Everything our own encoders write is encoded before the transaction: a value that cannot
      // be encoded fails this batch here, and lmdb-js never sees any of it.
      const logValue = batch.ops.length > 0 ? asBinary(logEncoder.encode({ ops: batch.ops })) : undefined;
      const eventsValue = batch.events.length > 0 ? asBinary(eventBatchEncoder.encode(batch.events)) : undefined;
      const { direct } = batch;
      const directValues: unknown[] = [];
      for (let i = 0; i < direct.length; i += 3) directValues.push((direct[i] as number) >= REMOVAL ? undefined : this.#prepared(direct[i] as number, direct[i + 2]));
      const materializedValues = materialized.map((entry) => (entry.value === REMOVED ? REMOVED : this.#prepared(entry.db, entry.value)));
      written = committed(this.#root.batch(() => {
        if (logValue) this.#log.put(batch.no, logValue as never);
        if (eventsValue) this.#events.put(batch.events[0]!.seq, eventsValue as never);
        for (let i = 0; i < direct.length; i += 3) {
          const index = direct[i] as number;
          if (index >= REMOVAL) {
            this.#dbs[index - REMOVAL]!.remove(direct[i + 1] as Key);
            if (index - REMOVAL === DB.active) this.#activeInDb.delete(direct[i + 1] as string);
          } else this.#dbs[index]!.put(direct[i + 1] as Key, directValues[i / 3]);
        }
        for (let i = 0; i < materialized.length; i++) this.#materialize(materialized[i]!, materializedValues[i]);
        if (checkpoint > previous) {
          for (let n = previous + 1; n <= checkpoint; n++) this.#log.remove(n);
          this.#meta.put('checkpoint', checkpoint);
        }
      }));
    } catch (error) {
      written = Promise.reject(error);
    }
    this.#checkpoint = Math.max(previous, checkpoint);
    this.#inFlight++;
    // Batches resolve (and publish their events) in batch order, whatever order LMDB lands them in.
    const landed = Promise.allSettled([this.#tail, written]).then(async ([, outcome]) => {
      this.#inFlight--;
      this.#unlanded.shift();
      if (outcome.status === 'fulfilled') {
        this.#overlay.written(materialized, batch.no);
        // Publishing is the caller's; whatever it throws must not keep the batch from resolving.
        try {
          if (batch.events.length > 0) this.#options.onCommitted?.(batch.events);
        } finally {
          batch.resolve();
        }
      } else {
        this.#overlay.unwritten(materialized, batch.no);
        this.#checkpoint = Math.min(this.#checkpoint, previous);
        const error = outcome.reason as Error;
        batch.reject(new TroupeError('STORE_FAILED', `commit failed: ${error?.message ?? String(error)}`, { cause: error }));
        this.#fail(error);
      }
      if (this.#pending) this.#queueFlush();
    });
    this.#tail = landed;
  }

  /** A value for database `db` as its put takes it: encoded already where our own encoder writes it. */
  #prepared(db: number, value: unknown): unknown {
    const encoder = this.#encoders[db];
    return encoder ? asBinary(encoder.encode(value)) : value;
  }

  /** Writes an overlay entry (its value as {@link LmdbStore.#prepared} made it) to its database. */
  /**
   * Stops the store after a failed commit. The steps of that batch (and of any decided after it)
   * changed memory, and later ones may build on them, so writing anything more could make durable
   * what was reported as failed, or patch a record whose base never landed. Fail-stop instead:
   * every later step is refused, close writes nothing, and the next open replays what is durable.
   */
  #fail(cause: Error): void {
    if (this.failure) return;
    this.failure = new TroupeError(
      'STORE_FAILED',
      `the store stopped after a failed commit (${cause?.message ?? String(cause)}); nothing more is written: close the runtime, fix the cause (free disk space), and open it again`,
      { cause },
    );
    for (const listener of this.#failureListeners) {
      try {
        listener(this.failure);
      } catch {
        // The store stops whatever a listener does.
      }
    }
  }

  onFailure(listener: (failure: TroupeError) => void): void {
    this.#failureListeners.push(listener);
  }

  #materialize(entry: DirtyEntry, value: unknown): void {
    const db = this.#dbs[entry.db]!;
    // A record created and removed while in the overlay never reached its database: nothing to do.
    // (The read sees every earlier materialization: an entry cools for more batches than may be
    // in flight, so any earlier write of this key has landed.)
    if (entry.value === REMOVED) {
      if (db.doesExist(entry.key)) db.remove(entry.key);
    } else db.put(entry.key, value);
    if (entry.db === DB.tasks) this.#indexActive(entry.key as string, entry.value === REMOVED ? undefined : (entry.value as TaskRecord));
  }

  /**
   * Keeps the active index in step with a task record written to its database: the id is there
   * exactly while the record is not terminal. Tasks that settle before they are materialized
   * never enter it (a replay derives it for the log's tasks in the same way).
   */
  #indexActive(id: string, task: TaskRecord | undefined): void {
    if (task === undefined || isTerminal(task.state)) {
      if (this.#activeInDb.delete(id)) this.#dbs[DB.active]!.remove(id);
    } else if (!this.#activeInDb.has(id)) {
      this.#activeInDb.add(id);
      this.#dbs[DB.active]!.put(id, true);
    }
  }

  /**
   * Moves a bad record aside. The write is deferred to a microtask so it never nests inside the
   * step that happened to read the record; until it lands, reads skip the record.
   */
  #quarantine(name: string, db: Database<unknown, any>, key: unknown, problem: string): void {
    const id = quarantineKey(name, key);
    if (this.#quarantined.has(id)) return;
    this.#quarantined.add(id);
    let bytes: Uint8Array | undefined;
    try {
      bytes = db.getBinary(key as Key) ?? undefined;
    } catch {
      bytes = undefined;
    }
    const at = (this.#options.now ?? Date.now)();
    const record: QuarantineRecord = { db: name, key: String(key), bytes, problem, at };
    this.#options.onQuarantine?.(record);
    const target = name === 'events' ? undefined : DB[name as DbName];
    queueMicrotask(() => {
      if (this.#closed) return;
      this.commit((w) => {
        const writer = w as BatchWriter;
        writer.raw(DB.quarantine, [name, record.key], record);
        if (target !== undefined) writer.raw(target + REMOVAL, key as Key, null);
        else void this.#events.remove(key as number);
        w.event('store.quarantined', { at, data: { db: name, key: record.key, problem } });
      }).catch(() => undefined);
    });
  }

  async settled(): Promise<void> {
    while (this.#pending || this.#inFlight > 0 || this.#flushQueued) {
      if (this.#inFlight > 0) await this.#tail;
      else if (this.#pending) await this.#pending.done.catch(() => undefined);
      else await new Promise((resolve) => setImmediate(resolve));
    }
  }

  async close(clean: boolean): Promise<void> {
    if (this.#closed) return;
    await this.settled();
    this.#closed = true;
    if (this.failure) {
      // Nothing more is written: the overlay may hold what never became durable. Not a clean
      // shutdown either, so the next open replays the log like after a crash.
      try {
        await this.#root.close();
      } finally {
        await this.#lock.release();
      }
      return;
    }
    try {
      // Materialize everything, so the next open has no log to replay.
      const all = this.#overlay.takeAll(this.#lastBatch + 1);
      const values = all.map((entry) => (entry.value === REMOVED ? REMOVED : this.#prepared(entry.db, entry.value)));
      await committed(this.#root.batch(() => {
        for (let i = 0; i < all.length; i++) this.#materialize(all[i]!, values[i]);
        for (const key of this.#log.getKeys()) this.#log.remove(key);
        this.#meta.put('checkpoint', this.#lastBatch);
        if (clean) this.#meta.put('cleanShutdown', true);
      }));
      await this.#root.flushed;
      await this.#root.close();
    } finally {
      await this.#lock.release();
    }
  }
}

const noEvents = (): EventRecord[] => [];

/**
 * A commit of lmdb-js, failing with its cause. On a failed commit (a full disk's ENOSPC, an EIO)
 * lmdb-js rejects with a generic error and rejects a second promise, `error.commitError`, with the
 * cause, leaving it to whoever reads it: unread, that rejection would take the process down.
 */
function committed<T>(commit: Promise<T>): Promise<T> {
  return commit.catch(async (error: Error & { commitError?: Promise<unknown> }) => {
    const pending = error?.commitError;
    if (!pending) throw error;
    // It is rejected in the same callback as the commit, so its reason is there at once; should it
    // still be pending, the commit's own error goes out after a turn rather than never.
    const cause = await Promise.race([
      pending.then(
        () => error,
        (reason: unknown) => (reason instanceof Error ? reason : error),
      ),
      new Promise<Error>((resolve) => setImmediate(() => resolve(error))),
    ]);
    throw cause;
  });
}

function quarantineKey(name: string, key: unknown): string {
  return `${name}\u0000${Array.isArray(key) ? key.join('\u0000') : String(key)}`;
}
