/**
 * The LMDB store itself: group commit, the overlay and the log, replay on open, reads that see
 * every decided change, quarantine, close. `openStore` (store.ts) opens the environment and makes one.
 */
import { randomUUID } from 'node:crypto';
import type { Database, RootDatabase } from 'lmdb';
import { TroupeError } from '../../errors.js';
import type { DataDirLock } from '../lock.js';
import type { BackupInfo, Key, SafeReads, Store, StepWriter } from '../port.js';
import type { StoreOptions } from './store.js';
import type { EventRecord } from '../records.js';
import { Overlay } from './overlay.js';
import { eventChunks, expiredEventRecords, nextSeqOf, type EventChunks } from './event-log.js';
import { finalWrites, prepareWrites, type BatchTargets } from './batch-transaction.js';
import { DATABASES, DB, MATERIALIZE, type LogEntry } from './layout.js';
import { netChanges } from './net-changes.js';
import { holdsRecords, SCHEMA_VERSION, upgradeSchema } from './migrations.js';
import { replayAtOpen } from './replay.js';
import { storeReads } from './reads.js';
import { BatchWriter, newBatch, type Batch } from './batch-writer.js';
import { Quarantine } from './quarantine.js';
import { openDatabases } from './databases.js';
import { RecordWrites, storedCounts } from './record-writes.js';
import type { TaskState } from '../../../machines/index.js';
import { committed } from './committed.js';
import { BatchChain } from './batch-chain.js';
import { backupEnvironment } from './backup.js';
import { FailStop } from './fail-stop.js';
import { closeEnvironment } from './close-environment.js';

