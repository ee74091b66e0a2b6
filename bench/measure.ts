/**
 * How `npm run bench` measures: the closed-loop throughput driver, the open-loop half-load
 * latency driver, and the main-thread meter (CPU time and bytes allocated). bench/dispatch.ts
 * documents what each figure means.
 */
import { readFileSync } from 'node:fs';
import { constants, PerformanceObserver, type PerformanceEntry } from 'node:perf_hooks';
import { GCProfiler, getHeapStatistics } from 'node:v8';

/** One task through a runner: resolves when it has settled, with when it started (epoch ms). */
export type RunOne = () => Promise<number>;

/** Epoch ms with sub-ms precision, comparable with what the no-op records on another thread. */
export const now = (): number => performance.timeOrigin + performance.now();

/** Keeps `window` tasks in flight until `n` have settled; resolves with the elapsed ms. */
export async function drive(n: number, window: number, one: RunOne): Promise<number> {
  let next = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: Math.min(window, n) }, async () => {
      while (next < n) {
        next++;
        await one();
      }
    }),
  );
  return performance.now() - started;
}

/** Latency percentiles (ms) at one offered rate. */
export interface Latency {
  /** The rate the schedule asked for, tasks/s. */
  offeredPerSec: number;
  /** Tasks submitted divided by the time from the first submit to the last. */
  achievedPerSec: number;
  tasks: number;
  startP50: number;
  startP99: number;
  settleP50: number;
  settleP99: number;
}

/**
 * Open loop: submits on a fixed schedule of `rate` tasks/s for `warmupSeconds` and then `seconds`,
 * whatever the runner's backlog, and resolves once every task has settled. Only the tasks submitted
 * after the warm-up are measured: the warm-up brings the runner to the steady state of this rate,
 * out of whatever the phase before left it doing (for Troupe, writing the records of the tasks the
 * throughput phase settled last; for raw Piscina, collecting that phase's garbage). A 1 ms timer
 * releases the tasks that are due, so at high rates submits go in bursts of up to rate/1000; a
 * tighter loop (setImmediate) would spin the main thread and take a core from the runner on a
 * 2-core machine.
 */
export function openLoop(rate: number, seconds: number, one: RunOne, warmupSeconds = 0): Promise<Latency> {
  const skip = Math.round(rate * warmupSeconds);
  const total = Math.max(2, Math.round(rate * seconds));
  const startMs = new Float64Array(total);
  const settleMs = new Float64Array(total);
  let submitted = 0;
  let settled = 0;
  let firstAt = 0;
  let lastAt = 0;
  return new Promise((resolve, reject) => {
    const done = () => {
      const span = (lastAt - firstAt) / 1000;
      const [startP50, startP99] = percentiles(startMs, [0.5, 0.99]);
      const [settleP50, settleP99] = percentiles(settleMs, [0.5, 0.99]);
      resolve({ offeredPerSec: rate, achievedPerSec: span > 0 ? (total - 1) / span : rate, tasks: total, startP50: startP50!, startP99: startP99!, settleP50: settleP50!, settleP99: settleP99! });
    };
    const t0 = performance.now();
    const tick = () => {
      const due = Math.min(skip + total, Math.floor(((performance.now() - t0) / 1000) * rate) + 1);
      while (submitted < due) {
        const k = submitted++ - skip;
        const at = now();
        if (k === 0) firstAt = at;
        lastAt = at;
        one().then((startedAt) => {
          if (k >= 0) {
            startMs[k] = startedAt - at;
            settleMs[k] = now() - at;
          }
          if (++settled === skip + total) done();
        }, reject);
      }
      if (submitted < skip + total) setTimeout(tick, 1);
    };
    tick();
  });
}

/** The p-quantiles (0..1) of xs, by nearest rank. */
export function percentiles(xs: Float64Array, ps: number[]): number[] {
  const sorted = Float64Array.from(xs).sort();
  return ps.map((p) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!);
}

/** The median of xs (the upper one for an even count). */
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

