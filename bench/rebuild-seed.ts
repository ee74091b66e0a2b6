/**
 * Seeds a data dir for bench/rebuild.ts, then waits to be killed: `instances` instance snapshots
 * (one echo task per lane) and `queued` tasks of a `work` agent that is too slow to drain them.
 *
 *   node rebuild-seed.js <dataDir> <instances> <queued>
 */
import { createRuntime, builtinAgent } from '../src/index.js';

const [dataDir, instances, queued] = process.argv.slice(2);
const n = Number(instances);
const q = Number(queued);
const rt = await createRuntime({
  dataDir: dataDir!,
  logger: false,
  threads: 2,
  slotsPerThread: 8,
  maxQueued: Math.max(n, q) + 10,
  agents: [builtinAgent('echo'), { ...builtinAgent('sleep'), name: 'work', concurrency: 1 }],
});
for (let from = 0; from < n; from += 2_000) {
  const batch = await rt.submitMany(Array.from({ length: Math.min(2_000, n - from) }, (_, k) => ({ agent: 'echo', lane: `i-${from + k}` })));
  await Promise.all(batch.map((t) => rt.wait(t.id)));
}
for (let from = 0; from < q; from += 2_000) {
  await rt.submitMany(Array.from({ length: Math.min(2_000, q - from) }, (_, k) => ({ agent: 'work', input: { ms: 60_000 }, priority: k % 3 })));
}
process.stdout.write(`ready ${rt.instances().length}\n`);
setInterval(() => undefined, 1_000);
