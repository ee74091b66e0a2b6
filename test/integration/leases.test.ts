import { describe, expect, it } from 'vitest';
import { builtinAgent, createRuntime, ManualClock, type Runtime, type RuntimeEvent, type RuntimeOptions } from 'troupe';
import type { AttemptRequest, WireResult } from '../../actors/wire.js';
import type { PoolHost } from '../../src/pool/pool.js';
import type { RuntimeOptions as InternalOptions } from '../../src/options.js';
import { collectEvents } from 'troupe/testing';
import { fixtureAgent, scratchDirs } from '../helpers.js';

/** Options with the internal `createPool` (not in the public types). */
const withPool = (options: RuntimeOptions & Pick<InternalOptions, 'createPool'>): RuntimeOptions => options;

const dataDir = scratchDirs();

describe('leases on real threads', () => {
  it('ends an attempt that blocks its thread past the lease as lease_expired, retries it, and reclaims the slot', async () => {
    const rt = await createRuntime({
      dataDir: dataDir(),
      logger: false,
      threads: 1,
      slotsPerThread: 1,
      leaseMs: 300,
      agents: [{ name: 'hang', module: fixtureAgent('hang'), retry: { maxAttempts: 2, delayMs: 0 } }, builtinAgent('echo')],
    });
    const exits: unknown[] = [];
    rt.on('task.retrying', (e) => exits.push(e.data!.exit));
    const task = await rt.wait((await rt.submit({ agent: 'hang', input: { mode: 'block' } })).id);
    expect(task).toMatchObject({ state: 'dropped', attempts: 2, reason: 'retry_exhausted', error: { fault: 'infrastructure' } });
    expect(task.error!.message).toContain('LEASE_EXPIRED');
    expect(exits).toEqual(['lease_expired']);
    expect((await rt.wait((await rt.submit({ agent: 'echo', input: 'alive' })).id)).output).toBe('alive');
    await rt.close();
  });

  it('keeps the lease of a long agent that yields: the worker heartbeats on its own', async () => {
    const rt = await createRuntime({ dataDir: dataDir(), logger: false, threads: 1, leaseMs: 150, agents: [builtinAgent('sleep')] });
    const task = await rt.wait((await rt.submit({ agent: 'sleep', input: { ms: 600, steps: 1 } })).id);
    expect(task).toMatchObject({ state: 'done', attempts: 1, output: { sleptMs: 600 } });
    await rt.close();
  });

  it("keeps the lease of a healthy attempt when the host's own main thread was busy past it: the heartbeats queued meanwhile count", async () => {
    const rt = await createRuntime({ dataDir: dataDir(), logger: false, threads: 1, leaseMs: 1_000, agents: [builtinAgent('sleep', { retry: { maxAttempts: 1 } })] });
    // Its first progress report: the attempt has been executing, and heartbeating, for a while.
    const executing = new Promise((resolve) => rt.on('task.progress', resolve));
    const submitted = await rt.submit({ agent: 'sleep', input: { ms: 3_000, steps: 10 } });
    await executing;
    // A synchronous stretch of the host's own (a big parse, a sort, a debugger pause) twice the lease.
    await new Promise<void>((resolve) =>
      setImmediate(() => {
        const until = Date.now() + 1_500;
        while (Date.now() < until);
        resolve();
      }),
    );
    const task = await rt.wait(submitted.id);
    expect(task).toMatchObject({ state: 'done', attempts: 1 });
    await rt.close();
  });
});

/** A pool whose attempts finish only when the test says so, and whose reports the test makes. */
function controlledPool() {
  let host: PoolHost | undefined;
  const runs: Array<{ request: AttemptRequest; finish: (result: WireResult) => void }> = [];
  const create = () => ({
    threads: 1,
    send: (request: AttemptRequest) => {
      runs.push({ request, finish: (result) => host!.ended(request.attemptId, request.token, result, true) });
      // A thread with a free slot starts the attempt at once.
      queueMicrotask(() => host!.began(request.attemptId, request.token, Date.now()));
    },
    connect: (to: PoolHost) => void (host = to),
    abort: async () => ({ foundIn: undefined, unresponsive: [] }),
    terminate: async () => undefined,
    destroy: async () => undefined,
  });
  return { create, runs, host: () => host! };
}

