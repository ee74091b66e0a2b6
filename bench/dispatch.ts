/**
 * `npm run bench`: raw Piscina against Troupe in one process run, on the same no-op function, with
 * the same threads, slots per thread, task count and in-flight window, at 2 × 1, 2 × 4 and 2 × 16.
 * With PG_URL it adds graphile-worker on that database; with REDIS_URL, BullMQ with AOF (on a
 * redis-server the bench starts itself unless `--redis url`). Each run opens every runner fresh, and
 * every other run goes through the runners in reverse order, so that none always runs first (on a
 * fresh heap and a quiet machine) or right after another runner's garbage.
 *
 *   node dist/bench/dispatch.js [--tasks 100000] [--warmup 5000] [--window 1024] [--threads 2]
 *     [--slots 1,4,16] [--runs 3] [--latency-seconds 3] [--latency-warmup-seconds 1] [--load 0.5]
 *     [--aof always[,everysec]]
 *     [--redis own|url] [--graphile-local-queue 500] [--runners piscina,troupe,graphile-worker,bullmq[,troupe-retention-off][,troupe-dashboard]]
 *     [--json] [--settings]
 *
 * `--settings` prints every setting the run would use (with `--json`, as JSON) and runs nothing.
 *
 * What each figure is, per runner and run:
 * - tasks/s: closed loop. After `--warmup` tasks, `--tasks` tasks with `--window` of them in flight
 *   (submitted, not yet settled); a settle submits the next. Tasks divided by the time from the
 *   first submit until the last task settled (for graphile-worker, until its jobs table is empty).
 * - × piscina: the runner's tasks/s over raw Piscina's in the same run; the median of the runs.
 * - main µs/task and KB/task: over the throughput phase, divided by `--tasks`. CPU time of the
 *   main thread alone, and bytes allocated on the main isolate's heap (see bench/measure.ts for
 *   both sources). Agent threads, lmdb's write thread, V8's helper threads, Postgres and Redis are
 *   not counted; graphile-worker and BullMQ run the no-op on the main thread, so theirs includes it.
 *   `main busy` is the event-loop utilization over the same phase.
 * - process µs/task and cores: the CPU time of the whole process (every thread, user and system:
 *   the main thread, agent threads, lmdb's writer, V8's and libuv's helpers) over the throughput
 *   phase, per task, and the same time over the phase's wall time: how many of the machine's
 *   cores the runner kept busy. A runner at the same process µs/task as another that uses fewer
 *   cores is waiting, not working. Postgres and Redis are other processes: not counted.
 * - latency: open loop at half load, after the throughput phase on the same open runner. Tasks are
 *   submitted on a fixed schedule at `--load` × that run's tasks/s, whatever the backlog: for
 *   `--latency-warmup-seconds` unmeasured, so that what the throughput phase left behind (Troupe
 *   writing the records of the tasks it settled last, the garbage of either) is not timed as
 *   latency at this load, then for `--latency-seconds` measured, with no gap. Submit → start is
 *   from the submit call to the no-op's first line (epoch clocks of the two threads), submit →
 *   settled from the submit call to the settle seen by the caller.
 *   p50 and p99 per run, then the median over runs. `offered → achieved` shows whether the
 *   schedule kept up (achieved counts submits over the time from the first to the last).
 * - full GCs at half load: the main isolate's mark-compacts during the latency phase (its
 *   unmeasured second included), per run: each holds the main thread for milliseconds, so a run
 *   with many has the p99 they make (a runner whose per-task objects V8 pretenured makes many).
 *
 * The machine is shared and noisy: read the medians and the ratio, not a single figure.
 */
import { availableParallelism, cpus } from 'node:os';
import { benchArgs } from './args.js';
import { ALLOC_SOURCE, PROCESS_CPU_SOURCE, countFullGcs, cpuSource, drive, median, meterMainThread, openLoop, type Latency } from './measure.js';
import { bullmq, graphileWorker, startRedis, type OwnRedis } from './peers.js';
import { withUser } from './pg-url.js';
import { piscina, troupe, troupeDashboard, troupeWith, type RunnerSpec } from './runners.js';

