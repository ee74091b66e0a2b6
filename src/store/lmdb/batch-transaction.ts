/**
 * What one batch writes in its transaction. Everything our own encoders write is encoded before
 * the transaction begins: a value that cannot be encoded fails the batch here, and lmdb-js never
 * sees any of it (committed() reads the cause lmdb-js leaves on a failed commit).
 */
import { asBinary, type Database } from 'lmdb';
import type { EventRecord } from '../records.js';
import type { Batch } from './batch-writer.js';
import { eventBatchEncoder } from './codec.js';
import { logEncoder, type LogEntry } from './layout.js';
import type { DirtyEntry } from './overlay.js';
import type { RecordWrites } from './record-writes.js';

/** The databases a batch writes besides the records. */
export interface BatchTargets {
  records: RecordWrites;
  log: Database<LogEntry, number>;
  events: Database<EventRecord[], number>;
  meta: Database<unknown, string>;
}

/**
 * Encodes the batch's log record, events and records; returns what writes them, to run inside the
 * transaction: the log record, the events, the direct writes, the materialized records, the event
 * records truncated, the log records a new checkpoint lets go, and the settled counts.
 */
export function prepareWrites(batch: Batch, materialized: readonly DirtyEntry[], checkpoint: { previous: number; checkpoint: number }, to: BatchTargets): () => void {
  const logValue = batch.ops.length > 0 ? asBinary(logEncoder.encode({ ops: batch.ops })) : undefined;
  const eventsValue = batch.events.length > 0 ? asBinary(eventBatchEncoder.encode(batch.events)) : undefined;
  const { direct } = batch;
  const directValues = to.records.preparedDirect(direct);
  const materializedValues = to.records.preparedEntries(materialized);
  return () => {
    if (logValue) to.log.put(batch.no, logValue as never);
    if (eventsValue) to.events.put(batch.events[0]!.seq, eventsValue as never);
    to.records.writeDirect(direct, directValues);
    for (let i = 0; i < materialized.length; i++) to.records.materialize(materialized[i]!, materializedValues[i]);
    for (const key of batch.dropEvents) to.events.remove(key);
    if (batch.eventsThrough > 0) to.meta.put('eventsRemovedThrough', batch.eventsThrough);
    if (checkpoint.checkpoint > checkpoint.previous) {
      for (let n = checkpoint.previous + 1; n <= checkpoint.checkpoint; n++) to.log.remove(n);
      to.meta.put('checkpoint', checkpoint.checkpoint);
    }
    to.records.writeCounts(to.meta);
  };
}

/**
 * What a clean close writes in its last transaction: every record still in the overlay, the log
 * emptied behind them, the checkpoint, and (when clean) the flag that says the shutdown was.
 */
export function finalWrites(entries: readonly DirtyEntry[], lastBatch: number, clean: boolean, to: BatchTargets): () => void {
  const values = to.records.preparedEntries(entries);
  return () => {
    for (let i = 0; i < entries.length; i++) to.records.materialize(entries[i]!, values[i]);
    for (const key of to.log.getKeys()) to.log.remove(key);
    to.meta.put('checkpoint', lastBatch);
    to.records.writeCounts(to.meta);
    if (clean) to.meta.put('cleanShutdown', true);
  };
}
