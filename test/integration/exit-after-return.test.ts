/**
 * An agent that ends its thread (`process.exit`) after it returned, in the same turn: the outcomes
 * the thread had not sent yet, its own and its neighbours', still reach the host, so none of those
 * attempts is charged a crash and run again (real threads, LMDB runtime).
 */
import { describe, expect, it } from 'vitest';
import { fixtureAgent, runtimes } from '../helpers.js';

const runtime = runtimes();

describe('process.exit from an agent that already returned', () => {
  it('loses none of the outcomes of its turn; a new thread serves', async () => {
    const rt = await runtime({ threads: 1, slotsPerThread: 2, agents: [{ name: 'hostile', module: fixtureAgent('hostile'), retry: { maxAttempts: 2, delayMs: 1 } }] });
    // The module is loaded: both attempts below end in the turn their batch arrives in.
    await rt.wait((await rt.submit({ agent: 'hostile', input: { mode: 'echo', value: 'loaded' } })).id);
    const [neighbour, culprit] = await rt.submitMany([
      { agent: 'hostile', input: { mode: 'echo', value: 'beside it' } },
      { agent: 'hostile', input: { mode: 'returnThenExit' } },
    ]);
    expect(await rt.wait(culprit!.id, { timeoutMs: 5_000 })).toMatchObject({ state: 'done', output: 'returned', attempts: 1 });
    expect(await rt.wait(neighbour!.id, { timeoutMs: 5_000 })).toMatchObject({ state: 'done', output: 'beside it', attempts: 1 });
    expect(await rt.wait((await rt.submit({ agent: 'hostile', input: { mode: 'echo', value: 'after' } })).id, { timeoutMs: 5_000 })).toMatchObject({ state: 'done', output: 'after' });
  });
});
