/**
 * The order batches land in. lmdb-js commits transactions in the order they were issued, but one
 * that failed (a full disk) does not stop the next from committing, and the next may patch records
 * only the failed one wrote. So each batch is conditional on the chain database's version being
 * the previous batch's, and moves it on: after a failure, the batches already issued find it
 * unmoved and write nothing.
 */
import type { Database } from 'lmdb';
import { committed } from './committed.js';

/** The key of the chain database whose version is the number of the last batch committed. */
const HEAD = 'head';

/** See the module comment. */
export class BatchChain {
  readonly #db: Database<number, string>;
  /** The version the next batch commits on top of. NaN once a batch could not even be issued: nothing issued after it may land either. */
  #version = 0;

  constructor(db: Database<number, string>) {
    this.#db = db;
  }

  /** Takes the version stored at open; returns the write, for the open's transaction, that starts the chain of a new data dir. */
  open(): () => void {
    const head = this.#db.getEntry(HEAD);
    this.#version = head?.version ?? 1;
    return () => {
      if (!head) this.#db.put(HEAD, 1, 1);
    };
  }

  /** Issues `write` as the next batch's transaction: resolves once it landed, rejects when it wrote nothing because one before it failed. */
  issue(write: () => void): Promise<void> {
    const after = this.#version;
    const version = after + 1;
    this.#version = version;
    return committed(
      this.#db.ifVersion(HEAD, after, () => {
        this.#db.put(HEAD, version, version);
        write();
      }),
    ).then((landed) => {
      if (!landed) throw new Error('a batch issued before this one did not commit');
    });
  }

  /** A batch could not be issued: none issued after it may land. */
  broken(): void {
    this.#version = Number.NaN;
  }
}
