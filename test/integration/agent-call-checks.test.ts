/**
 * An agent call carrying what cannot be sent to the host (a function as an input's prompt, in a
 * spawned task's input) rejects with INVALID_INPUT before anything is posted, and the attempt
 * keeps its thread slot: on a one-slot thread, nothing runs beside it after the call (real
 * threads, LMDB runtime).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { fixtureAgent, maxOverlap, runtimes, tempDir } from '../helpers.js';

const runtime = runtimes();

describe('an agent call that cannot be sent', () => {
  it('rejects with INVALID_INPUT, and its attempt holds its slot after it', async () => {
    const dir = tempDir();
    try {
      const file = join(dir.path, 'marks');
      writeFileSync(file, '');
      const rt = await runtime({ threads: 1, slotsPerThread: 1, agents: [{ name: 'hostile', module: fixtureAgent('hostile') }, { name: 'overlap', module: fixtureAgent('overlap') }] });
      // Fast attempts first: the dispatcher then starts the next ones ahead, into the thread's queue.
      const warm = await rt.submitMany(Array.from({ length: 50 }, (_, i) => ({ agent: 'hostile', input: { mode: 'echo', value: i } })));
      for (const task of warm) await rt.wait(task.id);
      const caller = await rt.submit({ agent: 'hostile', input: { mode: 'badCallsThenWork', file, ms: 300 } });
      while (!readFileSync(file, 'utf8').includes(caller.id)) await new Promise((resolve) => setTimeout(resolve, 5));
      const others = await rt.submitMany([1, 2].map(() => ({ agent: 'overlap', input: { file, ms: 20 } })));
      expect(await rt.wait(caller.id)).toMatchObject({ state: 'done', output: ['INVALID_INPUT', 'INVALID_INPUT'] });
      for (const task of others) expect(await rt.wait(task.id)).toMatchObject({ state: 'done' });
      expect(maxOverlap(file)).toBe(1);
    } finally {
      dir.cleanup();
    }
  });
});
