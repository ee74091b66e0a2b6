/**
 * One node of the cluster bench (bench/cluster.ts), in a process of its own: joins the cluster at
 * argv[2] and works through the no-op tasks of agent argv[3], claiming up to argv[4] in one
 * statement, running their no-ops inline (as graphile-worker runs its jobs) and settling each
 * claim's batch in one transaction; the next claim goes out while settles are in flight. Prints
 * `ready` once it has joined, starts on stdin's first line and stops at the second (the bench
 * sends it once no task is left), leaving the cluster.
 */
import { createInterface } from 'node:readline';
import pg from 'pg';
import { joinCluster } from '../src/store/postgres/nodes.js';
import { claimTasks } from '../src/store/postgres/queue.js';
import { settleAttempts, type AttemptEnd } from '../src/store/postgres/settle.js';
import { noop } from './noop.agent.js';

const [url, agent, claimArg] = process.argv.slice(2) as [string, string, string];
const claim = Number(claimArg);
const LEASE_MS = 60_000;

const node = await joinCluster(url, (error) => {
  process.stderr.write(`cluster node lost its liveness connection: ${error.message}\n`);
  process.exit(3);
});
// One connection claims, the others settle: a settle never waits behind the next claim.
const pool = new pg.Pool({ connectionString: url, max: 4 });
// An idle connection that ends (the bench's DROP, or another client's termination) is the pool's to
// replace, not an unhandled 'error' that ends this node (see benchPool in bench/cluster.ts).
pool.on('error', () => undefined);
const lines = createInterface({ input: process.stdin });
let started!: () => void;
const start = new Promise<void>((resolve) => (started = resolve));
let stopping = false;
let seen = 0;
lines.on('line', () => (++seen === 1 ? started() : (stopping = true)));
process.stdout.write('ready\n');
await start;

// A slot is free again once its no-op has run: its settle is a durable write still in flight, as
// in the runtime, where a slot goes back when the attempt ends, not when its settle commits. At
// most a few settles are in flight, each on a connection of its own.
const MAX_SETTLES = 3;
const settles = new Set<Promise<unknown>>();
while (!stopping) {
  if (settles.size >= MAX_SETTLES) {
    await Promise.race(settles);
    continue;
  }
  const claimed = await claimTasks(pool, node.id, agent, claim, LEASE_MS);
  if (claimed.length === 0) {
    // Nothing runnable: wait for a settle in flight, else look again shortly.
    if (settles.size > 0) await Promise.race(settles);
    else await new Promise((resolve) => setTimeout(resolve, 2));
    continue;
  }
  const ends: AttemptEnd[] = claimed.map((task) => ({ taskId: task.id, token: task.token, exit: 'success', output: noop() }));
  const settle: Promise<unknown> = settleAttempts(pool, ends).finally(() => settles.delete(settle));
  settles.add(settle);
}
await Promise.all(settles);
await node.leave();
await pool.end();
lines.close();
