import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { MAX_TIMEOUT_MS, setLongTimeout } from '../../actors/long-timeout.js';
import { ManualClock, systemClock } from '../../src/clock.js';
import { createTimerWheel, type WheelTimer } from '../../src/timers/timer-wheel.js';

const LONG = 2 ** 31 + 5;
const DAY = 86_400_000;

describe('ManualClock with delays past 2^31-1 ms', () => {
  it('fires a 2^31 + 5 ms timer exactly at its due time, not early', () => {
    const clock = new ManualClock(0);
    const fired: number[] = [];
    clock.setTimeout(() => fired.push(clock.now()), LONG);
    clock.advance(LONG - 1);
    expect(fired).toEqual([]);
    clock.advance(1);
    expect(fired).toEqual([LONG]);
  });

  it('treats a NaN delay as 0 instead of poisoning the clock', () => {
    const clock = new ManualClock(100);
    const fired: number[] = [];
    clock.setTimeout(() => fired.push(clock.now()), Number.NaN);
    clock.advance(0);
    expect(fired).toEqual([100]);
    expect(clock.now()).toBe(100);
  });
});

describe('systemClock with delays past 2^31-1 ms (fake timers)', () => {
  beforeEach(() => {
    vi.useFakeTimers({ now: Date.UTC(2026, 0, 1) });
  });
  afterEach(() => {
    vi.restoreAllMocks();
    vi.useRealTimers();
  });

  it('arms segments of at most 2^31-1 ms and fires at the due instant', () => {
    const armed = vi.spyOn(globalThis, 'setTimeout');
    const start = Date.now();
    const fired: number[] = [];
    systemClock.setTimeout(() => fired.push(Date.now() - start), LONG);
    vi.advanceTimersByTime(MAX_TIMEOUT_MS);
    expect(fired).toEqual([]);
    vi.advanceTimersByTime(5);
    expect(fired).toEqual([]);
    vi.advanceTimersByTime(1);
    expect(fired).toEqual([LONG]);
    const delays = armed.mock.calls.map(([, ms]) => ms);
    expect(delays).toEqual([MAX_TIMEOUT_MS, 6]);
  });

  it('waits out a yearly delay in a handful of segments', () => {
    const armed = vi.spyOn(globalThis, 'setTimeout');
    const start = Date.now();
    let firedAt: number | undefined;
    systemClock.setTimeout(() => (firedAt = Date.now() - start), 366 * DAY);
    vi.advanceTimersByTime(366 * DAY - 1);
    expect(firedAt).toBeUndefined();
    vi.advanceTimersByTime(1);
    expect(firedAt).toBe(366 * DAY);
    expect(armed.mock.calls.length).toBe(Math.ceil((366 * DAY) / MAX_TIMEOUT_MS));
    for (const [, ms] of armed.mock.calls) expect(ms).toBeLessThanOrEqual(MAX_TIMEOUT_MS);
  });

  it('corrects for wall-clock drift on each re-arm', () => {
    const start = Date.now();
    let firedAt: number | undefined;
    systemClock.setTimeout(() => (firedAt = Date.now() - start), LONG);
    // The wall clock is set 1 s back while the first segment is pending: the due instant stands.
    vi.setSystemTime(start - 1_000);
    vi.advanceTimersByTime(MAX_TIMEOUT_MS + 1_005);
    expect(firedAt).toBeUndefined();
    vi.advanceTimersByTime(1);
    expect(firedAt).toBe(LONG);
  });

  it('cancels whichever segment is armed: before and after a re-arm', () => {
    const fired: string[] = [];
    const first = systemClock.setTimeout(() => fired.push('first'), LONG);
    const second = systemClock.setTimeout(() => fired.push('second'), LONG);
    systemClock.clearTimeout(first);
    vi.advanceTimersByTime(MAX_TIMEOUT_MS + 1);
    expect(vi.getTimerCount()).toBe(1);
    systemClock.clearTimeout(second);
    expect(vi.getTimerCount()).toBe(0);
    vi.advanceTimersByTime(10 * DAY);
    expect(fired).toEqual([]);
  });

  it('keeps short delays as one plain timer, and never keeps the process alive', () => {
    const armed = vi.spyOn(globalThis, 'setTimeout');
    const fired: number[] = [];
    systemClock.setTimeout(() => fired.push(1), 10);
    expect(armed.mock.calls.map(([, ms]) => ms)).toEqual([10]);
    expect((armed.mock.results[0]!.value as NodeJS.Timeout).hasRef()).toBe(false);
    vi.advanceTimersByTime(10);
    expect(fired).toEqual([1]);
  });

  it('lets the worker-side helper keep the process alive unless asked not to', () => {
    const armed = vi.spyOn(globalThis, 'setTimeout');
    setLongTimeout(() => undefined, LONG);
    setLongTimeout(() => undefined, LONG, { unref: true });
    expect(armed.mock.results.map((r) => (r.value as NodeJS.Timeout).hasRef())).toEqual([true, false]);
  });

  it('lets a timer wheel wait for a far-future timer without spinning: it looks at the wall clock once a minute', () => {
    const armed = vi.spyOn(globalThis, 'setTimeout');
    const fired: string[] = [];
    const due = Date.now() + 31 * DAY;
    const wheel = createTimerWheel<WheelTimer>(systemClock, (t) => fired.push(`${t.id}@${Date.now() - due}`));
    wheel.add({ id: 'monthly', due });
    vi.advanceTimersByTime(1_000);
    expect(armed.mock.calls.length).toBe(1);
    vi.advanceTimersByTime(31 * DAY - 1_001);
    expect(fired).toEqual([]);
    vi.advanceTimersByTime(1);
    expect(fired).toEqual(['monthly@0']);
    // One timeout a minute of the wait (a wall clock stepped forward is seen within one), no more.
    expect(armed.mock.calls.length).toBe((31 * DAY) / 60_000);
    wheel.stop();
  });
});
