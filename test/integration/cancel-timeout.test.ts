/**
 * A cancel of an attempt the LMDB dispatcher started ahead of a free slot (handed to its thread,
 * queued there). LMDB-only: a PostgreSQL node claims ahead into its own window, not onto a busy
 * thread (cluster-node-ahead.test.ts). The cancels and timeouts both stores share are in
 * contract.ts and contract-faults.ts, run on both.
 */
import { describe, expect, it } from 'vitest';
import { builtinAgent, type RuntimeEvent } from 'troupe';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fixtureAgent, runtimes, started, tempDir } from '../helpers.js';

const runtime = runtimes();

describe('cancel', () => {
  it('cancels an attempt still queued on its thread at once, and the attempt ahead of it runs on', async () => {
    const gate = tempDir();
    try {
      const rt = await runtime({ threads: 1, slotsPerThread: 1, agents: [{ name: 'gate', module: fixtureAgent('gate') }, builtinAgent('echo')] });
      // Quick attempts first: only once its measured execution time is short beside a start
      // commit does the dispatcher start attempts ahead of a free slot (src/tasks/start-ahead.ts).
      // The first attempt's time includes loading the agent's module on its thread, which on a
      // busy machine (CI, files run side by side) can take longer than that on its own.
      for (let warm = 0; rt.stats().prefetch.window === 0; warm++) {
        if (warm === 200) throw new Error(`no start-ahead window after ${warm} quick attempts: ${JSON.stringify(rt.stats().prefetch)}`);
        await rt.wait((await rt.submit({ agent: 'echo', input: 'warm' })).id);
      }
      const order: string[] = [];
      rt.on('*', (e: RuntimeEvent) => (e.type === 'task.done' || e.type === 'task.cancelled' ? order.push(`${e.type} ${e.taskId}`) : undefined));
      // Holds the one slot until the test opens its gate (a file), whatever the machine's speed.
      const open = join(gate.path, 'open');
      const long = await rt.submit({ agent: 'gate', input: { path: open } });
      await started(rt, long.id);
      // Started ahead: durable, handed to the thread, queued there behind the gate.
      const queued = await rt.submit({ agent: 'echo', input: 'never runs' });
      await started(rt, queued.id);
      expect(await rt.cancel(queued.id, 'changed my mind')).toMatchObject({ state: 'cancelled', reason: 'changed my mind', attempts: 1 });
      // The gate's thread was not terminated for it: the gate's attempt ends done, after the cancel.
      writeFileSync(open, '');
      expect(await rt.wait(long.id)).toMatchObject({ state: 'done', attempts: 1, output: { opened: true } });
      expect(order).toEqual([`task.cancelled ${queued.id}`, `task.done ${long.id}`]);
    } finally {
      gate.cleanup();
    }
  });
});
