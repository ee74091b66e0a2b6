/**
 * `npm run bench:cluster` (issue #15): how fast the PostgreSQL task queue drains, with 1, 2 and 3
 * node processes on one database, against graphile-worker on the same server in the same run.
 * It measures two kinds of node: runtimes on PostgreSQL (`createRuntime({ store: { postgres } })`,
 * bench/cluster-runtime.ts: one thread with `--concurrency` slots each, other options default, the
 * no-op on their thread), and the queue core alone (src/store/postgres: claims and settles,
 * bench/cluster-node.ts: the no-op inline, as graphile-worker runs its jobs).
 *
 *   PG_URL=postgres://127.0.0.1:5432/test node dist/bench/cluster.js [--tasks 20000]
 *     [--warmup 3000] [--nodes 1,2,3] [--kinds runtime,queue] [--concurrency 32] [--claim 500]
 *     [--runs 3] [--graphile-local-queue 500] [--if-pg]
 *
 * `npm run bench` (bench/all.ts) runs it after bench/dispatch.ts with `--if-pg`: only when PG_URL
 * is set, as it adds graphile-worker to that bench only then.
 *
 * Each run and runner gets a database of its own (created from PG_URL's server, dropped after).
 * Each runner first drains `--warmup` tasks (not timed), as bench/dispatch.ts warms up: the node
 * processes of a run are new, and without it a run of a few thousand tasks timed their JIT's
 * warm-up (three cold processes at three nodes) against graphile-worker running in this process,
 * warm from its first run on. Then, with no claim under way (Troupe: the cluster frozen;
 * graphile-worker: its runner stopped), the timed tasks are enqueued (not timed), and the clock
 * runs from the nodes' restart (the unfreeze; a new `run()`) until the last task is done (Troupe:
 * no task left queued or running, then every task checked `done`; graphile-worker: its jobs
 * table empty).
 * A runtime claims as its defaults say (its free slots plus its start-ahead window, up to `prefetch`: 1,024). A
 * queue core node claims up to `--claim` tasks at a time (default 500: graphile-worker's local queue,
 * which fetches and locks that many jobs ahead of its slots, as the runtime starts attempts ahead
 * of its slots), runs their no-ops inline one claim after another, and settles each claim in one
 * transaction, up to three in flight; graphile-worker runs one worker with `--concurrency`, batched
 * completion and its local queue of `--graphile-local-queue`.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { availableParallelism } from 'node:os';
import { withUser } from './pg-url.js';
import { benchArgs } from './args.js';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { migrate } from '../src/store/postgres/migrations.js';
import { submitTasks } from '../src/store/postgres/queue.js';
import { freezeCluster, unfreezeCluster } from '../src/store/postgres/control.js';
import { median } from './measure.js';
import { noop } from './noop.agent.js';

const { values, int, fail } = benchArgs('npm run bench:cluster', 'Troupe runtime and queue core nodes against graphile-worker on one PostgreSQL (PG_URL or TROUPE_PG_URL); see bench/cluster.ts.', {
  tasks: { type: 'string', default: '20000' },
  warmup: { type: 'string', default: '3000' },
  nodes: { type: 'string', default: '1,2,3' },
  kinds: { type: 'string', default: 'runtime,queue' },
  concurrency: { type: 'string', default: '32' },
  claim: { type: 'string', default: '500' },
  runs: { type: 'string', default: '3' },
  'graphile-local-queue': { type: 'string', default: '500' },
  'if-pg': { type: 'boolean', default: false },
});
if (values['if-pg'] && !process.env.PG_URL) {
  console.log('\n# cluster bench (bench/cluster.ts): skipped, PG_URL is not set');
  process.exit(0);
}
const tasks = int('tasks', 1);
const warmup = int('warmup', 0);
const concurrency = int('concurrency', 1);
const claim = int('claim', 1);
const runs = int('runs', 1);
const localQueue = int('graphile-local-queue', 0);
const nodeCounts = values.nodes!.split(',').map(Number);
if (!nodeCounts.every((n) => Number.isSafeInteger(n) && n >= 1)) fail('--nodes takes positive integers, comma-separated');
const kinds = values.kinds!.split(',');
if (!kinds.every((k) => k === 'runtime' || k === 'queue')) fail('--kinds takes runtime and/or queue');
const url = withUser(process.env.PG_URL ?? process.env.TROUPE_PG_URL ?? 'postgres://127.0.0.1:5432/test');

let sequence = 0;

/** A database of its own for one runner's run, dropped by `drop`. */
async function scratch(): Promise<{ url: string; drop(): Promise<void> }> {
  const name = `troupe_bench_cluster_${process.pid}_${sequence++}`;
  const admin = new pg.Client({ connectionString: url });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  const scratchUrl = new URL(url);
  scratchUrl.pathname = `/${name}`;
  return {
    url: scratchUrl.href,
    async drop() {
      const again = new pg.Client({ connectionString: url });
      await again.connect();
      await again.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await again.end();
    },
  };
}

