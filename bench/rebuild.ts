/**
 * `npm run bench:rebuild`: open-after-kill. A child seeds N instance snapshots and 10,000 queued
 * tasks, is killed with SIGKILL, and this process reopens the data dir. It prints the time from
 * open to the first dispatch, the time until all queued tasks are done, and the heap after open,
 * for each N: the heap should not grow with N, because instance actors rehydrate lazily.
 *
 *   node --expose-gc dist/bench/rebuild.js [--instances 10000,100000] [--queued 10000]
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { benchArgs } from './args.js';
import { builtinAgent, createRuntime } from '../src/index.js';

const { values, int } = benchArgs('npm run bench:rebuild', 'Time to open a data dir holding many instance snapshots and queued tasks; see bench/rebuild.ts.', { instances: { type: 'string', default: '10000,100000' }, queued: { type: 'string', default: '10000' } });
const sizes = values.instances!.split(',').map(Number);
const queued = int('queued', 0);
const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) console.error('run with node --expose-gc for exact heap figures');
const mb = (bytes: number) => (bytes / 2 ** 20).toFixed(1);

console.log('| instance snapshots | queued tasks | open (ms) | open → first dispatch (ms) | open → all done (s) | heap after open (MB) | crashed attempts found |');
console.log('|---|---|---|---|---|---|---|');
for (const n of sizes) {
  const dataDir = mkdtempSync(join(tmpdir(), 'troupe-rebuild-'));
  const seed = spawn(process.execPath, [new URL('./rebuild-seed.js', import.meta.url).pathname, dataDir, String(n), String(queued)], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve) => seed.stdout!.on('data', (chunk: Buffer) => chunk.toString().includes('ready') && resolve()));
  seed.kill('SIGKILL');
  await once(seed, 'exit');
  gc?.();
  const before = process.memoryUsage().heapUsed;
  const t0 = performance.now();
  // The same name now points at a fast agent, so the backlog drains.
  const rt = await createRuntime({ dataDir, logger: false, threads: 2, slotsPerThread: 8, maxQueued: queued + 10, agents: [{ ...builtinAgent('echo'), name: 'work' }] });
  const opened = performance.now();
  const firstDispatch = new Promise<number>((resolve) => rt.on('task.started', () => resolve(performance.now())));
  gc?.();
  const heap = process.memoryUsage().heapUsed - before;
  const first = await firstDispatch;
  while ((rt.stats().tasks.queued ?? 0) + (rt.stats().tasks.running ?? 0) > 0) await new Promise((resolve) => setTimeout(resolve, 20));
  const all = performance.now();
  console.log(`| ${n} | ${queued} | ${(opened - t0).toFixed(0)} | ${(first - t0).toFixed(0)} | ${((all - t0) / 1000).toFixed(2)} | ${mb(heap)} | ${rt.stats().rebuild.crashed} |`);
  await rt.close();
  rmSync(dataDir, { recursive: true, force: true });
}
console.log(`\n${availableParallelism()} cores, node ${process.version}; heap is the growth over the heap before the open`);