const { values, int, number, fail } = benchArgs('node dist/bench/dispatch.js', 'Raw Piscina against Troupe (and graphile-worker with PG_URL, BullMQ with REDIS_URL) on the same no-op; see bench/dispatch.ts.', {
  tasks: { type: 'string', default: '100000' },
  warmup: { type: 'string', default: '5000' },
  window: { type: 'string', default: '1024' },
  threads: { type: 'string', default: '2' },
  slots: { type: 'string', default: '1,4,16' },
  runs: { type: 'string', default: '3' },
  'latency-seconds': { type: 'string', default: '3' },
  'latency-warmup-seconds': { type: 'string', default: '1' },
  load: { type: 'string', default: '0.5' },
  aof: { type: 'string', default: 'always' },
  redis: { type: 'string', default: 'own' },
  'graphile-local-queue': { type: 'string', default: '500' },
  runners: { type: 'string' },
  json: { type: 'boolean', default: false },
  settings: { type: 'boolean', default: false },
});
const tasks = int('tasks', 1);
const warmup = int('warmup', 0);
const window = int('window', 1);
const threads = int('threads', 1);
const runs = int('runs', 1);
const latencySeconds = number('latency-seconds', 0);
const latencyWarmupSeconds = number('latency-warmup-seconds', 0);
const load = number('load', 0);
const slotsList = values.slots!.split(',').map(Number);
if (!slotsList.every((n) => Number.isSafeInteger(n) && n >= 1)) fail('--slots takes positive integers, comma-separated');
if (!(latencySeconds > 0) || !(load > 0 && load <= 1)) fail('--latency-seconds must be > 0 and --load in (0, 1]');
const aofModes = values.aof!.split(',') as Array<'always' | 'everysec'>;
if (!aofModes.every((m) => m === 'always' || m === 'everysec')) fail('--aof takes always and/or everysec');
if (values.redis !== 'own' && values.redis !== 'url') fail('--redis is own or url');

const specs: RunnerSpec[] = [piscina, troupe];
let ownRedis: OwnRedis | undefined;
if (process.env.PG_URL) specs.push(await graphileWorker(withUser(process.env.PG_URL), int('graphile-local-queue', 0)));
if (process.env.REDIS_URL && values.redis === 'url') specs.push(await bullmq(process.env.REDIS_URL, `at REDIS_URL (${process.env.REDIS_URL}), its settings unchanged`));
if (process.env.REDIS_URL && values.redis === 'own') {
  ownRedis = await startRedis();
  const url = `redis://127.0.0.1:${ownRedis.port}`;
  for (const mode of aofModes) specs.push(await bullmq(url, `started by the bench on ${url} in a temp dir (RDB off; REDIS_URL only enables this runner)`, mode));
}
const only = values.runners?.split(',');
// Asked for by name only: Troupe with nothing swept, to show what retention (on by default) costs.
if (only?.includes('troupe-retention-off')) specs.push(troupeWith('troupe-retention-off', 'as troupe, with retention: false (nothing swept, no sweep timer)', { retention: false }));
if (only?.includes('troupe-dashboard')) specs.push(troupeDashboard);
const chosen = only ? specs.filter((s) => only.some((o) => s.name.startsWith(o))) : specs;
if (chosen[0]?.name !== 'piscina') fail('--runners must include piscina (the baseline of the ratio)');

const settings = {
  tasks,
  warmup,
  window,
  threads,
  slots: slotsList,
  runs,
  latencySeconds,
  latencyWarmupSeconds,
  load,
  node: process.version,
  cores: availableParallelism(),
  cpu: cpus()[0]?.model ?? 'unknown',
  mainCpu: cpuSource(),
  allocated: ALLOC_SOURCE,
  processCpu: PROCESS_CPU_SOURCE,
  runners: Object.fromEntries(chosen.map((s) => [s.name, s.settings])),
};

interface RunResult {
  runner: string;
  tasksPerSec: number;
  ratio: number;
  cpuUsPerTask: number;
  kbPerTask: number;
  busy: number;
  /** Whole-process CPU µs per task over the throughput phase (every thread). */
  processUsPerTask: number;
  /** Whole-process CPU time over the throughput phase's wall time: cores kept busy. */
  cores: number;
  latency: Latency;
  /** Full GCs of the main isolate during the latency phase (its unmeasured second included). */
  fullGcs: number;
}

/** One runner, one run: warm-up, metered throughput phase, then the half-load latency phase. */
async function runOnce(spec: RunnerSpec, slots: number): Promise<Omit<RunResult, 'ratio'>> {
  const maxTasks = warmup + tasks;
  const runner = await spec.open({ threads, slots, maxTasks });
  try {
    await drive(warmup, window, runner.one);
    await runner.drain?.();
    const stop = meterMainThread();
    const started = performance.now();
    await drive(tasks, window, runner.one);
    await runner.drain?.();
    const elapsedMs = performance.now() - started;
    const use = stop();
    const tasksPerSec = (tasks / elapsedMs) * 1000;
    const fullGcs = countFullGcs();
    const latency = await openLoop(load * tasksPerSec, latencySeconds, runner.one, latencyWarmupSeconds);
    return {
      runner: spec.name,
      tasksPerSec,
      cpuUsPerTask: use.cpuUs / tasks,
      kbPerTask: use.allocatedBytes / 1024 / tasks,
      busy: use.busy,
      processUsPerTask: use.processCpuUs / tasks,
      cores: use.processCpuUs / 1000 / elapsedMs,
      latency,
      fullGcs: fullGcs(),
    };
  } finally {
    await runner.close();
  }
}

