/**
 * One timer wheel over the durable Timer records. The records themselves are written in the same
 * step that arms or cancels them; this module only keeps the in-memory schedule (a min-heap by due
 * time) and arms a single clock timeout for the earliest one. At start-up the runtime loads every
 * stored timer back into it, so nothing relies on a `setTimeout` surviving a restart.
 */
import type { Clock, ClockTimer } from '../clock.js';
import type { TimerRecord } from '../store/records.js';

/** What the wheel schedules: anything with an id and a due time (epoch ms). */
export interface WheelTimer {
  readonly id: string;
  readonly due: number;
}

/** The in-memory schedule of durable timers. */
export interface TimerWheel<T extends WheelTimer = TimerRecord> {
  /** Schedules a timer (its record must be written by the caller's step). Re-adding an id replaces it. */
  add(timer: T): void;
  /** Unschedules a timer by id; returns the timer if it was scheduled. */
  remove(id: string): T | undefined;
  has(id: string): boolean;
  readonly size: number;
  /** Fires every timer due by the clock now, then sleeps anew (`rt.poke()`: the wall clock may have been stepped). */
  check(): void;
  /** Stops firing (close). */
  stop(): void;
}

/** The longest the wheel sleeps before it looks at the wall clock again. */
const MAX_SLEEP_MS = 60_000;

/** Creates a wheel that calls `onFire` for each timer when it falls due (in due order). */
export function createTimerWheel<T extends WheelTimer = TimerRecord>(clock: Clock, onFire: (timer: T) => void): TimerWheel<T> {
  const heap: T[] = [];
  const byId = new Map<string, T>();
  let armed: { timer: ClockTimer; due: number } | undefined;
  let stopped = false;

  const less = (a: T, b: T) => a.due < b.due || (a.due === b.due && a.id < b.id);

  function push(timer: T): void {
    heap.push(timer);
    let i = heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!less(heap[i]!, heap[parent]!)) break;
      [heap[i], heap[parent]] = [heap[parent]!, heap[i]!];
      i = parent;
    }
  }

  function pop(): T | undefined {
    const top = heap[0];
    const last = heap.pop();
    if (heap.length > 0 && last) {
      heap[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < heap.length && less(heap[l]!, heap[m]!)) m = l;
        if (r < heap.length && less(heap[r]!, heap[m]!)) m = r;
        if (m === i) break;
        [heap[i], heap[m]] = [heap[m]!, heap[i]!];
        i = m;
      }
    }
    return top;
  }

  /** Drops cancelled entries (removed from byId, or replaced) from the top of the heap. */
  function peek(): T | undefined {
    while (heap.length > 0 && byId.get(heap[0]!.id) !== heap[0]) pop();
    return heap[0];
  }

  function arm(): void {
    if (stopped) return;
    const next = peek();
    if (!next) {
      if (armed) clock.clearTimeout(armed.timer);
      armed = undefined;
      return;
    }
    if (armed && armed.due <= next.due) return;
    if (armed) clock.clearTimeout(armed.timer);
    // Timeouts run on a monotonic clock, due times on the wall clock: a wheel that sleeps at most
    // a minute at a time sees a wall clock stepped forward (NTP, a resume from suspend) within one.
    armed = { due: next.due, timer: clock.setTimeout(fire, Math.min(next.due - clock.now(), MAX_SLEEP_MS)) };
  }

  function fire(): void {
    armed = undefined;
    if (stopped) return;
    const now = clock.now();
    for (let next = peek(); next && next.due <= now; next = peek()) {
      pop();
      byId.delete(next.id);
      onFire(next);
    }
    arm();
  }

  return {
    add(timer) {
      byId.set(timer.id, timer);
      push(timer);
      arm();
    },
    remove(id) {
      const timer = byId.get(id);
      if (timer) byId.delete(id);
      // Removed entries leave the heap lazily; rebuild it when they are the majority.
      if (heap.length > 64 && heap.length > 2 * byId.size) {
        heap.length = 0;
        for (const live of byId.values()) push(live);
      }
      return timer;
    },
    has: (id) => byId.has(id),
    check() {
      if (stopped) return;
      if (armed) clock.clearTimeout(armed.timer);
      fire();
    },
    get size() {
      return byId.size;
    },
    stop() {
      stopped = true;
      if (armed) clock.clearTimeout(armed.timer);
      armed = undefined;
    },
  };
}
