/**
 * Peers that need a server: graphile-worker on PG_URL, and BullMQ on a redis-server with AOF
 * (by default one the bench starts itself, so a shared Redis is left untouched). Both run the
 * same no-op function in this process, with concurrency = threads × slots.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { noop } from './noop.agent.js';
import type { RunnerSpec } from './runners.js';

/** CONFIG on BullMQ's client: its interface has no generic command, and its default client is ioredis. */
type ConfigClient = { config(...args: string[]): Promise<unknown> };

type Settle = { resolve: (startedAt: number) => void; reject: (error: unknown) => void };

let sequence = 0;

/** The installed version of a package (neither peer exports its version). */
const versionOf = (name: string): string => (createRequire(import.meta.url)(`${name}/package.json`) as { version: string }).version;

/**
 * graphile-worker on `pgUrl`: a fresh schema per run, dropped after it. `localQueueSize` is its
 * batched fetch (0: off, one fetch query per job); the bench's default is the 500 of its docs'
 * performance setup.
 */
export async function graphileWorker(pgUrl: string, localQueueSize: number): Promise<RunnerSpec> {
  const gw = await import('graphile-worker');
  const version = versionOf('graphile-worker');
  const logger = new gw.Logger(() => (level, message) => {
    if (String(level) === 'error' || String(level) === 'warning') console.error(`graphile-worker ${String(level)}: ${message}`);
  });
  const probeSchema = `troupe_bench_probe_${process.pid}`;
  const probe = await gw.makeWorkerUtils({ connectionString: pgUrl, logger, schema: probeSchema });
  const server = await probe.withPgClient(async (client) => {
    const row = async (sql: string) => Object.values((await client.query(sql)).rows[0] as Record<string, string>)[0];
    const found = { version: await row('show server_version'), fsync: await row('show fsync'), syncCommit: await row('show synchronous_commit') };
    await client.query(`drop schema if exists "${probeSchema}" cascade`);
    return found;
  });
  await probe.release();
  return {
    name: 'graphile-worker',
    settings:
      `graphile-worker ${version}, Postgres ${server.version} (fsync ${server.fsync}, synchronous_commit ${server.syncCommit}); ` +
      'submits made in one event-loop turn go as one addJobs() call; concurrentJobs = threads × slots, maxPoolSize = max(10, concurrency + 1), ' +
      `localQueue.size ${localQueueSize > 0 ? localQueueSize : 'off'}, completeJobBatchDelay 0, failJobBatchDelay 0 (batched completion); settled = its job:complete event, ` +
      'which comes before the batched delete commits, so the throughput phase also waits for the jobs table to empty',
    async open({ threads, slots }) {
      const schema = `troupe_bench_${process.pid}_${sequence++}`;
      const concurrency = threads * slots;
      const common = { connectionString: pgUrl, logger, schema };
      const utils = await gw.makeWorkerUtils(common);
      await utils.migrate();
      const waiting = new Map<number, Settle>();
      const startedAt = new Map<number, number>();
      const runner = await gw.run({
        ...common,
        concurrency,
        maxPoolSize: Math.max(10, concurrency + 1),
        noHandleSignals: true,
        taskList: {
          noop: (payload) => {
            startedAt.set((payload as { i: number }).i, noop().startedAt);
          },
        },
        preset: { worker: { ...(localQueueSize > 0 ? { localQueue: { size: localQueueSize } } : {}), completeJobBatchDelay: 0, failJobBatchDelay: 0 } },
      });
      runner.events.on('job:complete', ({ job, error }) => {
        const i = (job.payload as { i: number }).i;
        const settle = waiting.get(i);
        waiting.delete(i);
        if (error) settle?.reject(error);
        else settle?.resolve(startedAt.get(i)!);
        startedAt.delete(i);
      });
      let batch: number[] = [];
      const flush = () => {
        const ids = batch;
        batch = [];
        utils.addJobs(ids.map((i) => ({ identifier: 'noop', payload: { i } }))).catch((error: unknown) => {
          for (const i of ids) waiting.get(i)?.reject(error);
        });
      };
      const pending = async () => utils.withPgClient(async (client) => Number((await client.query(`select count(*) as n from "${schema}"._private_jobs`)).rows[0].n));
      return {
        one: () =>
          new Promise<number>((resolve, reject) => {
            const i = sequence++;
            waiting.set(i, { resolve, reject });
            if (batch.push(i) === 1) setImmediate(flush);
          }),
        drain: async () => {
          while ((await pending()) > 0) await new Promise((r) => setTimeout(r, 2));
        },
        close: async () => {
          try {
            await runner.stop();
            await utils.withPgClient((client) => client.query(`drop schema if exists "${schema}" cascade`));
          } finally {
            await utils.release();
          }
        },
      };
    },
  };
}

