/**
 * Which lock an admission on PostgreSQL takes (src/store/postgres/admission.ts), on a client that
 * answers the counts it is given: shared far from the limit, exclusive near it (after letting the
 * shared one go) and for a batch larger than the shared path takes. That the limit holds between
 * runtimes at once is postgres-runtime-share.test.ts's; both paths on a real server,
 * postgres-schedules.test.ts's.
 */
import type pg from 'pg';
import { describe, expect, it } from 'vitest';
import { admit } from '../../src/store/postgres/admission.js';

/** A client whose counts answer `counts` in turn, and the statements it was sent. */
function client(...counts: number[]) {
  const sent: string[] = [];
  const fake = {
    sent,
    query: async (text: string) => {
      sent.push(text.includes('_shared(') ? 'shared' : text.includes('ROLLBACK TO') ? 'unshare' : text.includes('pg_advisory_xact_lock(') ? 'exclusive' : text);
      if (!text.includes('count(*)')) return { rows: [] };
      return [{ rows: [] }, { rows: [{ n: counts.shift()!, sessions: 100 }] }];
    },
  };
  return fake as unknown as { sent: string[] } & Pick<pg.PoolClient, 'query'>;
}

describe('admission on PostgreSQL', () => {
  // In order: each admission's lock follows from the counts before it (the hint admission.ts keeps).
  it('admits on the shared lock while the count leaves room for every other session, else on the exclusive one', async () => {
    // 99 other sessions × 10 tasks each: room kept 990.
    const far = client(10);
    await admit(far, 1, 1_000);
    expect(far.sent).toEqual(['shared']);
    // The last count (10) left room for one more; this one finds 12.
    const near = client(12, 12);
    await admit(near, 1, 1_001);
    expect(near.sent).toEqual(['shared', 'unshare', 'exclusive']);
    // After a count near the limit, the next goes to the exclusive lock at once, and counts once.
    const next = client(13);
    await admit(next, 1, 1_001);
    expect(next.sent).toEqual(['exclusive']);
    // Far from it again: shared.
    const again = client(5);
    await admit(again, 1, 1_000_000);
    expect(again.sent).toEqual(['shared']);
    const batch = client(11);
    await admit(batch, 11, 1_000_000);
    expect(batch.sent).toEqual(['exclusive']);
    const none = client();
    await admit(none, 0, 1);
    expect(none.sent).toEqual([]);
  });

  it('refuses on the exclusive count, naming the tasks queued before the refused ones', async () => {
    const full = client(12);
    await expect(admit(full, 2, 10)).rejects.toMatchObject({ code: 'AT_CAPACITY', message: 'admission is full: 10 tasks queued, maxQueued is 10' });
    expect(full.sent).toEqual(['exclusive']);
  });
});
