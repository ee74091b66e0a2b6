import { describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { Attempt } from '../../src/tasks/attempt.js';
import { StartAhead } from '../../src/tasks/start-ahead.js';
import { ManualClock } from '../../src/clock.js';
import type { AttemptRecord } from '../../src/store/records.js';
import { capturedLog } from '../log-capture.js';

const record: AttemptRecord = { taskId: 't1', run: 1, attempt: 2, attemptId: 't1:1:2', token: 7, owner: 'rt', startedAt: 1_000, leaseExpiresAt: 31_000 };
const entry = { taskId: 't1', instanceKey: 'k', agent: 'a', priority: 0, order: 1 };


describe('Attempt (host side)', () => {
  it('moves only forward: starting → dispatched → executing → ended, or straight to ended', () => {
    for (const path of [['dispatched', 'executing', 'ended'], ['ended'], ['dispatched', 'ended']] as const) {
      const a = new Attempt(record, entry, { agent: 'a', lane: 'default' }, pino({ level: 'silent' }));
      for (const phase of path) a.phase = phase;
      expect(a.phase).toBe('ended');
    }
  });

  it.each([
    ['starting', 'executing'],
    ['dispatched', 'starting'],
    ['executing', 'dispatched'],
    ['ended', 'ended'],
    ['ended', 'executing'],
  ] as const)('refuses %s → %s with ILLEGAL_STATE, and stays where it was', (from, to) => {
    const a = new Attempt(record, entry, { agent: 'a', lane: 'default' }, pino({ level: 'silent' }));
    const path = { starting: [], dispatched: ['dispatched'], executing: ['dispatched', 'executing'], ended: ['ended'] }[from] as Array<Attempt['phase']>;
    for (const phase of path) a.phase = phase;
    expect(() => (a.phase = to)).toThrow(expect.objectContaining({ code: 'ILLEGAL_STATE', message: `attempt t1:1:2 cannot go from ${from} to ${to}` }));
    expect(a.phase).toBe(from);
  });

  it('logs each move on its own child logger, with its task and attempt ids', async () => {
    const { log, lines } = capturedLog('debug');
    const a = new Attempt(record, entry, { agent: 'a', lane: 'default' }, log);
    a.phase = 'dispatched';
    a.phase = 'ended';
    await new Promise((resolve) => setImmediate(resolve));
    expect(lines.map((l) => [l.taskId, l.attemptId, l.from, l.to, l.msg])).toEqual([
      ['t1', 't1:1:2', 'starting', 'dispatched', 'attempt phase'],
      ['t1', 't1:1:2', 'dispatched', 'ended', 'attempt phase'],
    ]);
  });

  it('owns its lease and timers: a timeout fires on the clock, clearing stops both', () => {
    const clock = new ManualClock(0);
    const a = new Attempt(record, entry, { agent: 'a', lane: 'default' }, pino({ level: 'silent' }));
    expect(a.leaseExpiresAt).toBe(31_000);
    a.renewLease(5_000, 30_000);
    expect(a.leaseExpiresAt).toBe(35_000);
    const fired: string[] = [];
    a.armTimeout(clock, 0, () => fired.push('no timeout'));
    a.armTimeout(clock, 100, () => fired.push('timeout'));
    a.armGrace(clock, 50, () => fired.push('grace'));
    clock.advance(60);
    a.clearTimers(clock);
    clock.advance(1_000);
    expect(fired).toEqual(['grace']);
  });
});

describe('StartAhead', () => {
  it('starts nothing ahead before an attempt has ended', () => {
    const ahead = new StartAhead(8, 1_024);
    ahead.started(5);
    expect(ahead.window).toBe(0);
  });

  it('covers several start commits of fast attempts, up to its cap, and shrinks for slow ones', () => {
    const fast = new StartAhead(8, 1_024);
    fast.started(3);
    fast.executed(0);
    expect(fast.window).toBe(1_024);
    const slow = new StartAhead(8, 1_024);
    slow.executed(10_000);
    expect(slow.window).toBe(0);
    const medium = new StartAhead(8, 1_024);
    medium.executed(4);
    // 4 commit latencies (1 ms, the first estimate) × 8 slots / 4 ms per attempt.
    expect(medium.window).toBe(8);
    for (let i = 0; i < 200; i++) medium.started(10);
    expect(medium.window).toBe(79);
  });
});