describe('fencing', () => {
  it('rejects every write of an attempt whose lease expired, records it as task.stale_result, and never changes the task', async () => {
    const clock = new ManualClock();
    const pool = controlledPool();
    const rt = await createRuntime(withPool({ dataDir: dataDir(), logger: false, threads: 1, slotsPerThread: 1, leaseMs: 1_000, clock, createPool: pool.create, agents: [builtinAgent('echo', { retry: { maxAttempts: 3, delayMs: 0 } })] }));
    const startedTwice = collectEvents(rt, 'task.started', 2);
    const task = await rt.submit({ agent: 'echo', input: 'x' });
    await new Promise<void>((resolve) => {
      const check = () => (pool.runs.length === 1 ? resolve() : setImmediate(check));
      check();
    });
    const zombie = pool.runs[0]!.request;
    // No heartbeat arrives: the lease runs out on the injected clock and the task is retried.
    clock.advance(1_001);
    clock.advance(1_000);
    const [, second] = await startedTwice;
    expect(second!.attemptId).not.toBe(zombie.attemptId);
    const stale = collectEvents(rt, 'task.stale_result', 3);
    pool.host().log(zombie.attemptId, zombie.token, [['info', 'zombie says hi', Date.now()]]);
    pool.host().progress(zombie.attemptId, zombie.token, 0.9, undefined, Date.now());
    pool.runs[0]!.finish({ ok: true, result: { kind: 'success', output: 'from the zombie' } });
    expect((await stale).map((e) => e.data.kind)).toEqual(['log', 'progress', 'result']);
    const current = await rt.get(task.id);
    expect(current).toMatchObject({ state: 'running', attempts: 2 });
    expect(current.progress).toBeUndefined();
    const lines = [];
    for await (const line of rt.logs(task.id)) lines.push(line);
    expect(lines).toEqual([]);

    // The current attempt's writes are accepted.
    const live = pool.runs[1]!.request;
    pool.host().log(live.attemptId, live.token, [['info', 'current', Date.now()]]);
    pool.runs[1]!.finish({ ok: true, result: { kind: 'success', output: 'from the live attempt' } });
    expect(await rt.wait(task.id)).toMatchObject({ state: 'done', output: 'from the live attempt', attempts: 2 });
    const kept = [];
    for await (const line of rt.logs(task.id)) kept.push(line.message);
    expect(kept).toEqual(['current']);
    await rt.close({ force: true });
  });

  it('settles each run exactly once: writes that arrive after the settle are stale', async () => {
    const pool = controlledPool();
    const rt = await createRuntime(withPool({ dataDir: dataDir(), logger: false, threads: 1, createPool: pool.create, agents: [builtinAgent('echo')] }));
    const settling: string[] = [];
    for (const type of ['task.done', 'task.failed', 'task.dropped', 'task.cancelled'] as const) rt.on(type, (e: RuntimeEvent) => settling.push(e.type));
    const task = await rt.submit({ agent: 'echo', input: 1 });
    await new Promise<void>((resolve) => {
      const check = () => (pool.runs.length === 1 ? resolve() : setImmediate(check));
      check();
    });
    const stale = collectEvents(rt, 'task.stale_result', 1);
    pool.runs[0]!.finish({ ok: true, result: { kind: 'success', output: 1 } });
    await rt.wait(task.id);
    pool.host().progress(pool.runs[0]!.request.attemptId, pool.runs[0]!.request.token, 1, undefined, 1);
    await stale;
    expect(settling).toEqual(['task.done']);
    expect(await rt.get(task.id)).toMatchObject({ state: 'done', output: 1 });
    await rt.close();
  });
});
