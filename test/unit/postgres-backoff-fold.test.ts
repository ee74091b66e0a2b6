/**
 * How a settle's ends move an agent's count of fast failures on PostgreSQL (store/postgres/backoff.ts
 * foldFastFails), as the LMDB runtime's flow control counts them end by end (src/governor/flow.ts).
 */
import { describe, expect, it } from 'vitest';
import { foldFastFails, type CountedEnd } from '../../src/store/postgres/backoff.js';

const held = (fastFails = 0, failures: number | null = 3) => new Map([['a', { failures, fastFailMs: 1_000, fastFails }]]);
let n = 0;
const end = (exit: CountedEnd['exit'], ms = 10, extra: Partial<CountedEnd> = {}): CountedEnd => ({ exit, taskId: `t${++n}`, backoff: { agent: 'a', ms }, ...extra });

describe('foldFastFails', () => {
  it('counts retryable errors and timeouts shorter than fastFailMs, and pauses at `failures`, starting again from 0', () => {
    expect(foldFastFails(held(), [end('error'), end('timeout')])).toEqual([{ agent: 'a', fastFails: 2 }]);
    const third = end('error');
    expect(foldFastFails(held(2), [third])).toEqual([{ agent: 'a', fastFails: 0, pausedBy: third }]);
    // Past the threshold in one batch: the last end that reached it paused it, and the rest count on.
    const ends = [end('error'), end('error'), end('error'), end('error')];
    expect(foldFastFails(held(), ends)).toEqual([{ agent: 'a', fastFails: 1, pausedBy: ends[2] }]);
  });

  it('resets on a success, a fork or a slow failure; changes nothing on failures on purpose and infrastructure ends', () => {
    expect(foldFastFails(held(2), [end('success')])).toEqual([{ agent: 'a', fastFails: 0 }]);
    expect(foldFastFails(held(2), [end('fork')])).toEqual([{ agent: 'a', fastFails: 0 }]);
    expect(foldFastFails(held(2), [end('error', 1_000)])).toEqual([{ agent: 'a', fastFails: 0 }]);
    expect(foldFastFails(held(2, 5), [end('error'), end('success'), end('error')])).toEqual([{ agent: 'a', fastFails: 1 }]);
    const deliberate = [end('fail'), end('error', 10, { error: { code: 'FATAL', message: 'no', retryable: false, fault: 'agent' } })];
    const infrastructure = [end('crashed'), end('lease_expired'), end('cancelled'), end('interrupted')];
    expect(foldFastFails(held(2), [...deliberate, ...infrastructure])).toEqual([]);
    // Unchanged (0 stays 0): nothing to write.
    expect(foldFastFails(held(0), [end('success')])).toEqual([]);
  });

  it('skips ends without a backoff, and agents whose row has none (taken away since the claim)', () => {
    expect(foldFastFails(held(), [{ exit: 'error', taskId: 'x' }])).toEqual([]);
    expect(foldFastFails(held(0, null), [end('error')])).toEqual([]);
    expect(foldFastFails(new Map(), [end('error')])).toEqual([]);
  });
});