/**
 * A pool of the bench's own on a scratch database whose idle connections may end under it: the
 * DROP at the end of a run terminates what was not closed yet, and so can another client of the
 * server (tests that run beside this bench terminate backends). An idle connection's error is the
 * pool's to drop the connection, not the bench's to end on: without a listener it was an unhandled
 * 'error' that ended the bench (seen with graphile-worker's pools, and once in CI with the runtime
 * runs' own pool, by an administrator's termination whose origin was not found).
 */
function benchPool(connectionString: string, max: number): pg.Pool {
  const pool = new pg.Pool({ connectionString, max });
  pool.on('error', () => undefined);
  pool.on('connect', (client) => client.on('error', () => undefined));
  return pool;
}

/** Submits `n` no-op tasks with ids `<prefix>-<i>`, a thousand per transaction. */
async function enqueue(pool: pg.Pool, prefix: string, n: number): Promise<void> {
  for (let i = 0; i < n; i += 1_000) await submitTasks(pool, Array.from({ length: Math.min(1_000, n - i) }, (_, k) => ({ id: `${prefix}-${i + k}`, agent: 'noop' })));
}

/** No task is queued or running. */
async function idle(pool: pg.Pool): Promise<boolean> {
  return !(await pool.query("SELECT EXISTS (SELECT 1 FROM troupe_tasks WHERE state = 'queued') OR EXISTS (SELECT 1 FROM troupe_tasks WHERE state = 'running') AS busy")).rows[0].busy;
}

/** Polls until `done` says so (every 5 ms: the bench's clock, not a test's wait). */
async function until(done: () => Promise<boolean>): Promise<void> {
  while (!(await done())) await new Promise((resolve) => setTimeout(resolve, 5));
}

/** `nodes` processes of one kind: runtimes (bench/cluster-runtime.ts) or queue core nodes (bench/cluster-node.ts). */
async function troupe(kind: 'runtime' | 'queue', nodes: number): Promise<number> {
  const db = await scratch();
  const pool = benchPool(db.url, 2);
  const children: ChildProcessWithoutNullStreams[] = [];
  try {
    await migrate(pool);
    await enqueue(pool, 'warmup', warmup);
    const args = kind === 'runtime' ? [fileURLToPath(new URL('./cluster-runtime.js', import.meta.url)), db.url, String(concurrency)] : [fileURLToPath(new URL('./cluster-node.js', import.meta.url)), db.url, 'noop', String(claim)];
    for (let i = 0; i < nodes; i++) {
      const child = spawn(process.execPath, args, { stdio: ['pipe', 'pipe', 'pipe'] });
      child.stderr.on('data', (chunk: Buffer) => process.stderr.write(chunk));
      children.push(child);
    }
    await Promise.all(children.map(async (child) => {
      for await (const line of createInterface({ input: child.stdout })) if (line === 'ready') return;
      throw new Error(`a ${kind} node exited before it was ready`);
    }));
    for (const child of children) child.stdin.write('start\n');
    await until(() => idle(pool));
    // The nodes stay up, frozen out of claiming while the timed tasks go in; the unfreeze's NOTIFY
    // wakes them (a queue core node looks again every 2 ms).
    await freezeCluster(pool);
    await enqueue(pool, 'bench', tasks);
    const started = performance.now();
    await unfreezeCluster(pool);
    // The clock's poll asks whether any task is queued or running, through their partial indexes,
    // stopping at the first: it counted them before, and counting the thousands still queued every
    // 5 ms took a share of the server (1.6 ms a poll, more than the runtime's claims, by
    // pg_stat_statements) from the nodes it measures. graphile-worker's poll asks the same way.
    // That every task is done is checked once the clock has stopped.
    await until(() => idle(pool));
    const seconds = (performance.now() - started) / 1000;
    const done = Number((await pool.query("SELECT count(*) AS n FROM troupe_tasks WHERE state = 'done'")).rows[0].n);
    if (done !== tasks + warmup) throw new Error(`bench:cluster: ${tasks + warmup - done} of ${tasks + warmup} tasks ended other than done`);
    for (const child of children) child.stdin.write('stop\n');
    await Promise.all(children.map((child) => once(child, 'exit')));
    return tasks / seconds;
  } finally {
    for (const child of children) child.kill('SIGKILL');
    await pool.end();
    await db.drop();
  }
}

