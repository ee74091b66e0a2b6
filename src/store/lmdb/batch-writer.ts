/**
 * What one transaction of the LMDB backend gathers: the record changes and events of every commit
 * asked for in one turn (or while the previous transaction flushes), and the writer that steps
 * write them with.
 */
import type { Key, StepWriter } from '../port.js';
import type { PrunedDatabase } from '../../steps/types.js';
import { forEachSettledIndexEntry, type AttemptRecord, type EventRecord, type EventType, type InboxRecord, type InstanceEnvelope, type LogRecord, type RunRecord, type ScheduleRecord, type TaskRecord, type TimerRecord } from '../records.js';
import type { EventData } from '../../api/events.js';
import { arrayForBatch } from '../../allocation.js';
import { DB, FINAL, REMOVAL } from './layout.js';
import type { DirtyEntry, Overlay } from './overlay.js';

/** The commits gathered for one transaction. */
export interface Batch {
  readonly no: number;
  /** When it was started (epoch ms): the time of its changes in the overlay (see overlay.ts `lastAt`). */
  readonly at: number;
  /** Logged changes, flat [db (+ flags), key, value] (see layout.ts). */
  readonly ops: unknown[];
  /**
   * Writes that go straight to their databases in this transaction and never into the log:
   * write-once records (an ended attempt, a finished run) and index repairs. Flat, as `ops`.
   */
  readonly direct: unknown[];
  readonly events: EventRecord[];
  /** Event log records this batch removes (see Store.truncateEvents), and the last seq they hold. */
  readonly dropEvents: number[];
  eventsThrough: number;
  /** Overlay entries of patched records changed in this batch: their version before it is let go once it is flushed. */
  readonly touched: DirtyEntry[];
  /** A quiet store's commit of nothing but cooled records: it materializes as many as there are. */
  readonly idle: boolean;
  readonly done: Promise<void>;
  resolve(): void;
  reject(error: Error): void;
}

/** A new, empty batch. */
export function newBatch(no: number, idle = false): Batch {
  return new GatheredBatch(no, idle);
}

/**
 * A batch made by a constructor, its arrays by {@link arrayForBatch}: it holds the records and
 * events of its commits until the commit lands, and V8 pretenured the literal it replaced (see
 * src/allocation.ts).
 */
class GatheredBatch implements Batch {
  readonly no: number;
  readonly at = Date.now();
  readonly ops = arrayForBatch<unknown>();
  readonly direct = arrayForBatch<unknown>();
  readonly events = arrayForBatch<EventRecord>();
  readonly dropEvents = arrayForBatch<number>();
  eventsThrough = 0;
  readonly touched = arrayForBatch<DirtyEntry>();
  readonly idle: boolean;
  readonly done: Promise<void>;
  resolve!: () => void;
  reject!: (error: Error) => void;

  constructor(no: number, idle: boolean) {
    this.no = no;
    this.idle = idle;
    this.done = new Promise<void>((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
    });
    // Not every batch has a caller waiting on it (a quiet store's commit of cooled records): its
    // failure stops the store (see FailStop), and must not also end the process as unhandled.
    this.done.catch(() => undefined);
  }
}

/** Collects the writes of one commit call into its batch. */
export class BatchWriter implements StepWriter {
  batch!: Batch;
  readonly #nextSeq: () => number;
  readonly #overlay: Pick<Overlay, 'unwrittenFinal'>;

  constructor(nextSeq: () => number, overlay: Pick<Overlay, 'unwrittenFinal'>) {
    this.#nextSeq = nextSeq;
    this.#overlay = overlay;
  }

  /** A logged write of any record database (index + REMOVAL: a removal). */
  raw(db: number, key: Key, value: unknown): void {
    this.batch.ops.push(db, key, value);
  }
  putTask(task: TaskRecord, final = false): void {
    this.batch.ops.push(final ? DB.tasks + FINAL : DB.tasks, task.id, task);
  }
  removeActive(taskId: string): void {
    this.batch.direct.push(DB.active + REMOVAL, taskId, null);
  }
  remove(db: PrunedDatabase, key: Key): void {
    // Attempts and runs are written once, straight to their databases: so is their removal.
    if (db === 'runs' || db === 'attempts') this.batch.direct.push(DB[db] + REMOVAL, key, null);
    else this.batch.ops.push(DB[db] + REMOVAL, key, null);
  }
  unindexSettled(task: TaskRecord): void {
    // The index entries are the store's (written with the settled record, not through the log):
    // so is their removal. A settled version still waiting in this batch is never written.
    if (this.#overlay.unwrittenFinal(DB.tasks, task.id)) return;
    forEachSettledIndexEntry(task, (index, key) => this.batch.direct.push(DB[index] + REMOVAL, key, null));
  }
  putChild(parentId: string, childId: string): void {
    this.batch.ops.push(DB.children, [parentId, childId], true);
  }
  putAttempt(a: AttemptRecord): void {
    this.batch.direct.push(DB.attempts, [a.taskId, a.run, a.attempt], a);
  }
  putRun(r: RunRecord): void {
    this.batch.direct.push(DB.runs, [r.taskId, r.run], r);
  }
  putInstance(key: string, envelope: InstanceEnvelope): void {
    this.batch.ops.push(DB.instances, key, envelope);
  }
  putTimer(t: TimerRecord): void {
    this.batch.ops.push(DB.timers, [t.due, t.id], t);
  }
  removeTimer(t: TimerRecord): void {
    this.batch.ops.push(DB.timers + REMOVAL, [t.due, t.id], null);
  }
  putIdempotency(key: string, taskId: string): void {
    this.batch.ops.push(DB.idempotency, key, taskId);
  }
  putLog(key: [string, number, number, number], line: LogRecord): void {
    this.batch.ops.push(DB.logs, key, line);
  }
  putInbox(taskId: string, item: InboxRecord): void {
    this.batch.ops.push(DB.inbox, [taskId, item.seq], item);
  }
  putSchedule(schedule: ScheduleRecord): void {
    this.batch.ops.push(DB.schedules, schedule.id, schedule);
  }
  removeSchedule(id: string): void {
    this.batch.ops.push(DB.schedules + REMOVAL, id, null);
  }
  putControl(key: string, value: unknown): void {
    this.batch.ops.push(DB.control, key, value);
  }
  event<K extends EventType>(type: K, fields: { at: number; taskId?: string; attemptId?: string; data: EventData<K> }): EventRecord {
    const record = { seq: this.#nextSeq(), type, ...fields } as EventRecord;
    this.batch.events.push(record);
    return record;
  }
  putEvent(event: EventRecord): void {
    this.batch.events.push(event);
  }
}
