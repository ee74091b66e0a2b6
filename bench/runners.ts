/**
 * The bench's runners: raw Piscina (the baseline) and Troupe, both on the same no-op function.
 * Peers that need an outside server (graphile-worker, BullMQ) are in bench/peers.ts.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Piscina } from 'piscina';
import { createRuntime, type Runtime, type RuntimeOptions } from '../src/index.js';
import type { RunOne } from './measure.js';
import type { NoopOutput } from './noop.agent.js';

/** What one run of one runner is given: the same for every runner in a config. */
export interface RunConfig {
  threads: number;
  slots: number;
  /** Every task the run will submit (warm-up, throughput and latency phases): a queue bound. */
  maxTasks: number;
}

/** One runner, opened fresh for each run. */
export interface Runner {
  one: RunOne;
  /** Waits for work that settled in memory but is not yet durable (timed with the throughput phase). */
  drain?(): Promise<void>;
  close(): Promise<void>;
}

/** A runner kind: its name in the table, what it persists, and how to open it. */
export interface RunnerSpec {
  name: string;
  /** Durability and the settings that matter, printed in the header. */
  settings: string;
  open(config: RunConfig): Promise<Runner>;
}

/** Raw Piscina: one `pool.run()` per task, `concurrentTasksPerWorker` = slots. Nothing persisted. */
export const piscina: RunnerSpec = {
  name: 'piscina',
  settings: 'pool.run() per task, minThreads = maxThreads = threads, concurrentTasksPerWorker = slots; in memory, nothing persisted',
  async open({ threads, slots }) {
    const pool = new Piscina({
      filename: new URL('./raw-worker.js', import.meta.url).href,
      minThreads: threads,
      maxThreads: threads,
      concurrentTasksPerWorker: slots,
      idleTimeout: Number.MAX_SAFE_INTEGER,
    });
    return {
      one: async () => ((await pool.run(null)) as NoopOutput).startedAt,
      close: () => pool.destroy(),
    };
  },
};

/** Troupe with its defaults (fsync on): `submit()` then `wait()` per task, a fresh data dir per run. */
export const troupe: RunnerSpec = troupeWith(
  'troupe',
  'submit() + wait() per task, threads and slotsPerThread as configured, other options default; LMDB in a fresh temp dir, every commit fsynced before its promise resolves',
  {},
);

/** Troupe as {@link troupe}, with some options of its own (a variant the bench compares when asked for by name). */
export function troupeWith(name: string, settings: string, options: Partial<RuntimeOptions>, watch?: (rt: Runtime) => () => void): RunnerSpec {
  return { name, settings, open: (config) => openTroupe(config, options, watch) };
}

/**
 * Troupe with its dashboard open as a browser would hold it: the changes feed the tasks view
 * reads, consumed as it comes, and the overview polled every 2 s.
 */
export const troupeDashboard: RunnerSpec = troupeWith(
  'troupe-dashboard',
  'as troupe, with dashboard: true and a page open on it: GET /api/changes (its live task list) read as it comes, GET /api/overview every 2 s',
  { dashboard: true },
  (rt) => {
    const base = rt.dashboard()!.replace(/\/(#.*)?$/, '');
    const stop = new AbortController();
    void fetch(`${base}/api/changes`, { signal: stop.signal })
      .then(async (res) => {
        for await (const chunk of res.body!) void chunk;
      })
      .catch(() => undefined);
    const poll = setInterval(() => void fetch(`${base}/api/overview`, { signal: stop.signal }).then((res) => res.arrayBuffer()).catch(() => undefined), 2_000);
    return () => {
      clearInterval(poll);
      stop.abort();
    };
  },
);

async function openTroupe({ threads, slots, maxTasks }: RunConfig, options: Partial<RuntimeOptions>, watch?: (rt: Runtime) => () => void): Promise<Runner> {
  const dataDir = mkdtempSync(join(tmpdir(), 'troupe-bench-'));
  try {
    const rt = await createRuntime({
      dataDir,
      threads,
      slotsPerThread: slots,
      maxQueued: Math.max(maxTasks, 100_000),
      logger: false,
      agents: [{ name: 'noop', module: new URL('./noop.agent.js', import.meta.url) }],
      ...options,
    });
    const unwatch = watch?.(rt);
    return {
      one: async () => {
        const task = await rt.submit({ agent: 'noop' });
        const done = await rt.wait(task.id);
        if (done.state !== 'done') throw new Error(`bench task ${task.id} ended ${done.state}: ${done.error?.message}`);
        return (done.output as NoopOutput).startedAt;
      },
      close: async () => {
        unwatch?.();
        try {
          await rt.close();
        } finally {
          rmSync(dataDir, { recursive: true, force: true });
        }
      },
    };
  } catch (error) {
    rmSync(dataDir, { recursive: true, force: true });
    throw error;
  }
}
