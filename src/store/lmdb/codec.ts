/**
 * How the hot records are stored: positionally. A task, attempt or run record is encoded as an
 * array of its field values in one fixed order, with the codec's version first, instead of as a
 * map of field names: msgpack then writes no key and walks no structure per field (measured:
 * a record-per-map encode of a 40-field task cost ~2 µs; the array, a fraction). A change to a
 * record that the log already holds is a patch: [field index, value, …], undefined deleting it.
 *
 * Decoding builds the record with every field present, in the same order as the records the
 * steps create, so stored and fresh records share one shape.
 */
import { Packr } from 'msgpackr';
import { assertFieldNames, MsgpackWriter, recordWriter, type RecordWriter } from './msgpack.js';
import { ATTEMPT_RECORD_FIELDS, blankAttemptRecord, createTaskRecord, TASK_RECORD_FIELDS, type AttemptRecord, type EventRecord, type RunRecord, type TaskRecord } from '../records.js';

/**
 * Bumped when a field list below changes; decoding refuses versions it does not know. Fields are
 * only ever appended, so a record of an older version decodes with the newer fields absent (and
 * the log's patches, by field index, stay valid). 2: the task record's embedded final attempt.
 * 3: the task's own retention and the seq of its first event. 4: the task's trace context.
 */
const VERSION = 4;
const OLDEST_VERSION = 1;

const RUN_FIELDS = ['taskId', 'run', 'reason', 'createdAt', 'settledAt', 'outcome', 'attempts', 'result', 'error'] as const satisfies ReadonlyArray<keyof RunRecord>;
const EVENT_FIELDS = ['seq', 'at', 'type', 'taskId', 'attemptId', 'data'] as const satisfies ReadonlyArray<keyof EventRecord>;

/** Encodes and decodes one kind of record positionally. */
export interface RecordCodec<T> {
  toValues(record: T): unknown[];
  /** Writes the record as {@link RecordCodec.toValues} would give it, without building that array. */
  write: RecordWriter<T>;
  fromValues(values: unknown): T;
  /** The fields of `next` that differ from `previous`, as [index, value, …]. */
  diff(previous: T, next: T): unknown[];
  /** `base` with a patch from {@link RecordCodec.diff} applied (a new record). */
  patch(base: T | undefined, patch: readonly unknown[]): T;
  /** A record of this kind, every field present, from an object that may lack some (older data). */
  normalize(value: Partial<T>): T;
}

function positional<T>(fields: ReadonlyArray<keyof T>, blank: () => T): RecordCodec<T> {
  const n = fields.length;
  return {
    write: recordWriter<T>(VERSION, fields as ReadonlyArray<keyof T & string>),
    toValues(record) {
      const out = new Array<unknown>(n + 1);
      out[0] = VERSION;
      for (let i = 0; i < n; i++) out[i + 1] = record[fields[i]!];
      return out;
    },
    fromValues(values) {
      if (!Array.isArray(values) || !(values[0] >= OLDEST_VERSION && values[0] <= VERSION) || values.length > n + 1) throw new Error(`not a version ${OLDEST_VERSION}-${VERSION} record`);
      const record = blank();
      for (let i = 0; i < n; i++) record[fields[i]!] = values[i + 1] as T[keyof T];
      return record;
    },
    diff: compileDiff<T>(fields as ReadonlyArray<keyof T & string>),
    patch(base, patch) {
      const record = blank();
      if (base != null) for (let i = 0; i < n; i++) record[fields[i]!] = base[fields[i]!];
      for (let i = 0; i < patch.length; i += 2) record[fields[patch[i] as number]!] = patch[i + 1] as T[keyof T];
      return record;
    },
    normalize(value) {
      const record = blank();
      for (let i = 0; i < n; i++) record[fields[i]!] = value[fields[i]!] as T[keyof T];
      return record;
    },
  };
}

