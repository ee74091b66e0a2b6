/**
 * `npm run bench`: dispatch throughput of Troupe against raw Piscina, in the same process run,
 * with the same no-op agent function, threads, per-thread concurrency, task count and in-flight
 * window. Troupe runs with durability on (every step fsynced before its promise resolves).
 * With REDIS_URL set, BullMQ runs the same function as a third contender.
 *
 *   node dist/bench/dispatch.js [--tasks 50000] [--threads 2] [--slots 1,16] [--window 2x] [--runs 3] [--json]
 *
 * The machine is shared and noisy: read the medians and the ratio, not a single figure.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Piscina } from 'piscina';
import { createRuntime } from '../src/index.js';
import type { NoopOutput } from './noop.agent.js';

interface Sample {
  submitAt: number;
  startedAt: number;
  settledAt: number;
}

interface RunResult {
  runner: string;
  tasksPerSec: number;
  startP50: number;
  startP99: number;
  settleP50: number;
  settleP99: number;
}

const now = () => performance.timeOrigin + performance.now();

const { values } = parseArgs({
  options: {
    tasks: { type: 'string', default: '50000' },
    threads: { type: 'string', default: '2' },
    slots: { type: 'string', default: '1,16' },
    window: { type: 'string', default: '2x' },
    runs: { type: 'string', default: '3' },
    warmup: { type: 'string', default: '2000' },
    json: { type: 'boolean', default: false },
  },
});
const tasks = Number(values.tasks);
const threads = Number(values.threads);
const runs = Number(values.runs);
const warmup = Number(values.warmup);
const slotsList = values.slots!.split(',').map(Number);
if (![tasks, threads, runs, warmup, ...slotsList].every((n) => Number.isInteger(n) && n >= 0) || tasks < 1 || threads < 1 || runs < 1) {
  throw new Error('bench: --tasks, --threads, --slots, --runs and --warmup take positive integers');
}
const windowOf = (slots: number) => (values.window!.endsWith('x') ? Number(values.window!.slice(0, -1)) * threads * slots : Number(values.window));

/** Keeps `window` tasks in flight until `n` have settled. */
async function drive(n: number, window: number, one: (i: number) => Promise<Sample>): Promise<{ elapsedMs: number; samples: Sample[] }> {
  const samples: Sample[] = new Array(n);
  let next = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: Math.min(window, n) }, async () => {
      while (next < n) {
        const i = next++;
        samples[i] = await one(i);
      }
    }),
  );
  return { elapsedMs: performance.now() - started, samples };
}

function summarize(runner: string, n: number, elapsedMs: number, samples: Sample[]): RunResult {
  const starts = samples.map((s) => s.startedAt - s.submitAt).sort((a, b) => a - b);
  const settles = samples.map((s) => s.settledAt - s.submitAt).sort((a, b) => a - b);
  const q = (xs: number[], p: number) => xs[Math.min(xs.length - 1, Math.floor(p * xs.length))]!;
  return { runner, tasksPerSec: (n / elapsedMs) * 1000, startP50: q(starts, 0.5), startP99: q(starts, 0.99), settleP50: q(settles, 0.5), settleP99: q(settles, 0.99) };
}

async function runPiscina(slots: number): Promise<RunResult> {
  const pool = new Piscina({
    filename: new URL('./raw-worker.js', import.meta.url).href,
    minThreads: threads,
    maxThreads: threads,
    concurrentTasksPerWorker: slots,
    idleTimeout: Number.MAX_SAFE_INTEGER,
  });
  const one = async (i: number): Promise<Sample> => {
    const submitAt = now();
    const output = (await pool.run(i)) as NoopOutput;
    return { submitAt, startedAt: output.startedAt, settledAt: now() };
  };
  await drive(warmup, windowOf(slots), one);
  const { elapsedMs, samples } = await drive(tasks, windowOf(slots), one);
  await pool.destroy();
  return summarize('piscina', tasks, elapsedMs, samples);
}

