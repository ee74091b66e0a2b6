/**
 * Agent failures that only the LMDB runtime has a place for: execution instances (refused on
 * PostgreSQL, README "What is refused"). The failures both stores share (retries, results that
 * cannot be stored, modules that cannot load, threads that crash, timeouts) are in contract.ts and
 * contract-faults.ts, run on both.
 */
import { describe, expect, it } from 'vitest';
import { builtinAgent, createRuntime, type RuntimeEvent } from 'troupe';
import { fixtureAgent, runtimes, scratchDirs } from '../helpers.js';

const runtime = runtimes();
const dataDir = scratchDirs();

describe('agent failures and instances', () => {
  it('a thread crash does not count against an instance the way agent failures do', async () => {
    const rt = await runtime({ failedAttemptThreshold: 2, agents: [{ name: 'crash', module: fixtureAgent('crash'), retry: { maxAttempts: 3, delayMs: 0 } }, builtinAgent('fail', { retry: { maxAttempts: 2, delayMs: 0 } })] });
    const crash = await rt.wait((await rt.submit({ agent: 'crash' })).id);
    expect(crash.state).toBe('dropped');
    expect(rt.instances().find((i) => i.key === crash.instanceKey)).toMatchObject({ status: 'idle', consecutiveFailures: 0 });
    const degraded = new Promise<RuntimeEvent>((resolve) => rt.on('instance.degraded', resolve));
    const fail = await rt.wait((await rt.submit({ agent: 'fail' })).id);
    expect(fail.state).toBe('dropped');
    expect((await degraded).data).toMatchObject({ instanceKey: fail.instanceKey, consecutiveFailures: 2 });
    expect(rt.instances().find((i) => i.key === fail.instanceKey)).toMatchObject({ status: 'degraded' });
    // A degraded instance takes no work until it is reset.
    const next = await rt.submit({ agent: 'fail', input: { succeedOnAttempt: 1 } });
    await expect(rt.wait(next.id, { timeoutMs: 300 })).rejects.toMatchObject({ code: 'WAIT_TIMEOUT' });
    await rt.resetInstance(fail.instanceKey);
    expect(await rt.wait(next.id)).toMatchObject({ state: 'done' });
  });

  it('applies failedAttemptThreshold as the runtime is opened with it, to instances seen before as to new ones', async () => {
    const dir = dataDir();
    const fail = builtinAgent('fail', { retry: { maxAttempts: 1 } });
    // Opened with degradation off: one failure, and the instance is stored.
    let rt = await createRuntime({ dataDir: dir, logger: false, threads: 1, agents: [fail] });
    const first = await rt.wait((await rt.submit({ agent: 'fail' })).id);
    expect(rt.instances().find((i) => i.key === first.instanceKey)).toMatchObject({ status: 'idle', consecutiveFailures: 1 });
    await rt.close();
    // Opened again with 2: the stored instance degrades at its second failure in a row.
    rt = await createRuntime({ dataDir: dir, logger: false, threads: 1, agents: [fail], failedAttemptThreshold: 2 });
    try {
      const degraded = new Promise<RuntimeEvent>((resolve) => rt.on('instance.degraded', resolve));
      await rt.wait((await rt.submit({ agent: 'fail' })).id);
      expect(rt.instances().find((i) => i.key === first.instanceKey)).toMatchObject({ status: 'degraded' });
      expect((await degraded).data).toMatchObject({ instanceKey: first.instanceKey, consecutiveFailures: 2 });
    } finally {
      await rt.close();
    }
  });
});
