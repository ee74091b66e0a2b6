/**
 * `npm run bench:scale`: Troupe on a big data dir, and under a steady load with a short retention.
 *
 * Reads: for each N in `--settled`, a child (scale-seed.ts) seeds N settled tasks and `--queued`
 * queued ones, then is killed with SIGKILL. This process opens the data dir again and reports the
 * open, the time to the first dispatch, the first `stats()` (it counts the stored settled tasks),
 * and (once the backlog has drained) the median of `--reps`
 * runs of each read: `get`, the first page of `list` by state (done, and failed: one in 1,000),
 * by label (one in 1,000 has `team: red`), of `list({ parentId })`, `stats()`, and `events({ taskId })` for the last task settled (read until
 * it settles: the whole log); then the data dir's size, RSS and heap.
 *
 * Steady load: for `--steady-seconds`, no-op tasks submitted at `--rate` per second (at most
 * `--window` in flight), with every settled task and event kept `--retention-ms`, swept every
 * `--sweep-ms`; every `--report-seconds` it prints data.mdb's size, the tasks stored and removed,
 * tasks/s, and RSS split into file-backed pages (LMDB's map) and anonymous memory. The rate is
 * below saturation on purpose: a removal costs the main thread about what a submit and a settle
 * do, so a runtime at full speed has nothing left to remove with.
 *
 *   node --expose-gc dist/bench/scale.js [--settled 0,1000000,2000000] [--queued 10000] [--reps 20]
 *     [--steady-seconds 300] [--report-seconds 60] [--retention-ms 30000] [--sweep-ms 5000] [--rate 10000] [--window 1024]
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { benchArgs } from './args.js';
import { builtinAgent, createRuntime, type Runtime } from '../src/index.js';
import { median } from './measure.js';

const { values, number } = benchArgs('npm run bench:scale', 'Submit and settle cost with millions of settled tasks kept; see bench/scale.ts.', {
    settled: { type: 'string', default: '0,1000000,2000000' },
    queued: { type: 'string', default: '10000' },
    reps: { type: 'string', default: '20' },
    'steady-seconds': { type: 'string', default: '300' },
    'report-seconds': { type: 'string', default: '60' },
    'retention-ms': { type: 'string', default: '30000' },
    'sweep-ms': { type: 'string', default: '5000' },
    window: { type: 'string', default: '1024' },
    rate: { type: 'string', default: '10000' },
  },);
const num = (name: Parameters<typeof number>[0]) => number(name, 0);
const sizes = values.settled!.split(',').filter(Boolean).map(Number);
const queued = num('queued');
const reps = Math.max(1, num('reps'));
const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) console.error('run with node --expose-gc for exact heap figures');
const mb = (bytes: number) => (bytes / 2 ** 20).toFixed(0);
const ms = (x: number) => (x < 10 ? x.toFixed(2) : x.toFixed(0));
const noop = { name: 'noop', module: new URL('./noop.agent.js', import.meta.url) };

console.log(`# npm run bench:scale: ${availableParallelism()} cores, node ${process.version}; reads are medians of ${reps}, in ms`);
if (sizes.length > 0) {
  console.log(`\n## Reads on a reopened data dir (after kill -9, with ${queued.toLocaleString('en-US')} queued tasks)`);
  console.log('| settled | seed (s) | open | open → first dispatch | first stats() | get | list done | list failed | list label | list parentId | stats() | events({taskId}) | data dir (MB) | RSS (MB) | heap (MB) |');
  console.log('|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|');
}
for (const n of sizes) {
  const dataDir = mkdtempSync(join(tmpdir(), 'troupe-scale-'));
  try {
    const seed = spawn(process.execPath, [new URL('./scale-seed.js', import.meta.url).pathname, dataDir, String(n), String(queued)], { stdio: ['ignore', 'pipe', 'inherit'] });
    const [seedMs, newest] = await new Promise<[number, string]>((resolve) =>
      seed.stdout!.on('data', (chunk: Buffer) => {
        const ready = /ready (\d+) (\S+)/.exec(chunk.toString());
        if (ready) resolve([Number(ready[1]), ready[2]!]);
      }),
    );
    seed.kill('SIGKILL');
    await once(seed, 'exit');
    const t0 = performance.now();
    // `work` is fast now, so the backlog drains.
    const rt = await createRuntime({ dataDir, logger: false, threads: 2, slotsPerThread: 16, maxQueued: queued + 10_000, retention: false, agents: [noop, builtinAgent('fail'), { ...builtinAgent('echo'), name: 'work' }] });
    const opened = performance.now();
    const first = await new Promise<number>((resolve) => rt.on('task.started', () => resolve(performance.now())));
    // The first stats() counts the stored settled tasks (from the retention indexes); later ones read counters.
    const statsAt = performance.now();
    rt.stats();
    const firstStats = performance.now() - statsAt;
    while ((rt.stats().tasks.queued ?? 0) + (rt.stats().tasks.running ?? 0) > 0) await new Promise((resolve) => setTimeout(resolve, 20));
    const reads = await measureReads(rt, reps, newest === '-' ? undefined : newest);
    gc?.();
    const { rss, heapUsed } = process.memoryUsage();
    console.log(
      `| ${n.toLocaleString('en-US')} | ${(seedMs / 1000).toFixed(0)} | ${ms(opened - t0)} | ${ms(first - t0)} | ${ms(firstStats)} | ${ms(reads.get)} | ${ms(reads.listDone)} | ${ms(reads.listFailed)} | ${ms(reads.listLabel)} | ${ms(reads.listChildren)} | ${ms(reads.stats)} | ${ms(reads.events)} | ${mb(statSync(join(dataDir, 'data.mdb')).size)} | ${mb(rss)} | ${mb(heapUsed)} |`,
    );
    await rt.close();
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
}

/** Median latencies (ms) of the reads a user makes, on the tasks there are. */
async function measureReads(rt: Runtime, times: number, newestId: string | undefined): Promise<Record<'get' | 'listDone' | 'listFailed' | 'listLabel' | 'listChildren' | 'stats' | 'events', number>> {
  const newest = newestId === undefined ? (await rt.list({ state: 'done', limit: 1 })).tasks[0] : await rt.get(newestId);
  const parent = (await rt.list({ state: 'done', limit: 3 })).tasks[1];
  const time = async (fn: () => unknown): Promise<number> => {
    const out: number[] = [];
    for (let i = 0; i < times; i++) {
      const t = performance.now();
      await fn();
      out.push(performance.now() - t);
    }
    return median(out);
  };
  return {
    get: newest ? await time(() => rt.get(newest.id)) : NaN,
    listDone: await time(() => rt.list({ state: 'done', limit: 100 })),
    listFailed: await time(() => rt.list({ state: 'failed', limit: 100 })),
    listLabel: await time(() => rt.list({ labels: { team: 'red' }, limit: 100 })),
    listChildren: parent ? await time(() => rt.list({ parentId: parent.id, limit: 100 })) : NaN,
    stats: await time(() => rt.stats()),
    events: newest
      ? await time(async () => {
          for await (const e of rt.events({ taskId: newest.id })) if (e.type === 'task.done' || e.type === 'task.failed') break;
        })
      : NaN,
  };
}

