/**
 * One runtime of the cluster bench (bench/cluster.ts) in a process of its own: a runtime on the
 * PostgreSQL database at argv[2] (`createRuntime({ store: { postgres } })`), one thread with
 * argv[3] slots, other options default. It starts with no agent, so it claims nothing, and prints
 * `ready`; on stdin's first line it registers the no-op agent and works through its tasks; on the
 * second (the bench sends it once no task is left) it closes and exits.
 */
import { createInterface } from 'node:readline';
import { createRuntime } from '../src/index.js';

const [url, slots] = process.argv.slice(2) as [string, string];
const rt = await createRuntime({ store: { postgres: url }, threads: 1, slotsPerThread: Number(slots), logger: false });
const lines = createInterface({ input: process.stdin });
let seen = 0;
let stopped!: () => void;
const stop = new Promise<void>((resolve) => (stopped = resolve));
lines.on('line', () => {
  if (++seen === 1) rt.agents.register({ name: 'noop', module: new URL('./noop.agent.js', import.meta.url) });
  else stopped();
});
process.stdout.write('ready\n');
await stop;
await rt.close();
lines.close();