/**
 * The diff of two versions of a record, compiled once per kind: one direct property read per field
 * in a straight line (a loop over the names would make each read a keyed, megamorphic load). It
 * runs for every logged change of a task.
 */
function compileDiff<T>(fields: ReadonlyArray<keyof T & string>): (previous: T, next: T) => unknown[] {
  assertFieldNames(fields);
  const body = ['const out = [];', ...fields.map((field, i) => `if (b.${field} !== a.${field}) out.push(${i}, b.${field});`), 'return out;'].join('\n');
  return new Function('a', 'b', body) as (previous: T, next: T) => unknown[];
}

/** A record with every field undefined, in field order (filled in by the decoder). */
function blankOf<T>(fields: ReadonlyArray<keyof T>): () => T {
  return () => {
    const record = {} as T;
    for (const field of fields) record[field] = undefined as T[keyof T];
    return record;
  };
}

const BLANK_TASK = { id: '', agent: '', state: 'queued', input: null, priority: 0, lane: '', instanceKey: '', labels: {}, timeoutMs: 0, retry: { maxAttempts: 1, backoff: 'fixed', delayMs: 0, maxDelayMs: 0, jitter: 0 }, runReason: 'submit', createdAt: 0 } as const;
// Built by the same factory as fresh records, so decoded ones share their shape.
export const taskCodec = positional<TaskRecord>(TASK_RECORD_FIELDS, () => createTaskRecord(BLANK_TASK as never));
export const attemptCodec = positional<AttemptRecord>(ATTEMPT_RECORD_FIELDS, blankAttemptRecord);
export const runCodec = positional<RunRecord>(RUN_FIELDS, blankOf<RunRecord>(RUN_FIELDS));
const eventCodec = positional<EventRecord>(EVENT_FIELDS, blankOf<EventRecord>(EVENT_FIELDS));

/**
 * The msgpack encoder of the values this codec produces. Plain maps for what is left (inputs,
 * outputs, nested policies): a value carries no shared structures, so no database depends on
 * another's. Binary data is copied out of LMDB's buffers on decode.
 */
const packr = new Packr({ useRecords: false, copyBuffers: true, mapsAsObjects: true });

/** The one writer of every value the store encodes itself (see msgpack.ts). */
const writer = new MsgpackWriter();

/** A number as msgpack (a settled task's `listed` value), written by the store's one writer. */
export function encodedNumber(n: number): Buffer {
  return writer.encode(n, writeNumber);
}
const writeNumber = (w: MsgpackWriter, n: number): void => w.number(n);

/** An lmdb-js encoder storing records of one kind positionally. */
export function databaseEncoder<T>(codec: RecordCodec<T>): { encode(value: T): Buffer; decode(bytes: Uint8Array): T } {
  return {
    encode: (value) => writer.encode(value, codec.write),
    decode: (bytes) => codec.fromValues(packr.unpack(bytes)),
  };
}

/** An lmdb-js encoder for a value written by `write` and read back as plain msgpack (the log, the event log). */
export function plainEncoder<T>(write: (w: MsgpackWriter, value: T) => void, fromValue: (value: unknown) => T): { encode(value: T): Buffer; decode(bytes: Uint8Array): T } {
  return {
    encode: (value) => writer.encode(value, write),
    decode: (bytes) => fromValue(packr.unpack(bytes)),
  };
}

/** The event log's values: a batch of events, each positional. */
export const eventBatchEncoder = plainEncoder<EventRecord[]>(
  (w, events) => {
    w.array(events.length);
    for (const event of events) eventCodec.write(w, event);
  },
  (value) => {
    if (!Array.isArray(value)) throw new Error('not a batch of events');
    return value.map((v) => stripUndefined(eventCodec.fromValues(v)));
  },
);

/** Events keep only the fields they have (attemptId and data are optional), as they were published. */
function stripUndefined<T extends object>(record: T): T {
  for (const key of Object.keys(record) as Array<keyof T>) if (record[key] === undefined) delete record[key];
  return record;
}