const steadySeconds = num('steady-seconds');
if (steadySeconds > 0) await steady();

/** The steady-load run (see the module comment). */
async function steady(): Promise<void> {
  const retentionMs = num('retention-ms');
  const sweepMs = Math.max(1, num('sweep-ms'));
  const reportMs = num('report-seconds') * 1000;
  const window = Math.max(1, num('window'));
  const rate = Math.max(1, num('rate'));
  const dataDir = mkdtempSync(join(tmpdir(), 'troupe-steady-'));
  console.log(`\n## Steady load: ${rate.toLocaleString('en-US')} no-op tasks/s (at most ${window} in flight) for ${steadySeconds} s; done and failed tasks and events kept ${retentionMs} ms, swept every ${sweepMs} ms`);
  console.log('| at (s) | settled | tasks/s | data.mdb (MB) | tasks stored | removed by retention | events removed | RSS file / anon (MB) | heap (MB) |');
  console.log('|---|---|---|---|---|---|---|---|---|');
  const rt = await createRuntime({ dataDir, logger: false, threads: 2, slotsPerThread: 16, agents: [noop], retention: { done: retentionMs, failed: retentionMs, eventsMs: retentionMs, sweepMs } });
  try {
    const started = performance.now();
    let settled = 0;
    let stop = false;
    let lastSettled = 0;
    let lastAt = started;
    const report = () => {
      const now = performance.now();
      const stats = rt.stats();
      const stored = Object.values(stats.tasks).reduce((a, b) => a + (b ?? 0), 0);
      const { heapUsed } = process.memoryUsage();
      console.log(
        `| ${((now - started) / 1000).toFixed(0)} | ${settled.toLocaleString('en-US')} | ${Math.round(((settled - lastSettled) / (now - lastAt)) * 1000).toLocaleString('en-US')} | ${mb(statSync(join(dataDir, 'data.mdb')).size)} | ${stored.toLocaleString('en-US')} | ${stats.retention!.removed.toLocaleString('en-US')} | ${stats.retention!.eventsRemoved.toLocaleString('en-US')} | ${rssSplit()} | ${mb(heapUsed)} |`,
      );
      lastSettled = settled;
      lastAt = now;
    };
    const reporter = setInterval(report, reportMs);
    const ends = setTimeout(() => (stop = true), steadySeconds * 1000);
    // Open loop at `rate`, released by a 1 ms timer, never more than `window` in flight.
    await new Promise<void>((resolve, reject) => {
      let submitted = 0;
      let inFlight = 0;
      const tick = () => {
        if (stop) return inFlight === 0 ? resolve() : setTimeout(tick, 1);
        const due = Math.floor(((performance.now() - started) / 1000) * rate);
        for (; submitted < due && inFlight < window; submitted++) {
          inFlight++;
          rt.submit({ agent: 'noop' })
            .then((task) => rt.wait(task.id))
            .then(() => {
              inFlight--;
              settled++;
            }, reject);
        }
        setTimeout(tick, 1);
      };
      tick();
    });
    clearInterval(reporter);
    clearTimeout(ends);
    report();
  } finally {
    await rt.close();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

/** The process's resident memory split into file-backed pages (LMDB's map) and anonymous memory, from /proc (Linux). */
function rssSplit(): string {
  try {
    const status = readFileSync('/proc/self/status', 'utf8');
    const kb = (field: string) => Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(status)?.[1] ?? NaN);
    return `${Math.round(kb('RssFile') / 1024)} / ${Math.round(kb('RssAnon') / 1024)}`;
  } catch {
    return `${mb(process.memoryUsage().rss)} (total)`;
  }
}
