import { describe, expect, it } from 'vitest';
import { builtinAgent, type Runtime, type RuntimeEvent } from 'troupe';
import { fixtureAgent, runtimes, started } from '../helpers.js';

const runtime = runtimes();

describe('cancel', () => {
  it('cancels a queued task at once', async () => {
    // No agent registered for the task yet, so it stays queued.
    const rt = await runtime({ agents: [builtinAgent('echo')] });
    const blocked = await runtime_withUnregistered(rt);
    const cancelled = await rt.cancel(blocked.id, 'not needed');
    expect(cancelled).toMatchObject({ state: 'cancelled', reason: 'not needed', attempts: 0 });
    expect(await rt.wait(blocked.id)).toMatchObject({ state: 'cancelled' });
    // Idempotent for an already cancelled task; illegal for a done one.
    expect((await rt.cancel(blocked.id)).state).toBe('cancelled');
    const done = await rt.wait((await rt.submit({ agent: 'echo' })).id);
    await expect(rt.cancel(done.id)).rejects.toMatchObject({ code: 'ILLEGAL_TRANSITION' });
    await expect(rt.cancel('missing')).rejects.toMatchObject({ code: 'NOT_FOUND' });
  });

  it('cancels an attempt still queued on its thread at once, and the attempt ahead of it runs on', async () => {
    const rt = await runtime({ threads: 1, slotsPerThread: 1, agents: [builtinAgent('sleep'), builtinAgent('echo')] });
    // One quick attempt first: only then does the dispatcher start attempts ahead of a free slot.
    await rt.wait((await rt.submit({ agent: 'echo', input: 'warm' })).id);
    const order: string[] = [];
    rt.on('*', (e: RuntimeEvent) => (e.type === 'task.done' || e.type === 'task.cancelled' ? order.push(`${e.type} ${e.taskId}`) : undefined));
    const long = await rt.submit({ agent: 'sleep', input: { ms: 400, steps: 1 } });
    await started(rt, long.id);
    // Started ahead: durable, handed to the thread, queued there behind the sleep.
    const queued = await rt.submit({ agent: 'echo', input: 'never runs' });
    await started(rt, queued.id);
    expect(await rt.cancel(queued.id, 'changed my mind')).toMatchObject({ state: 'cancelled', reason: 'changed my mind', attempts: 1 });
    // The sleep's thread was not terminated for it: the sleep ends done, after the cancel.
    expect(await rt.wait(long.id)).toMatchObject({ state: 'done', attempts: 1, output: { sleptMs: 400 } });
    expect(order).toEqual([`task.cancelled ${queued.id}`, `task.done ${long.id}`]);
  });

  it('aborts ctx.signal of a running task, which is cancelled when the attempt ends', async () => {
    const rt = await runtime({ agents: [{ name: 'polite', module: fixtureAgent('polite') }] });
    const task = await rt.submit({ agent: 'polite', input: {} });
    await started(rt, task.id);
    const cancelled = await rt.cancel(task.id, 'user stop');
    expect(cancelled).toMatchObject({ state: 'cancelled', reason: 'user stop', attempts: 1 });
    expect(cancelled.error).toMatchObject({ code: 'CANCELLED' });
  });

  it('terminates the thread of an attempt that ignores the abort past the grace period', async () => {
    const rt = await runtime({ threads: 1, slotsPerThread: 1, cancelGraceMs: 200, agents: [{ name: 'hang', module: fixtureAgent('hang') }, builtinAgent('echo')] });
    for (const mode of ['async', 'block'] as const) {
      const task = await rt.submit({ agent: 'hang', input: { mode } });
      await started(rt, task.id);
      expect(await rt.cancel(task.id)).toMatchObject({ state: 'cancelled', attempts: 1 });
      // The slot came back: the single thread runs new work.
      expect((await rt.wait((await rt.submit({ agent: 'echo', input: mode })).id)).output).toBe(mode);
    }
  });
});

describe('timeout', () => {
  it('ends an attempt past timeoutMs as a retryable failure, then drops the task', async () => {
    const rt = await runtime({ cancelGraceMs: 100, agents: [{ name: 'polite', module: fixtureAgent('polite'), timeoutMs: 80, retry: { maxAttempts: 2, delayMs: 0 } }] });
    const retrying = new Promise<RuntimeEvent>((resolve) => rt.on('task.retrying', resolve));
    const task = await rt.wait((await rt.submit({ agent: 'polite', input: {} })).id);
    expect((await retrying).data).toMatchObject({ exit: 'timeout', error: { code: 'TIMEOUT', retryable: true } });
    expect(task).toMatchObject({ state: 'dropped', attempts: 2, reason: 'retry_exhausted' });
    expect(task.error!.message).toContain('TIMEOUT');
  });

  it('a per-task timeoutMs overrides the agent and a blocked thread is terminated', async () => {
    const rt = await runtime({ threads: 1, slotsPerThread: 1, cancelGraceMs: 100, agents: [{ name: 'hang', module: fixtureAgent('hang'), retry: { maxAttempts: 1 } }, builtinAgent('echo')] });
    const task = await rt.wait((await rt.submit({ agent: 'hang', input: { mode: 'block' }, timeoutMs: 100 })).id);
    expect(task).toMatchObject({ state: 'dropped', attempts: 1, timeoutMs: 100 });
    expect((await rt.wait((await rt.submit({ agent: 'echo', input: 1 })).id)).state).toBe('done');
  });
});

async function runtime_withUnregistered(rt: Runtime) {
  // Registering and then submitting for a second name that is never dispatched: use a lane whose
  // instance has a dispatch target of 0 so the task stays queued.
  const probe = await rt.submit({ agent: 'echo', lane: 'parked', input: 'probe' });
  await rt.wait(probe.id);
  await rt.setDispatchTarget(probe.instanceKey, 0);
  return rt.submit({ agent: 'echo', lane: 'parked', input: 'parked' });
}
