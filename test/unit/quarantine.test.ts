import { describe, expect, it } from 'vitest';
import type { Database } from 'lmdb';
import type { StepWriter } from '../../src/store/port.js';
import { Quarantine } from '../../src/store/lmdb/quarantine.js';

/** A database whose every record reads as the same bytes. */
const db = { getBinary: () => Buffer.from([0xc1]) } as unknown as Database<unknown, any>;
/** What the quarantine's commit writes through. */
const writer = { raw: () => undefined, event: () => undefined } as unknown as StepWriter;

describe('Quarantine', () => {
  it('hides a bad record from reads until the commit that removes it lands, and no longer', async () => {
    let land!: () => void;
    const q = new Quarantine({ now: () => 1, commit: (fn) => (fn(writer), new Promise<void>((resolve) => (land = resolve))), events: db as never, closed: () => false });
    q.add('instances', db, 'k', 'bad');
    expect(q.has('instances', 'k')).toBe(true);
    await new Promise((resolve) => setImmediate(resolve));
    // Its removal is in flight: still hidden.
    expect(q.has('instances', 'k')).toBe(true);
    land();
    await new Promise((resolve) => setImmediate(resolve));
    // Removed: a record written to the key since reads again.
    expect(q.has('instances', 'k')).toBe(false);
  });

  it('keeps hiding a bad record whose removal failed', async () => {
    const q = new Quarantine({ now: () => 1, commit: (fn) => (fn(writer), Promise.reject(new Error('disk full'))), events: db as never, closed: () => false });
    q.add('instances', db, 'k', 'bad');
    await new Promise((resolve) => setImmediate(resolve));
    await new Promise((resolve) => setImmediate(resolve));
    expect(q.has('instances', 'k')).toBe(true);
  });
});
