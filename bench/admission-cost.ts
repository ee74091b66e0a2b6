/**
 * What `maxQueued` costs a submit on PostgreSQL (src/store/postgres/admission.ts): submitAndRead
 * without a limit, with one far above the queue (the shared lock) and with one just above it (the
 * exclusive lock, once the room kept for other sessions is passed), alternated, one task per
 * transaction, on a scratch database of the server at PG_URL: sequential, then 8 at once, with a
 * small queue and with a backlog of queued tasks (not through admission).
 *
 *   PG_URL=postgres://root@127.0.0.1:5432/test node dist/bench/admission-cost.js [--backlog 100000] [--n 1000] [--rounds 3]
 */
import { benchArgs } from './args.js';
import pg from 'pg';
import { migrate } from '../src/store/postgres/migrations.js';
import { checkTasks, submitTasks } from '../src/store/postgres/queue.js';
import { submitAndRead } from '../src/store/postgres/tasks.js';
import { withUser } from './pg-url.js';

const { int } = benchArgs('node dist/bench/admission-cost.js', 'What maxQueued costs a submit on PostgreSQL (PG_URL); see bench/admission-cost.ts.', { backlog: { type: 'string', default: '100000' }, n: { type: 'string', default: '1000' }, rounds: { type: 'string', default: '3' } });
const base = withUser(process.env.PG_URL ?? 'postgres://127.0.0.1:5432/test');
const backlog = int('backlog', 0);
const n = int('n', 1);
const rounds = int('rounds', 1);
const name = `troupe_admission_${process.pid}`;
const admin = new pg.Pool({ connectionString: base, max: 1 });
await admin.query(`CREATE DATABASE ${name}`);
const pool = new pg.Pool({ connectionString: base.replace(/\/[^/?]*(\?.*)?$/, `/${name}$1`), max: 8 });
let seq = 0;
const task = () => ({ id: `t${seq++}`, agent: 'noop' });

/** Submits per second: `n` single-task submits, `concurrency` at a time. */
async function rate(maxQueued: number | undefined, concurrency: number): Promise<number> {
  const started = performance.now();
  let left = n;
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (left-- > 0) await submitAndRead(pool, checkTasks([task()]), undefined, maxQueued);
  }));
  return n / ((performance.now() - started) / 1000);
}

/** The cluster's queued tasks now. */
const queued = async () => Number((await pool.query("SELECT count(*) AS n FROM troupe_tasks WHERE state = 'queued'")).rows[0].n);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function compare(label: string): Promise<void> {
  for (const concurrency of [1, 8]) {
    const off: number[] = [];
    const far: number[] = [];
    const near: number[] = [];
    for (let r = 0; r < rounds; r++) {
      off.push(await rate(undefined, concurrency));
      far.push(await rate(1_000_000_000, concurrency));
      // Room for this run's submits and a few more: past the first few, each is near the limit.
      near.push(await rate((await queued()) + n + 10, concurrency));
    }
    const [o, f, c] = [median(off), median(far), median(near)];
    console.log(`| ${label} | ${concurrency} | ${o.toFixed(0)} | ${f.toFixed(0)} (${(f / o).toFixed(2)}) | ${c.toFixed(0)} (${(c / o).toFixed(2)}) |`);
  }
}

try {
  await migrate(pool);
  console.log('| queued before | at once | submits/s, no maxQueued | far from it (shared lock) | near it (exclusive lock) |');
  console.log('| --- | --- | --- | --- | --- |');
  await compare('0 → thousands');
  for (let i = 0; i < backlog; i += 1_000) await submitTasks(pool, Array.from({ length: Math.min(1_000, backlog - i) }, () => ({ id: `b${seq++}`, agent: 'noop' })));
  await pool.query('VACUUM ANALYZE troupe_tasks');
  await compare(`${backlog.toLocaleString('en-US')} more`);
} finally {
  await pool.end();
  await admin.query(`DROP DATABASE ${name}`);
  await admin.end();
}