/** A redis-server of the bench's own, in a temp dir, with AOF on and RDB snapshots off. */
export interface OwnRedis {
  port: number;
  stop(): Promise<void>;
}

/** Starts `redis-server` on a free port with `appendonly yes`; resolves once it accepts connections. */
export async function startRedis(): Promise<OwnRedis> {
  const port = await new Promise<number>((resolve, reject) => {
    const probe = createServer().listen(0, '127.0.0.1', () => {
      const address = probe.address();
      probe.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no free port'))));
    });
  });
  const dir = mkdtempSync(join(tmpdir(), 'troupe-bench-redis-'));
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--appendonly', 'yes', '--appendfsync', 'always', '--save', '', '--daemonize', 'no'];
  const child = spawn('redis-server', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const kill = () => child.kill('SIGKILL');
  process.once('exit', kill);
  await new Promise<void>((resolve, reject) => {
    let out = '';
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`redis-server exited (${code}): ${out.slice(-500)}`)));
    child.stdout.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      if (out.includes('Ready to accept connections')) resolve();
    });
  });
  child.stdout.resume();
  child.removeAllListeners('exit');
  return {
    port,
    stop: async () => {
      process.removeListener('exit', kill);
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * BullMQ on `redisUrl`: `queue.add()` per task, settled at the in-process Worker's `completed`
 * event (after Redis has replied to moveToCompleted, so after the AOF fsync with `always`).
 * `appendfsync` is set on the server before each run when `setFsync` is given (own server only).
 */
export async function bullmq(redisUrl: string, where: string, setFsync?: 'always' | 'everysec'): Promise<RunnerSpec> {
  const { Queue, Worker } = await import('bullmq');
  const version = versionOf('bullmq');
  const url = new URL(redisUrl);
  const connection = { host: url.hostname, port: Number(url.port || 6379), password: url.password || undefined };
  const probe = new Queue(`troupe-bench-probe-${process.pid}`, { connection });
  const client = await probe.client;
  const redisConfig = client as unknown as ConfigClient;
  if (setFsync) await redisConfig.config('SET', 'appendfsync', setFsync);
  const config = (await redisConfig.config('GET', 'appendonly', 'appendfsync')) as string[];
  const info = await client.info();
  await probe.close();
  const aof = `appendonly ${config[config.indexOf('appendonly') + 1]}, appendfsync ${config[config.indexOf('appendfsync') + 1]}`;
  return {
    name: `bullmq (${config[config.indexOf('appendonly') + 1] === 'yes' ? `aof ${setFsync ?? config[config.indexOf('appendfsync') + 1]}` : 'no aof'})`,
    settings: `BullMQ ${version}, redis ${/redis_version:(\S+)/.exec(info)?.[1]} ${where} (${aof}); queue.add() per task, Worker concurrency = threads × slots, removeOnComplete; settled = the Worker's completed event`,
    async open({ threads, slots }) {
      const name = `troupe-bench-${process.pid}-${sequence++}`;
      const queue = new Queue(name, { connection });
      if (setFsync) await ((await queue.client) as unknown as ConfigClient).config('SET', 'appendfsync', setFsync);
      const waiting = new Map<string, Settle>();
      const worker = new Worker(name, async () => noop(), { connection, concurrency: threads * slots });
      worker.on('completed', (job, result: { startedAt: number }) => {
        waiting.get(job.id!)?.resolve(result.startedAt);
        waiting.delete(job.id!);
      });
      worker.on('failed', (job, error) => {
        if (job) waiting.get(job.id!)?.reject(error);
      });
      await worker.waitUntilReady();
      return {
        one: () =>
          new Promise<number>((resolve, reject) => {
            // A custom id (not an integer: BullMQ refuses those) lets the waiter be set before the add.
            const jobId = `b${sequence++}`;
            waiting.set(jobId, { resolve, reject });
            queue.add('noop', null, { jobId, removeOnComplete: true, removeOnFail: true }).catch(reject);
          }),
        close: async () => {
          try {
            await worker.close();
            await queue.obliterate({ force: true }).catch(() => undefined);
          } finally {
            await queue.close();
          }
        },
      };
    },
  };
}