const fmt = (x: number, digits = 0) => x.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
const header = [
  `# npm run bench: ${fmt(tasks)} no-op tasks per runner and run after ${fmt(warmup)} warm-up, window ${fmt(window)} for every runner`,
  `# configs ${slotsList.map((s) => `${threads}×${s}`).join(', ')} (threads × slots per thread; graphile-worker and BullMQ concurrency = threads × slots), ${runs} run(s) each, medians; runners in the order listed below in odd runs, reversed in even ones`,
  `# latency: open loop at ${load} × each run's tasks/s, ${latencyWarmupSeconds} s unmeasured to reach its steady state, then ${latencySeconds} s measured`,
  `# node ${process.version}, ${availableParallelism()} cores (os.availableParallelism), ${settings.cpu}`,
  `# main µs/task: ${settings.mainCpu}`,
  `# KB/task: ${ALLOC_SOURCE}`,
  `# process µs/task, cores: ${PROCESS_CPU_SOURCE}`,
  ...chosen.map((s) => `# ${s.name}: ${s.settings}`),
];
if (values.settings) {
  console.log(values.json ? JSON.stringify({ settings }, null, 2) : header.join('\n'));
  await ownRedis?.stop();
  process.exit(0);
}
if (!values.json) console.log(header.join('\n'));
else console.error(header.join('\n'));

const report: Array<{ config: string; slots: number; seconds: number; runs: RunResult[][]; median: RunResult[] }> = [];
try {
  for (const slots of slotsList) {
    const config = `${threads}×${slots}`;
    const configStarted = performance.now();
    const perRun: RunResult[][] = [];
    for (let r = 0; r < runs; r++) {
      const results = new Map<RunnerSpec, Omit<RunResult, 'ratio'>>();
      for (const spec of r % 2 === 0 ? chosen : [...chosen].reverse()) results.set(spec, await runOnce(spec, slots));
      const baseline = results.get(chosen[0]!)!.tasksPerSec;
      const row: RunResult[] = chosen.map((spec) => ({ ...results.get(spec)!, ratio: results.get(spec)!.tasksPerSec / baseline }));
      perRun.push(row);
      console.error(`  ${config} run ${r + 1}: ${row.map((x) => `${x.runner} ${fmt(x.tasksPerSec)}/s (×${x.ratio.toFixed(2)}, ${x.cores.toFixed(2)} cores; half load: p99 start ${x.latency.startP99.toFixed(2)} ms, ${x.fullGcs} full GCs)`).join(', ')}`);
    }
    const med = chosen.map((_, i) => {
      const of = (pick: (x: RunResult) => number) => median(perRun.map((row) => pick(row[i]!)));
      const lat = (k: keyof Latency) => of((x) => x.latency[k]);
      return {
        runner: chosen[i]!.name,
        tasksPerSec: of((x) => x.tasksPerSec),
        ratio: of((x) => x.ratio),
        cpuUsPerTask: of((x) => x.cpuUsPerTask),
        kbPerTask: of((x) => x.kbPerTask),
        busy: of((x) => x.busy),
        processUsPerTask: of((x) => x.processUsPerTask),
        cores: of((x) => x.cores),
        fullGcs: of((x) => x.fullGcs),
        latency: { offeredPerSec: lat('offeredPerSec'), achievedPerSec: lat('achievedPerSec'), tasks: lat('tasks'), startP50: lat('startP50'), startP99: lat('startP99'), settleP50: lat('settleP50'), settleP99: lat('settleP99') },
      };
    });
    report.push({ config, slots, seconds: (performance.now() - configStarted) / 1000, runs: perRun, median: med });
    if (!values.json) printConfig(report.at(-1)!);
  }
} finally {
  await ownRedis?.stop();
}
if (values.json) console.log(JSON.stringify({ settings, report }, null, 2));

function printConfig({ config, seconds, runs: perRun, median: med }: (typeof report)[number]): void {
  const ms = (x: number) => (x < 10 ? x.toFixed(2) : x.toFixed(1));
  console.log(`\n## ${config} (threads × slots), window ${fmt(window)}, ${fmt(tasks)} tasks, ${runs} run(s) in ${fmt(seconds)} s`);
  console.log('| runner | tasks/s (median) | tasks/s (runs) | × piscina | main µs/task | KB/task | main busy | process µs/task, cores | half load: offered → achieved /s | submit→start p50 / p99 ms | submit→settled p50 / p99 ms | full GCs at half load (runs) |');
  console.log('|---|---|---|---|---|---|---|---|---|---|---|---|');
  med.forEach((m, i) => {
    const each = perRun.map((row) => fmt(row[i]!.tasksPerSec)).join(', ');
    const l = m.latency;
    console.log(
      `| ${m.runner} | ${fmt(m.tasksPerSec)} | ${each} | ${m.ratio.toFixed(2)} | ${m.cpuUsPerTask.toFixed(1)} | ${m.kbPerTask.toFixed(1)} | ${Math.round(m.busy * 100)}% | ${m.processUsPerTask.toFixed(1)}, ${m.cores.toFixed(2)} | ` +
        `${fmt(l.offeredPerSec)} → ${fmt(l.achievedPerSec)} | ${ms(l.startP50)} / ${ms(l.startP99)} | ${ms(l.settleP50)} / ${ms(l.settleP99)} | ${perRun.map((row) => row[i]!.fullGcs).join(', ')} |`,
    );
  });
}