/** What the main thread spent over a metered phase. */
export interface MainThreadUse {
  /** CPU time of the main thread alone, µs (ELU active time where schedstat is missing). */
  cpuUs: number;
  /** Event-loop utilization over the phase, 0..1. */
  busy: number;
  /** Bytes allocated on the main isolate's heap. */
  allocatedBytes: number;
  /** CPU time of the whole process over the phase, µs: every thread (main, agent threads, lmdb's writer, V8's and libuv's helpers), user and system. */
  processCpuUs: number;
}

const SCHEDSTAT = `/proc/self/task/${process.pid}/schedstat`;

/** Nanoseconds the main thread (tid = pid on Linux) has run on a CPU, or undefined off Linux. */
export function mainThreadCpuNs(): number | undefined {
  try {
    return Number(readFileSync(SCHEDSTAT, 'utf8').split(' ')[0]);
  } catch {
    return undefined;
  }
}

/** Where the main-thread CPU figure comes from on this machine. */
export function cpuSource(): string {
  return mainThreadCpuNs() === undefined
    ? 'event-loop active time (performance.eventLoopUtilization): no per-thread CPU clock here'
    : `main-thread CPU time from ${SCHEDSTAT.replace(String(process.pid), '<pid>')} (Node 20 has no process.threadCpuUsage)`;
}

/** How the allocation figure is computed. */
export const ALLOC_SOURCE =
  'main-isolate heap: sum over GCs (v8.GCProfiler) of used heap before each GC minus used heap after the previous one, plus the growth after the last';

/** How the whole-process CPU figure is computed. */
export const PROCESS_CPU_SOURCE = "process.cpuUsage() over the throughput phase (every thread of the bench's process, user + system), per task; cores = that time over the phase's wall time";

/**
 * Starts metering the main thread; the returned function stops and reads it. Worker threads,
 * lmdb's write thread, V8's helper threads and other processes (Postgres, Redis) are not counted
 * in its CPU time; they are in `processCpuUs`, the whole process's (other processes still not).
 */
export function meterMainThread(): () => MainThreadUse {
  const process0 = process.cpuUsage();
  const cpu0 = mainThreadCpuNs();
  const elu0 = performance.eventLoopUtilization();
  const profiler = new GCProfiler();
  const heap0 = getHeapStatistics().used_heap_size;
  profiler.start();
  return () => {
    const heap1 = getHeapStatistics().used_heap_size;
    const { statistics } = profiler.stop();
    const elu = performance.eventLoopUtilization(elu0);
    const cpu1 = mainThreadCpuNs();
    const processUse = process.cpuUsage(process0);
    let allocatedBytes = 0;
    let after = heap0;
    for (const gc of statistics) {
      allocatedBytes += gc.beforeGC.heapStatistics.usedHeapSize - after;
      after = gc.afterGC.heapStatistics.usedHeapSize;
    }
    allocatedBytes += heap1 - after;
    const cpuUs = cpu0 !== undefined && cpu1 !== undefined ? (cpu1 - cpu0) / 1000 : elu.active * 1000;
    return { cpuUs, busy: elu.utilization, allocatedBytes, processCpuUs: processUse.user + processUse.system };
  };
}

/**
 * Starts counting the main isolate's full GCs (mark-compacts); the returned function stops and
 * reads the count. A full GC holds the main thread for several milliseconds, so at half load it is
 * where a p99 comes from: a runner whose objects V8 pretenured makes many (see src/allocation.ts).
 */
export function countFullGcs(): () => number {
  let count = 0;
  const tally = (entries: PerformanceEntry[]) => {
    for (const entry of entries) if ((entry as PerformanceEntry & { detail?: { kind?: number } }).detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR) count++;
  };
  const observer = new PerformanceObserver((list) => tally(list.getEntries()));
  observer.observe({ entryTypes: ['gc'] });
  return () => {
    tally(observer.takeRecords());
    observer.disconnect();
    return count;
  };
}
