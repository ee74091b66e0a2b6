import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/clock.js';
import type { TimerRecord } from '../../src/store/records.js';
import { createTimerWheel, type TimerWheel } from '../../src/timers/timer-wheel.js';

const T0 = 1_000_000;

function timer(id: string, due: number, kind: TimerRecord['kind'] = 'retry'): TimerRecord {
  return { id, due: T0 + due, kind, taskId: `task-${id}`, run: 1 };
}

interface Harness {
  clock: ManualClock;
  wheel: TimerWheel;
  /** `id@offset` for each fired timer, offset = clock time - T0 when it fired. */
  fired: string[];
}

function harness(onFire?: (t: TimerRecord, h: Harness) => void): Harness {
  const clock = new ManualClock(T0);
  const fired: string[] = [];
  const h = { clock, fired } as Harness;
  h.wheel = createTimerWheel(clock, (t) => {
    fired.push(`${t.id}@${clock.now() - T0}`);
    onFire?.(t, h);
  });
  return h;
}

describe('ManualClock', () => {
  it('starts at the given instant, or 2026-01-01 UTC by default', () => {
    expect(new ManualClock(42).now()).toBe(42);
    expect(new ManualClock().now()).toBe(Date.UTC(2026, 0, 1));
  });

  it('only moves when advanced, and lands on the target', () => {
    const clock = new ManualClock(100);
    expect(clock.now()).toBe(100);
    clock.advance(50);
    expect(clock.now()).toBe(150);
    clock.advance(0);
    expect(clock.now()).toBe(150);
  });

  it('fires timers in due order, then in arming order for ties, each at its due time', () => {
    const clock = new ManualClock(0);
    const seen: string[] = [];
    clock.setTimeout(() => seen.push(`c@${clock.now()}`), 30);
    clock.setTimeout(() => seen.push(`a@${clock.now()}`), 10);
    clock.setTimeout(() => seen.push(`b1@${clock.now()}`), 20);
    clock.setTimeout(() => seen.push(`b2@${clock.now()}`), 20);
    expect(clock.pending).toBe(4);
    clock.advance(25);
    expect(seen).toEqual(['a@10', 'b1@20', 'b2@20']);
    expect(clock.pending).toBe(1);
    expect(clock.now()).toBe(25);
    clock.advance(5);
    expect(seen).toEqual(['a@10', 'b1@20', 'b2@20', 'c@30']);
    expect(clock.pending).toBe(0);
  });

  it('does not fire a timer before it is due', () => {
    const clock = new ManualClock(0);
    let fired = 0;
    clock.setTimeout(() => fired++, 10);
    clock.advance(9);
    expect(fired).toBe(0);
    clock.advance(1);
    expect(fired).toBe(1);
  });

  it('clearTimeout cancels and drops the timer from pending', () => {
    const clock = new ManualClock(0);
    let fired = 0;
    const handle = clock.setTimeout(() => fired++, 10);
    clock.setTimeout(() => fired += 10, 20);
    clock.clearTimeout(handle);
    expect(clock.pending).toBe(1);
    clock.advance(100);
    expect(fired).toBe(10);
  });

  it('fires a timer armed by a firing timer in the same advance when it falls due, not otherwise', () => {
    const clock = new ManualClock(0);
    const seen: string[] = [];
    clock.setTimeout(() => {
      seen.push(`first@${clock.now()}`);
      clock.setTimeout(() => seen.push(`chained@${clock.now()}`), 5);
      clock.setTimeout(() => seen.push(`late@${clock.now()}`), 500);
    }, 10);
    clock.advance(20);
    expect(seen).toEqual(['first@10', 'chained@15']);
    expect(clock.pending).toBe(1);
  });

  it('treats a negative delay as due now', () => {
    const clock = new ManualClock(0);
    let fired = 0;
    clock.setTimeout(() => fired++, -50);
    clock.advance(0);
    expect(fired).toBe(1);
    expect(clock.now()).toBe(0);
  });

  it('set() moves to an absolute instant and never backwards', () => {
    const clock = new ManualClock(100);
    let fired = 0;
    clock.setTimeout(() => fired++, 50);
    clock.set(160);
    expect(clock.now()).toBe(160);
    expect(fired).toBe(1);
    clock.set(10);
    expect(clock.now()).toBe(160);
  });
});

