import { describe, expect, it } from 'vitest';
import type { Runtime, Task } from 'troupe';
import { fixtureAgent, runtimes } from '../helpers.js';

const runtime = runtimes();

/** One thread with four slots, so the agent under test shares its thread with three neighbours. */
async function sharedThread(): Promise<Runtime> {
  return runtime({
    threads: 1,
    slotsPerThread: 4,
    agents: [{ name: 'stray', module: fixtureAgent('stray'), retry: { maxAttempts: 3, backoff: 'fixed', delayMs: 0 }, backoff: false }],
  });
}

/** Runs `mode` beside three slow neighbours on one thread; returns the culprit and the neighbours, settled. */
async function beside(rt: Runtime, mode: string): Promise<{ culprit: Task; neighbours: Task[] }> {
  const neighbours = await Promise.all([1, 2, 3].map(() => rt.submit({ agent: 'stray', input: { mode: 'slow' } })));
  const culprit = await rt.submit({ agent: 'stray', input: { mode } });
  return { culprit: await rt.wait(culprit.id), neighbours: await Promise.all(neighbours.map((t) => rt.wait(t.id))) };
}

describe("an agent's stray errors", () => {
  for (const mode of ['timer-after', 'reject-after', 'input-after']) {
    it(`${mode}: once its attempt has ended, costs nobody an attempt and leaves the thread running`, async () => {
      const rt = await sharedThread();
      const { culprit, neighbours } = await beside(rt, mode);
      expect(culprit).toMatchObject({ state: 'done', attempts: 1, output: 'returned' });
      for (const n of neighbours) expect(n).toMatchObject({ state: 'done', attempts: 1, output: 'ok' });
      // The stray error is still in flight for timer-after: let it land, then the thread must still serve.
      await new Promise((resolve) => setTimeout(resolve, 100));
      const again = await rt.wait((await rt.submit({ agent: 'stray', input: { mode: 'slow' } })).id);
      expect(again).toMatchObject({ state: 'done', attempts: 1 });
    });
  }

  it('while its attempt runs, fails that attempt as the agent\'s error and no other', async () => {
    const rt = await sharedThread();
    const { culprit, neighbours } = await beside(rt, 'timer-during');
    expect(culprit).toMatchObject({ state: 'dropped', attempts: 3, error: { code: 'RETRY_EXHAUSTED', fault: 'agent' } });
    expect(culprit.error!.message).toContain('an uncaught exception in the agent: timer while running');
    for (const n of neighbours) expect(n).toMatchObject({ state: 'done', attempts: 1 });
  });

  it('an agent that ends its thread is charged for it; the attempts beside it are requeued uncharged', async () => {
    const rt = await runtime({
      threads: 1,
      slotsPerThread: 4,
      agents: [
        { name: 'stray', module: fixtureAgent('stray'), retry: { maxAttempts: 3, backoff: 'fixed', delayMs: 0 }, backoff: false },
        { name: 'crash', module: fixtureAgent('crash'), retry: { maxAttempts: 2, backoff: 'fixed', delayMs: 0 }, backoff: false },
      ],
    });
    const neighbours = await Promise.all([1, 2, 3].map(() => rt.submit({ agent: 'stray', input: { mode: 'slow' } })));
    const culprit = await rt.wait((await rt.submit({ agent: 'crash', input: { afterMs: 50 } })).id);
    expect(culprit).toMatchObject({ state: 'dropped', attempts: 2, error: { code: 'RETRY_EXHAUSTED' } });
    expect(culprit.error!.message).toContain('the agent ended its thread (process.exit(7))');
    for (const n of await Promise.all(neighbours.map((t) => rt.wait(t.id)))) expect(n).toMatchObject({ state: 'done', attempts: 1, output: 'ok' });
  });

  it('a thrown value that cannot be read is the agent\'s error, not a thread crash', async () => {
    const rt = await sharedThread();
    const { culprit, neighbours } = await beside(rt, 'proxy');
    expect(culprit).toMatchObject({ state: 'dropped', attempts: 3, error: { code: 'RETRY_EXHAUSTED', fault: 'agent' } });
    expect(culprit.error!.message).toContain('the agent threw a value that could not be read');
    for (const n of neighbours) expect(n).toMatchObject({ state: 'done', attempts: 1 });
  });
});
