/**
 * Bad input that only LMDB answers this way. The rest, the same on both stores, is the contract
 * suite's (contract-bad-input.ts). Here: calls PostgreSQL refuses with UNSUPPORTED_STORE
 * (setDispatchTarget, a lane other than default), an option it refuses with INVALID_OPTIONS
 * (maxLiveInstances), and logs() of an unknown task throwing when called (on PostgreSQL its first
 * `next()` rejects, with the same code).
 */
import { describe, expect, it } from 'vitest';
import { builtinAgent, createRuntime, type Runtime } from 'troupe';
import { runtimes, tempDir } from '../helpers.js';

const runtime = runtimes();

async function storedTaskCount(rt: Runtime): Promise<number> {
  return (await rt.list({ limit: 1000 })).tasks.length;
}

describe('bad input is rejected before anything is stored', () => {
  it('rejects past maxQueued with AT_CAPACITY and stores nothing', async () => {
    const rt = await runtime({ maxQueued: 3, agents: [builtinAgent('echo')] });
    // A dispatch target of 0 parks the lane so tasks stay queued.
    const probe = await rt.wait((await rt.submit({ agent: 'echo', lane: 'parked' })).id);
    await rt.setDispatchTarget(probe.instanceKey, 0);
    await rt.submitMany([{ agent: 'echo', lane: 'parked' }, { agent: 'echo', lane: 'parked' }]);
    const error = await rt.submitMany([{ agent: 'echo', lane: 'parked' }, { agent: 'echo', lane: 'parked' }]).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'AT_CAPACITY', retryable: true });
    expect(rt.stats().tasks.queued).toBe(2);
    expect(await storedTaskCount(rt)).toBe(3);
    await rt.submit({ agent: 'echo', lane: 'parked' });
    await expect(rt.submit({ agent: 'echo', lane: 'parked' })).rejects.toMatchObject({ code: 'AT_CAPACITY' });
  });

  it('rejects an unknown task of logs() when called, and bad calls of setDispatchTarget', async () => {
    const rt = await runtime({ agents: [builtinAgent('echo')] });
    expect(() => rt.logs('missing')).toThrow(expect.objectContaining({ code: 'NOT_FOUND' }));
    await expect(rt.setDispatchTarget('no/such/instance', 1)).rejects.toMatchObject({ code: 'NOT_FOUND' });
    await expect(rt.setDispatchTarget('x', -1)).rejects.toMatchObject({ code: 'INVALID_INPUT' });
  });
});

describe('invalid options name the option', () => {
  it('createRuntime({ maxLiveInstances: 0 }) throws INVALID_OPTIONS', async () => {
    const dir = tempDir();
    try {
      await expect(createRuntime({ dataDir: dir.path, logger: false, maxLiveInstances: 0 })).rejects.toMatchObject({ code: 'INVALID_OPTIONS', message: 'options.maxLiveInstances must be a positive integer' });
    } finally {
      dir.cleanup();
    }
  });
});