/** Transactions that may be in flight at once. */
const MAX_IN_FLIGHT = 3;

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
  /** The order batches land in (batch-chain.ts). */
  readonly #chain: BatchChain;
  readonly #lock: DataDirLock;
  readonly #options: StoreOptions;
  readonly #overlay = new Overlay(DATABASES.length);
  /** Batches issued whose commit has not landed, oldest first: reads see their write-once records. */
  readonly #unlanded: Batch[] = [];
  readonly #quarantine: Quarantine;
  /** The event log's records, read with quarantine (event-log.ts). */
  readonly #eventChunks: EventChunks;
  #closed = false;
  /** Stops the store at the first failed commit (fail-stop.ts). */
  readonly #stop = new FailStop();
  /** The batch being gathered. */
  #pending: Batch | undefined;
  /** Transactions issued and not yet landed, and the promise of the last one's resolution. */
  #inFlight = 0;
  /** The quiet store's commit of cooled records (see #armIdle). */
  #idle: NodeJS.Timeout | undefined;
  #tail: Promise<void> = Promise.resolve();
  #flushQueued = false;
  #lastBatch = 0;
  #checkpoint = 0;
  readonly #writer: BatchWriter;
  readonly #records: RecordWrites;
  /** What a batch's transaction writes to (batch-transaction.ts). */
  readonly #targets: BatchTargets;

  /** Opens the data dir again on the lock this store holds (see {@link LmdbStore.reopen}). */
  readonly #openAgain: (lock: DataDirLock) => Promise<Store>;
  /** The lock went to the store {@link LmdbStore.reopen} opened, or was released by close. */
  #lockGone = false;
  #durableSeq = 1;

  constructor(options: StoreOptions, root: RootDatabase, lock: DataDirLock, openAgain: (lock: DataDirLock) => Promise<Store>) {
    this.dataDir = options.dataDir;
    this.#openAgain = openAgain;
    this.#root = root;
    this.#lock = lock;
    this.#options = options;
    const databases = openDatabases(root);
    this.#dbs = databases.dbs;
    this.#events = databases.events;
    this.#log = databases.log;
    this.#meta = databases.meta;
    this.#chain = new BatchChain(databases.chain);
    this.#records = new RecordWrites(databases.dbs, databases.encoders);
    this.#targets = { records: this.#records, log: this.#log, events: this.#events, meta: this.#meta };
    this.#writer = new BatchWriter(() => this.#seq++, this.#overlay);
    this.#quarantine = new Quarantine({
      now: () => (options.now ?? Date.now)(),
      report: options.onQuarantine,
      commit: (fn) => this.commit(fn),
      events: this.#events as unknown as Database<unknown, number>,
      closed: () => this.#closed,
    });
    this.read = storeReads({ dbs: this.#dbs, events: this.#events, overlay: this.#overlay, gathered: this.#gathered, quarantine: this.#quarantine });
    this.#eventChunks = eventChunks(this.#events, this.#quarantine.add, this.#quarantine.has);
  }

  /** The batches whose write-once records are not in their databases yet: in flight, then the one gathering. */
  readonly #gathered = (): Batch[] => (this.#pending ? [...this.#unlanded, this.#pending] : this.#unlanded);

  get nextSeq(): number {
    return this.#seq;
  }

  get durableSeq(): number {
    return this.#durableSeq;
  }

  eventsRemovedThrough = 0;

  /** `reopened`: opened again after a failed commit (see {@link LmdbStore.reopen}); its replay checks the disk has room. */
  async init(reopened = false): Promise<void> {
    const meta = this.#meta;
    const stored = upgradeSchema(this.#root, meta, () => holdsRecords([this.#dbs[DB.tasks]!, this.#events, this.#log] as Array<Database<unknown, Key>>), this.dataDir);
    this.runtimeId = (meta.get('runtimeId') as string | undefined) ?? randomUUID();
    this.previousShutdownClean = stored === undefined || meta.get('cleanShutdown') === true;
    const replayed = replayAtOpen({ root: this.#root, dbs: this.#dbs, log: this.#log, meta, overlay: this.#overlay, dataDir: this.dataDir }, reopened);
    this.#checkpoint = replayed.checkpoint;
    this.#lastBatch = replayed.last;
    this.#records.loadActive();
    this.#records.loadCounts(meta);
    this.eventsRemovedThrough = (meta.get('eventsRemovedThrough') as number | undefined) ?? 0;
    this.#seq = this.#durableSeq = nextSeqOf(this.#events, this.#eventChunks, this.eventsRemovedThrough);
    const startChain = this.#chain.open();
    await committed(this.#root.transaction(() => {
      startChain();
      this.#records.writeCounts(meta);
      meta.put('schemaVersion', SCHEMA_VERSION);
      meta.put('runtimeId', this.runtimeId);
      meta.put('cleanShutdown', false);
      meta.put('openedAt', Date.now());
    }));
    // What the replay left in the overlay is written once it has cooled, busy or not.
    if (this.#overlay.size > 0) this.#armIdle();
  }

  allocateSeq(): number {
    return this.#seq++;
  }

  rewindSeq(seq: number): void {
    this.#seq = seq;
  }

  stage(fn: (writer: StepWriter) => void): Promise<void> {
    const refused = this.#stop.refusal(this.#closed);
    if (refused) return refused;
    const batch = this.#gathering();
    this.#write(batch, fn);
    return batch.done;
  }

  /** The batch being gathered, begun if there is none. */
  #gathering(): Batch {
    return (this.#pending ??= newBatch(this.#lastBatch + 1));
  }

  countSettled(): Array<[string, TaskState, number]> {
    return storedCounts(this.#meta) ?? [];
  }

  truncateEvents(before: number, max: number): Promise<number> {
    const refused = this.#stop.refusal(this.#closed);
    if (refused) return refused;
    const expired = expiredEventRecords(this.#events, this.#eventChunks, before, max);
    if (expired.keys.length === 0) return Promise.resolve(0);
    const batch = this.#gathering();
    batch.dropEvents.push(...expired.keys);
    batch.eventsThrough = Math.max(batch.eventsThrough, expired.through);
    this.#queueFlush();
    return batch.done.then(() => expired.events);
  }

  commit(fn: (writer: StepWriter) => void): Promise<EventRecord[]> {
    const refused = this.#stop.refusal(this.#closed);
    if (refused) return refused;
    const batch = this.#gathering();
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
      // The batch is flushed all the same (it may have begun with this call, and be empty): a
      // batch left pending would hold back close(), settled() and the quiet store's commits.
      this.#queueFlush();
      throw error;
    }
    netChanges(this.#overlay, batch, opsMark);
    this.#queueFlush();
  }

  /**
   * The store went quiet with records still to materialize: once they have cooled, a commit of
   * nothing but them (as many as there are, not a busy commit's share), again until none is
   * left, so the log behind them goes and a crash replays little.
   */
  #armIdle(): void {
    if (this.#idle || this.#closed || this.failure) return;
    this.#idle = setTimeout(() => {
      this.#idle = undefined;
      if (this.#closed || this.failure || this.#pending || this.#inFlight > 0 || this.#overlay.size === 0) return;
      this.#pending = newBatch(this.#lastBatch + 1, true);
      this.#flush();
    }, MATERIALIZE.coolMs + 100);
    this.#idle.unref();
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
      maxAgeMs: MATERIALIZE.maxAgeMs,
      budget: batch.idle ? MATERIALIZE.idleBudget : Math.max(MATERIALIZE.minBudget, batch.ops.length),
      maxEntries: MATERIALIZE.maxEntries,
    });
    const checkpoint = this.#overlay.checkpoint(batch.no);
    const previous = this.#checkpoint;
    let written: Promise<unknown>;
    try {
      // Each batch lands only on top of the one issued before it (batch-chain.ts).
      written = this.#chain.issue(prepareWrites(batch, materialized, { previous, checkpoint }, this.#targets));
    } catch (error) {
      // Never issued: no batch issued after it may land either.
      this.#chain.broken();
      written = Promise.reject(error);
    }
    this.#checkpoint = Math.max(previous, checkpoint);
    this.#inFlight++;
    // Batches resolve (and publish their events) in batch order, whatever order LMDB lands them in.
    const landed = Promise.allSettled([this.#tail, written]).then(([, outcome]) => {
      this.#inFlight--;
      this.#unlanded.shift();
      if (outcome.status === 'fulfilled') {
        this.#overlay.written(materialized, batch.no);
        this.eventsRemovedThrough = Math.max(this.eventsRemovedThrough, batch.eventsThrough);
        if (batch.events.length > 0) this.#durableSeq = batch.events[batch.events.length - 1]!.seq + 1;
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
        this.#stop.fail(error);
      }
      if (this.#pending) this.#queueFlush();
      else if (this.#overlay.size > 0) this.#armIdle();
    });
    this.#tail = landed;
  }

  get failure(): TroupeError | undefined {
    return this.#stop.failure;
  }

  onFailure(listener: (failure: TroupeError) => void): void {
    this.#stop.onFailure(listener);
  }

  async settled(): Promise<void> {
    while (this.#pending || this.#inFlight > 0 || this.#flushQueued) {
      if (this.#inFlight > 0) await this.#tail;
      else if (this.#pending) await this.#pending.done.catch(() => undefined);
      else await new Promise((resolve) => setImmediate(resolve));
    }
  }

  /**
   * Closes this store as a crash would (writing nothing, as a failed store closes: see
   * {@link LmdbStore.close}) and opens the data dir again, holding its lock throughout: the new
   * store starts from what is durable. When the open fails (the disk is still full), this store
   * stays closed with the lock held, and `reopen` may be called again; `close` then lets the lock go.
   */
  async reopen(): Promise<Store> {
    if (this.#lockGone) throw new TroupeError('CLOSED', 'the store is closed');
    if (!this.#closed) await this.#closeAsCrashed();
    const store = await this.#openAgain(this.#lock);
    this.#lockGone = true;
    return store;
  }

  /** Closes the environment writing nothing more: the next open replays the log, as after a crash. */
  async #closeAsCrashed(): Promise<void> {
    await this.settled();
    this.#closed = true;
    clearTimeout(this.#idle);
    await closeEnvironment(this.#root);
  }

  /** Lets go of the data dir's lock, unless it went to a reopened store or was let go already. */
  async #releaseLock(): Promise<void> {
    if (this.#lockGone) return;
    this.#lockGone = true;
    await this.#lock.release();
  }

  backup(dest: string, compact: boolean): Promise<BackupInfo> {
    const refused = this.#stop.refusal(this.#closed);
    if (refused) return refused;
    return backupEnvironment(this.#root, this.dataDir, dest, compact);
  }

  async close(clean: boolean): Promise<void> {
    // Closed by a reopen that failed: the lock is still this store's to let go.
    if (this.#closed) return this.#releaseLock();
    if (this.failure) {
      // Nothing more is written: the overlay may hold what never became durable. Not a clean
      // shutdown either, so the next open replays the log like after a crash.
      try {
        await this.#closeAsCrashed();
      } finally {
        await this.#releaseLock();
      }
      return;
    }
    await this.settled();
    this.#closed = true;
    clearTimeout(this.#idle);
    try {
      // Materialize everything, so the next open has no log to replay.
      await committed(this.#root.batch(finalWrites(this.#overlay.takeAll(this.#lastBatch + 1), this.#lastBatch, clean, this.#targets)));
      await this.#root.flushed;
      await closeEnvironment(this.#root);
    } finally {
      await this.#releaseLock();
    }
  }
}

const noEvents = (): EventRecord[] => [];
