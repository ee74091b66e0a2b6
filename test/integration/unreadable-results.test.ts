/**
 * A returned value or a load error that cannot even be read (a Proxy whose traps throw, a `kind`
 * getter that throws, a thenable whose `then` throws, a module that throws a value with no
 * prototype) still ends its attempt, and the attempts queued beside it still run (real threads,
 * LMDB runtime).
 */
import { describe, expect, it } from 'vitest';
import { fixtureAgent, runtimes } from '../helpers.js';

const runtime = runtimes();
const once = { retry: { maxAttempts: 1 } };

describe('an outcome that cannot be read', () => {
  it('ends its attempt INVALID_RESULT or AGENT_ERROR; the attempts queued with it in the same batch run', async () => {
    const rt = await runtime({ threads: 1, slotsPerThread: 3, agents: [{ name: 'hostile', module: fixtureAgent('hostile'), ...once }] });
    // The module is loaded: the attempts below run within the turn their batch arrives in.
    await rt.wait((await rt.submit({ agent: 'hostile', input: { mode: 'echo', value: 'loaded' } })).id);
    const tasks = await rt.submitMany([
      { agent: 'hostile', input: { mode: 'proxy' } },
      { agent: 'hostile', input: { mode: 'echo', value: 'n1' } },
      { agent: 'hostile', input: { mode: 'echo', value: 'n2' } },
      { agent: 'hostile', input: { mode: 'badKind' } },
      { agent: 'hostile', input: { mode: 'thenThrows' } },
    ]);
    // Bounded: before the fix these stayed running, heartbeated, for good.
    const [proxy, n1, n2, badKind, thenThrows] = await Promise.all(tasks.map((t) => rt.wait(t.id, { timeoutMs: 5_000 })));
    const unreadable = { state: 'failed', attempts: 1, error: { code: 'INVALID_RESULT', message: expect.stringContaining('could not be read') } };
    expect(proxy).toMatchObject(unreadable);
    expect(badKind).toMatchObject({ ...unreadable, error: { ...unreadable.error, message: expect.stringContaining('kind getter') } });
    expect(thenThrows).toMatchObject({ state: 'dropped', error: { message: expect.stringContaining('then threw') } });
    expect(n1).toMatchObject({ state: 'done', output: 'n1' });
    expect(n2).toMatchObject({ state: 'done', output: 'n2' });
  });

  it('fails a module that throws a value with no prototype with AGENT_LOAD_FAILED, naming the module', async () => {
    const rt = await runtime({ threads: 1, agents: [{ name: 'opaque', module: fixtureAgent('opaque'), ...once }] });
    const failed = await rt.wait((await rt.submit({ agent: 'opaque' })).id, { timeoutMs: 5_000 });
    expect(failed).toMatchObject({ state: 'failed', attempts: 1, error: { code: 'AGENT_LOAD_FAILED', retryable: false } });
    expect(failed.error!.message).toMatch(/^agent opaque failed to load: \/.*\/opaque\.agent\.js: an unprintable value$/);
  });
});