/** graphile-worker: one worker with `concurrency`, batched completion, its local queue. */
async function graphileWorker(): Promise<number> {
  const gw = await import('graphile-worker');
  const db = await scratch();
  const logger = new gw.Logger(() => (level, message) => {
    if (String(level) === 'error') console.error(`graphile-worker: ${message}`);
  });
  // One pool of the bench's own for the utils and the worker, ended before the database is dropped
  // (graphile-worker's own pools had no listener for the DROP's termination: see benchPool).
  const pgPool = benchPool(db.url, Math.max(10, concurrency + 1));
  const utils = await gw.makeWorkerUtils({ pgPool, logger });
  try {
    await utils.migrate();
    const add = async (n: number) => {
      for (let i = 0; i < n; i += 1_000) await utils.addJobs(Array.from({ length: Math.min(1_000, n - i) }, () => ({ identifier: 'noop', payload: {} })));
    };
    const start = () =>
      gw.run({
        pgPool,
        logger,
        concurrency,
        noHandleSignals: true,
        taskList: { noop: () => void noop() },
        preset: { worker: { ...(localQueue > 0 ? { localQueue: { size: localQueue } } : {}), completeJobBatchDelay: 0, failJobBatchDelay: 0 } },
      });
    const drained = () => until(async () => utils.withPgClient(async (client) => !(await client.query('SELECT EXISTS (SELECT 1 FROM graphile_worker._private_jobs) AS busy')).rows[0].busy));
    await add(warmup);
    const warming = await start();
    await drained();
    await warming.stop();
    await add(tasks);
    const started = performance.now();
    const runner = await start();
    await drained();
    const seconds = (performance.now() - started) / 1000;
    await runner.stop();
    return tasks / seconds;
  } finally {
    await utils.release();
    await pgPool.end();
    await db.drop();
  }
}

const version = (createRequire(import.meta.url)('graphile-worker/package.json') as { version: string }).version;
const runners: Array<{ name: string; run: () => Promise<number> }> = [
  { name: `graphile-worker ${version}`, run: graphileWorker },
  ...kinds.flatMap((kind) => nodeCounts.map((n) => ({ name: `troupe ${kind === 'runtime' ? 'runtime' : 'queue core'}, ${n} node${n === 1 ? '' : 's'}`, run: () => troupe(kind as 'runtime' | 'queue', n) }))),
];
console.log(`# npm run bench:cluster: ${warmup.toLocaleString('en-US')} no-op tasks drained to warm up (not timed), then ${tasks.toLocaleString('en-US')} enqueued with no claim under way (not timed), then drained (timed); runtime nodes: one thread, ${concurrency} slots, other options default; queue core nodes claim up to ${claim} at a time; graphile-worker: one worker, concurrency ${concurrency}, local queue ${localQueue > 0 ? localQueue : 'off'}`);
console.log(`# ${availableParallelism()} cores (os.availableParallelism), node ${process.version}; PostgreSQL at ${new URL(url).host}, the same server for every runner; ${runs} run(s), runners in reverse order in even runs`);
const results = new Map<string, number[]>(runners.map((r) => [r.name, []]));
for (let r = 0; r < runs; r++) {
  for (const runner of r % 2 === 0 ? runners : [...runners].reverse()) {
    const perSec = await runner.run();
    results.get(runner.name)!.push(perSec);
    console.error(`  run ${r + 1}: ${runner.name} ${Math.round(perSec).toLocaleString('en-US')}/s`);
  }
}
const baseline = results.get(runners[0]!.name)!;
console.log('\n| runner | tasks/s (median) | tasks/s (runs) | × graphile-worker (median of the runs\' ratios) |');
console.log('|---|---|---|---|');
for (const { name } of runners) {
  const each = results.get(name)!;
  const ratio = median(each.map((x, i) => x / baseline[i]!));
  console.log(`| ${name} | ${Math.round(median(each)).toLocaleString('en-US')} | ${each.map((x) => Math.round(x).toLocaleString('en-US')).join(', ')} | ${ratio.toFixed(2)} |`);
}
