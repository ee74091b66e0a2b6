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
      // One quick attempt first: only then does the dispatcher start attempts ahead of a free slot.
      await rt.wait((await rt.submit({ agent: 'echo', input: 'warm' })).id);
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
