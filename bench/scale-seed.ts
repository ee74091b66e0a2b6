/**
 * Seeds a data dir for bench/scale.ts, then waits to be killed: `settled` done tasks of the no-op
 * agent (one in every 100 a child of the one before, one in every 1,000 failed), then `queued`
 * tasks of a `work` agent too slow to drain them. Prints `ready <ms to seed> <id of the last settled task>`.
 *
 *   node scale-seed.js <dataDir> <settled> <queued>
 */
import { builtinAgent, createRuntime } from '../src/index.js';

const [dataDir, settledArg, queuedArg] = process.argv.slice(2);
const settled = Number(settledArg);
const queued = Number(queuedArg);
const rt = await createRuntime({
  dataDir: dataDir!,
  logger: false,
  threads: 2,
  slotsPerThread: 16,
  maxQueued: queued + 10_000,
  retention: false,
  agents: [{ name: 'noop', module: new URL('./noop.agent.js', import.meta.url) }, builtinAgent('fail', { retry: { maxAttempts: 1 } }), { ...builtinAgent('sleep'), name: 'work', concurrency: 1 }],
});
const started = performance.now();
const CHUNK = 1_000;
let parent: string | undefined;
let last = '';
const inFlight: Array<Promise<unknown>> = [];
for (let from = 0; from < settled; from += CHUNK) {
  const specs = Array.from({ length: Math.min(CHUNK, settled - from) }, (_, k) => {
    const n = from + k;
    if (n % 1_000 === 999) return { agent: 'fail', input: { mode: 'result' } };
    const labels = n % 1_000 === 500 ? { team: 'red' } : undefined;
    return n % 100 === 1 && parent !== undefined ? { agent: 'noop', parentId: parent } : { agent: 'noop', ...(labels && { labels }) };
  });
  const batch = await rt.submitMany(specs);
  parent = batch[0]!.id;
  last = batch.at(-1)!.id;
  inFlight.push(Promise.all(batch.map((t) => rt.wait(t.id))));
  if (inFlight.length >= 8) await inFlight.shift();
}
await Promise.all(inFlight);
for (let from = 0; from < queued; from += 2_000) {
  await rt.submitMany(Array.from({ length: Math.min(2_000, queued - from) }, () => ({ agent: 'work', input: { ms: 60_000 } })));
}
process.stdout.write(`ready ${Math.round(performance.now() - started)} ${last || '-'}\n`);
setInterval(() => undefined, 1_000);