describe('timer wheel', () => {
  it('fires timers in due order at their due times, ties by id', () => {
    const h = harness();
    h.wheel.add(timer('c', 300));
    h.wheel.add(timer('a', 100));
    h.wheel.add(timer('z', 200));
    h.wheel.add(timer('b', 200));
    expect(h.wheel.size).toBe(4);
    h.clock.advance(1_000);
    expect(h.fired).toEqual(['a@100', 'b@200', 'z@200', 'c@300']);
    expect(h.wheel.size).toBe(0);
    expect(h.wheel.has('a')).toBe(false);
  });

  it('fires nothing before the earliest is due', () => {
    const h = harness();
    h.wheel.add(timer('a', 100));
    h.clock.advance(99);
    expect(h.fired).toEqual([]);
    expect(h.wheel.has('a')).toBe(true);
    h.clock.advance(1);
    expect(h.fired).toEqual(['a@100']);
  });

  it('hands onFire the record it was given', () => {
    const clock = new ManualClock(T0);
    const got: TimerRecord[] = [];
    const wheel = createTimerWheel(clock, (t) => got.push(t));
    const record = timer('w', 10, 'wake');
    wheel.add(record);
    clock.advance(10);
    expect(got).toEqual([record]);
  });

  it('fires a timer that was already due when added on the next advance', () => {
    const h = harness();
    h.clock.advance(500);
    h.wheel.add(timer('past', 100));
    h.clock.advance(0);
    expect(h.fired).toEqual(['past@500']);
  });

  it('remove() cancels a timer and returns it', () => {
    const h = harness();
    const b = timer('b', 200);
    h.wheel.add(timer('a', 100));
    h.wheel.add(b);
    expect(h.wheel.remove('b')).toBe(b);
    expect(h.wheel.has('b')).toBe(false);
    expect(h.wheel.size).toBe(1);
    expect(h.wheel.remove('b')).toBeUndefined();
    expect(h.wheel.remove('never')).toBeUndefined();
    h.clock.advance(1_000);
    expect(h.fired).toEqual(['a@100']);
  });

  it('remove() of the earliest timer lets the next one fire on time', () => {
    const h = harness();
    h.wheel.add(timer('a', 100));
    h.wheel.add(timer('b', 200));
    h.wheel.remove('a');
    h.clock.advance(150);
    expect(h.fired).toEqual([]);
    h.clock.advance(50);
    expect(h.fired).toEqual(['b@200']);
  });

  it('re-adding an id replaces the timer: later due', () => {
    const h = harness();
    h.wheel.add(timer('a', 100));
    h.wheel.add(timer('a', 300));
    expect(h.wheel.size).toBe(1);
    h.clock.advance(200);
    expect(h.fired).toEqual([]);
    h.clock.advance(1_000);
    expect(h.fired).toEqual(['a@300']);
  });

  it('re-adding an id replaces the timer: earlier due', () => {
    const h = harness();
    h.wheel.add(timer('a', 300));
    h.wheel.add(timer('a', 100));
    h.clock.advance(1_000);
    expect(h.fired).toEqual(['a@100']);
  });

  it('re-adding a removed timer schedules it again, once', () => {
    const h = harness();
    const a = timer('a', 100);
    h.wheel.add(a);
    h.wheel.remove('a');
    h.wheel.add(a);
    h.clock.advance(1_000);
    expect(h.fired).toEqual(['a@100']);
  });

  it('fires timers added while firing in the same advance when they are already due', () => {
    const h = harness((t, { wheel, clock }) => {
      if (t.id === 'a') {
        wheel.add({ ...timer('due-now', 0), due: clock.now() });
        wheel.add(timer('overdue', 50));
        wheel.add(timer('soon', 150));
        wheel.add(timer('later', 5_000));
      }
    });
    h.wheel.add(timer('a', 100));
    h.clock.advance(200);
    // Due order, not adding order: 'overdue' (due 50) goes before 'due-now' (due 100).
    expect(h.fired).toEqual(['a@100', 'overdue@100', 'due-now@100', 'soon@150']);
    expect(h.wheel.has('later')).toBe(true);
    expect(h.wheel.size).toBe(1);
    h.clock.advance(10_000);
    expect(h.fired.at(-1)).toBe('later@5000');
  });

  it('does not fire a due timer removed by an earlier one firing', () => {
    const h = harness((t, { wheel }) => {
      if (t.id === 'a') wheel.remove('b');
    });
    h.wheel.add(timer('a', 100));
    h.wheel.add(timer('b', 100));
    h.wheel.add(timer('c', 100));
    h.clock.advance(100);
    expect(h.fired).toEqual(['a@100', 'c@100']);
  });

  it('stop() prevents firing, now and for later adds', () => {
    const h = harness();
    h.wheel.add(timer('a', 100));
    h.wheel.stop();
    expect(h.clock.pending).toBe(0);
    h.wheel.add(timer('b', 50));
    expect(h.clock.pending).toBe(0);
    h.clock.advance(1_000);
    expect(h.fired).toEqual([]);
  });

  it('keeps at most one clock timer armed', () => {
    const h = harness();
    expect(h.clock.pending).toBe(0);
    h.wheel.add(timer('a', 300));
    expect(h.clock.pending).toBe(1);
    h.wheel.add(timer('b', 500));
    expect(h.clock.pending).toBe(1);
    h.wheel.add(timer('c', 100)); // earlier: re-arms
    expect(h.clock.pending).toBe(1);
    h.clock.advance(100);
    expect(h.fired).toEqual(['c@100']);
    expect(h.clock.pending).toBe(1);
    h.clock.advance(200);
    expect(h.fired).toEqual(['c@100', 'a@300']);
    expect(h.clock.pending).toBe(1);
    h.clock.advance(200);
    expect(h.fired).toEqual(['c@100', 'a@300', 'b@500']);
    expect(h.clock.pending).toBe(0);
  });

  it('re-arms for the earlier timer when one is added before the armed one', () => {
    const h = harness();
    h.wheel.add(timer('late', 1_000));
    h.wheel.add(timer('early', 10));
    h.clock.advance(10);
    expect(h.fired).toEqual(['early@10']);
  });

  it('keeps one clock timer armed while timers are added during firing', () => {
    let maxPending = 0;
    const h = harness((t, { wheel, clock }) => {
      if (t.id.startsWith('gen')) {
        const n = Number(t.id.slice(3));
        if (n < 5) wheel.add(timer(`gen${n + 1}`, clock.now() - T0 + 10));
      }
      maxPending = Math.max(maxPending, clock.pending);
    });
    h.wheel.add(timer('gen0', 10));
    h.wheel.add(timer('other', 1_000));
    h.clock.advance(2_000);
    expect(h.fired).toEqual(['gen0@10', 'gen1@20', 'gen2@30', 'gen3@40', 'gen4@50', 'gen5@60', 'other@1000']);
    expect(maxPending).toBeLessThanOrEqual(1);
    expect(h.clock.pending).toBe(0);
  });

  it('disarms once the wheel is empty after firing', () => {
    const h = harness();
    h.wheel.add(timer('a', 100));
    h.clock.advance(100);
    expect(h.clock.pending).toBe(0);
  });
});