async function runTroupe(slots: number): Promise<RunResult> {
  const dataDir = mkdtempSync(join(tmpdir(), 'troupe-bench-'));
  const rt = await createRuntime({
    dataDir,
    threads,
    slotsPerThread: slots,
    maxQueued: tasks + warmup,
    logger: false,
    agents: [{ name: 'noop', module: new URL('./noop.agent.js', import.meta.url) }],
  });
  try {
    const one = async (i: number): Promise<Sample> => {
      const submitAt = now();
      const task = await rt.submit({ agent: 'noop', input: i });
      const done = await rt.wait(task.id);
      if (done.state !== 'done') throw new Error(`bench task ${task.id} ended ${done.state}: ${done.error?.message}`);
      return { submitAt, startedAt: (done.output as NoopOutput).startedAt, settledAt: now() };
    };
    await drive(warmup, windowOf(slots), one);
    const { elapsedMs, samples } = await drive(tasks, windowOf(slots), one);
    return summarize('troupe', tasks, elapsedMs, samples);
  } finally {
    await rt.close();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

async function runBullmq(slots: number, redisUrl: string): Promise<RunResult> {
  const { Queue, Worker, QueueEvents } = await import('bullmq');
  const { noop } = await import('./noop.agent.js');
  const url = new URL(redisUrl);
  const connection = { host: url.hostname, port: Number(url.port || 6379), password: url.password || undefined };
  const name = `troupe-bench-${process.pid}-${slots}`;
  const queue = new Queue(name, { connection });
  const events = new QueueEvents(name, { connection });
  // BullMQ's processors run in-process; its concurrency is the in-flight slot count.
  const worker = new Worker(name, async () => noop(), { connection, concurrency: threads * slots });
  await events.waitUntilReady();
  const one = async (i: number): Promise<Sample> => {
    const submitAt = now();
    const job = await queue.add('noop', i, { removeOnComplete: true, removeOnFail: true });
    const output = (await job.waitUntilFinished(events)) as NoopOutput;
    return { submitAt, startedAt: output.startedAt, settledAt: now() };
  };
  try {
    await drive(Math.min(warmup, 500), windowOf(slots), one);
    const { elapsedMs, samples } = await drive(tasks, windowOf(slots), one);
    return summarize('bullmq', tasks, elapsedMs, samples);
  } finally {
    await worker.close();
    await events.close();
    await queue.obliterate({ force: true }).catch(() => undefined);
    await queue.close();
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

function medianResult(results: RunResult[]): RunResult {
  const pick = (k: keyof Omit<RunResult, 'runner'>) => median(results.map((r) => r[k]));
  return { runner: results[0]!.runner, tasksPerSec: pick('tasksPerSec'), startP50: pick('startP50'), startP99: pick('startP99'), settleP50: pick('settleP50'), settleP99: pick('settleP99') };
}

const report: Array<{ config: string; window: number; runs: RunResult[][]; median: RunResult[]; ratio: number; ratios: number[] }> = [];
console.error(`# dispatch bench: ${tasks} no-op tasks, ${threads} threads, ${runs} run(s) per config, ${availableParallelism()} cores, node ${process.version}`);
for (const slots of slotsList) {
  const config = `${threads}x${slots}`;
  const perRun: RunResult[][] = [];
  for (let r = 0; r < runs; r++) {
    const row = [await runPiscina(slots), await runTroupe(slots)];
    if (process.env.REDIS_URL) row.push(await runBullmq(slots, process.env.REDIS_URL));
    perRun.push(row);
    const ratio = row[1]!.tasksPerSec / row[0]!.tasksPerSec;
    console.error(`  ${config} run ${r + 1}: ${row.map((x) => `${x.runner} ${Math.round(x.tasksPerSec)}/s`).join(', ')}, troupe/piscina ${ratio.toFixed(2)}`);
  }
  const med = perRun[0]!.map((_, i) => medianResult(perRun.map((row) => row[i]!)));
  const ratios = perRun.map((row) => row[1]!.tasksPerSec / row[0]!.tasksPerSec);
  report.push({ config, window: windowOf(slots), runs: perRun, median: med, ratio: median(ratios), ratios });
}

if (values.json) {
  console.log(JSON.stringify({ cores: availableParallelism(), tasks, threads, report }, null, 2));
} else {
  const ms = (x: number) => x.toFixed(2);
  console.log(`\nMedians of ${runs} run(s), ${tasks} tasks each, ${availableParallelism()} cores.`);
  console.log('| config (threads x slots) | window | runner | tasks/s | submit->start p50 / p99 ms | submit->settled p50 / p99 ms |');
  console.log('|---|---|---|---|---|---|');
  for (const { config, window, median: med } of report) {
    for (const r of med) console.log(`| ${config} | ${window} | ${r.runner} | ${Math.round(r.tasksPerSec)} | ${ms(r.startP50)} / ${ms(r.startP99)} | ${ms(r.settleP50)} / ${ms(r.settleP99)} |`);
  }
  for (const { config, ratio, ratios } of report) console.log(`troupe/piscina ${config}: ${ratio.toFixed(2)} (median; runs ${ratios.map((x) => x.toFixed(2)).join(', ')})`);
}
