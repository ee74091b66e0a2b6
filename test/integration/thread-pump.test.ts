/**
 * A thread's queue of synchronous attempts: each ends within the call that began it, and the next
 * starts from the same loop, however many the host sent in one batch (no stack frame per attempt).
 * Driven over the thread's own channel, served in this thread as troupe/testing serves one.
 */
import { describe, expect, it } from 'vitest';
import type { ThreadHello, WorkerBatch } from '../../actors/wire.js';

interface InThreadWorker {
  serveInThread(agents: ReadonlyMap<string, (input: unknown) => unknown>): ThreadHello;
  closeInThread(): void;
}

const OUTPUT = 2;
const STRIDE = 4;

describe('a batch of synchronous attempts', () => {
  it('runs 20,000 of them on one slot, each to its output', async () => {
    const worker = (await import(new URL('../../dist/actors/worker.js?pump-test=1', import.meta.url).href)) as InThreadWorker;
    const { ThreadChannel } = await import(new URL('../../dist/actors/channel.js', import.meta.url).href);
    const module = 'file:///in-thread/echo.js';
    const channel = new ThreadChannel(worker.serveInThread(new Map([[module, (input: unknown) => input]])).port);
    try {
      const outputs: unknown[] = [];
      let others = 0;
      let arrived: (() => void) | undefined;
      channel.onBatch((batch: WorkerBatch) => {
        for (let i = 0; i < batch.length; i += STRIDE) {
          if (batch[i] === OUTPUT) outputs.push(batch[i + 3]);
          else others++;
        }
        arrived?.();
      });
      const until = async (count: number) => {
        while (outputs.length + others < count) await new Promise<void>((resolve) => (arrived = resolve));
      };
      // The first attempt loads the agent; the batch after it runs within the turn it arrives in.
      channel.post({ t: 'start', slots: 1, heartbeatMs: 1_000, agents: [[0, 'echo', module]], starts: [0, 'W', 1, 1, 1, -1, undefined, undefined] });
      await until(1);
      const n = 20_000;
      const starts: unknown[] = [];
      for (let i = 0; i < n; i++) starts.push(0, `T${i}`, 1, 1, 1, i, undefined, undefined);
      channel.post({ t: 'start', slots: 1, heartbeatMs: 1_000, starts });
      await until(n + 1);
      expect(others).toBe(0);
      expect(outputs).toHaveLength(n + 1);
      expect(outputs.at(-1)).toBe(n - 1);
    } finally {
      worker.closeInThread();
      channel.close();
    }
  }, 10_000);
});