/** A clock whose wall time can jump while its timeouts keep their own (monotonic) time, as Node's do. */
function steppableClock() {
  let wall = T0;
  let mono = 0;
  const pending: Array<{ at: number; fn: () => void }> = [];
  return {
    pending,
    now: () => wall,
    setTimeout: (fn: () => void, ms: number) => {
      const entry = { at: mono + ms, fn };
      pending.push(entry);
      return entry as never;
    },
    clearTimeout: (entry: never) => void pending.splice(pending.indexOf(entry), 1),
    /** The wall clock steps ahead; the monotonic clock does not. */
    step(ms: number) {
      wall += ms;
    },
    elapse(ms: number) {
      mono += ms;
      wall += ms;
      for (let due = pending.findIndex((p) => p.at <= mono); due >= 0; due = pending.findIndex((p) => p.at <= mono)) pending.splice(due, 1)[0]!.fn();
    },
  };
}

describe('a wall clock stepped forward', () => {
  it('fires what fell due within a minute of the step, not after the rest of the old wait', () => {
    const clock = steppableClock();
    const fired: string[] = [];
    const wheel = createTimerWheel(clock, (t) => fired.push(t.id));
    wheel.add(timer('in-an-hour', 3_600_000));
    clock.step(2 * 3_600_000);
    clock.elapse(59_999);
    expect(fired).toEqual([]);
    clock.elapse(1);
    expect(fired).toEqual(['in-an-hour']);
  });

  it('fires what the step made due at once on check() (rt.poke()), and sleeps anew for the rest', () => {
    const clock = steppableClock();
    const fired: string[] = [];
    const wheel = createTimerWheel(clock, (t) => fired.push(t.id));
    wheel.add(timer('in-an-hour', 3_600_000));
    wheel.add(timer('in-three-hours', 3 * 3_600_000));
    wheel.check();
    expect(fired).toEqual([]);
    clock.step(2 * 3_600_000);
    wheel.check();
    expect(fired).toEqual(['in-an-hour']);
    expect(clock.pending).toHaveLength(1);
    wheel.stop();
    clock.step(2 * 3_600_000);
    wheel.check();
    expect(fired).toEqual(['in-an-hour']);
    expect(clock.pending).toHaveLength(0);
  });
});
