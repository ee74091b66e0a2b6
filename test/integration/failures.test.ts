/**
 * Agent failures that only the LMDB runtime has a place for: execution instances (refused on
 * PostgreSQL, README "What is refused"). The failures both stores share (retries, results that
 * cannot be stored, modules that cannot load, threads that crash, timeouts) are in contract.ts and
 * contract-faults.ts, run on both.
 */
import { describe, expect, it } from 'vitest';
import { builtinAgent, type RuntimeEvent } from 'troupe';
import { fixtureAgent, runtimes } from '../helpers.js';

const runtime = runtimes();

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
});
