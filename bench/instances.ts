/**
 * Heap against instance count: one echo task on each of N distinct execution instances (one lane
 * each), with `maxLiveInstances` live actors. Idle actors beyond the limit are passivated to LMDB,
 * so the heap after the run should not grow with N.
 *
 *   node --expose-gc dist/bench/instances.js [--instances 10000,100000] [--live 10000]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { benchArgs } from './args.js';
import { createRuntime, builtinAgent } from '../src/index.js';

const { values, int } = benchArgs('npm run bench:instances', 'Memory and throughput with many known instances; see bench/instances.ts.', { instances: { type: 'string', default: '10000,100000' }, live: { type: 'string', default: '10000' } });
const counts = values.instances!.split(',').map(Number);
const maxLiveInstances = int('live', 1);
const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) console.error('run with node --expose-gc for exact heap figures');

const mb = (bytes: number) => (bytes / 2 ** 20).toFixed(1);

console.log(`| instances | live actors | known instances | heap after (MB) | tasks/s |`);
console.log(`|---|---|---|---|---|`);
for (const n of counts) {
  const dataDir = mkdtempSync(join(tmpdir(), 'troupe-scale-'));
  const rt = await createRuntime({ dataDir, threads: 2, slotsPerThread: 8, maxQueued: n, maxLiveInstances, logger: false, agents: [builtinAgent('echo')] });
  const started = performance.now();
  for (let from = 0; from < n; from += 1000) {
    const batch = await rt.submitMany(Array.from({ length: Math.min(1000, n - from) }, (_, k) => ({ agent: 'echo', lane: `i-${from + k}`, input: from + k })));
    await Promise.all(batch.map((t) => rt.wait(t.id)));
  }
  const seconds = (performance.now() - started) / 1000;
  gc?.();
  const heap = process.memoryUsage().heapUsed;
  const known = rt.instances().length;
  console.log(`| ${n} | ${rt.stats().instances.live} | ${known} | ${mb(heap)} | ${Math.round(n / seconds)} |`);
  await rt.close();
  rmSync(dataDir, { recursive: true, force: true });
}
console.log(`\n${availableParallelism()} cores, maxLiveInstances ${maxLiveInstances}, node ${process.version}`);
