/**
 * Races between a stop under way and what comes in meanwhile, on real threads (LMDB runtime): a
 * cancel while a timeout or kill is stopping the attempt, an input while a kill stops a waiting
 * attempt, a parked attempt and its instance's dispatch target or its agent's limit, and a thread's
 * BEGIN that reaches the host after the stop. Each agent holds its stop until the test opens a gate
 * (a file), so the order is the test's, whatever the machine's speed.
 */
import { describe, expect, it } from 'vitest';
import { builtinAgent, createRuntime, type Runtime, type RuntimeOptions } from 'troupe';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { AttemptRequest } from '../../actors/wire.js';
import type { PoolHost } from '../../src/pool/pool.js';
import type { RuntimeOptions as InternalOptions } from '../../src/options.js';
import { fixtureAgent, runtimes, scratchDirs, started, tempDir } from '../helpers.js';

const runtime = runtimes();
const dataDir = scratchDirs();
const interactive = (extra: Record<string, unknown> = {}) => ({ name: 'interactive', module: fixtureAgent('interactive'), ...extra });

/** Resolves once the file exists: what the agent writes when it was aborted. */
async function appeared(path: string): Promise<void> {
  while (!existsSync(path)) await new Promise((resolve) => setImmediate(resolve));
}

/** Resolves with the first event of `type` for the task. */
function next(rt: Runtime, type: 'task.waiting' | 'task.started', taskId: string): Promise<void> {
  return new Promise((resolve) => {
    const off = rt.on(type, (e: { taskId?: string }) => {
      if (e.taskId !== taskId) return;
      off();
      resolve();
    });
  });
}

describe('a cancel while the attempt is already being stopped', () => {
  it('wins over a timeout: the task ends cancelled, not retried', async () => {
    const gate = tempDir();
    try {
      const rt = await runtime({ threads: 1, cancelGraceMs: 60_000, agents: [interactive({ retry: { maxAttempts: 3, delayMs: 0 } })] });
      const task = await rt.submit({ agent: 'interactive', input: { mode: 'gatedStop', dir: gate.path }, timeoutMs: 50 });
      // The timeout aborted it; it holds its stop until the gate opens.
      await appeared(join(gate.path, 'aborted'));
      const cancelled = rt.cancel(task.id, 'no longer wanted');
      writeFileSync(join(gate.path, 'go'), '');
      expect(await cancelled).toMatchObject({ state: 'cancelled', reason: 'no longer wanted', attempts: 1 });
    } finally {
      gate.cleanup();
    }
  });

  it('wins over kill: the task ends cancelled, not requeued', () => cancelWhileKilled('cancel, then the agent ends'));
});

describe('a cancel decided as the attempt ends for another reason', () => {
  it('still cancels the task: the attempt is told at once, not after the commit', () => cancelWhileKilled('the agent ends, then cancel'));
});

/** Kills the runtime under a running attempt, and cancels its task while the kill stops it. */
async function cancelWhileKilled(order: 'cancel, then the agent ends' | 'the agent ends, then cancel'): Promise<void> {
  const gate = tempDir();
  try {
    const rt = await runtime({ threads: 1, cancelGraceMs: 60_000, agents: [interactive()] });
    const task = await rt.submit({ agent: 'interactive', input: { mode: 'gatedStop', dir: gate.path } });
    // Its agent runs (not only handed to its thread): kill aborts it there.
    await appeared(join(gate.path, 'first'));
    const killed = rt.kill('ops');
    await appeared(join(gate.path, 'aborted'));
    const go = () => writeFileSync(join(gate.path, 'go'), '');
    if (order === 'the agent ends, then cancel') go();
    const cancelled = rt.cancel(task.id, 'no longer wanted');
    if (order === 'cancel, then the agent ends') go();
    await killed;
    expect(await cancelled).toMatchObject({ state: 'cancelled', reason: 'no longer wanted' });
    expect((await rt.get(task.id)).state).toBe('cancelled');
  } finally {
    gate.cleanup();
  }
}

describe('an attempt that waits on the host', () => {
  it('gets an input that came while kill stopped it: the task resumes with a new run once dispatch does', async () => {
    const gate = tempDir();
    try {
      const rt = await runtime({ threads: 1, cancelGraceMs: 60_000, agents: [interactive()] });
      const task = await rt.submit({ agent: 'interactive', input: { mode: 'gatedStop', dir: gate.path, ask: true } });
      await next(rt, 'task.waiting', task.id);
      const killed = rt.kill('ops');
      await appeared(join(gate.path, 'aborted'));
      // The attempt is being stopped: the input is kept for the task, not given to it.
      expect(await rt.sendInput(task.id, { message: 'approved' })).toMatchObject({ seq: 1, delivered: false });
      writeFileSync(join(gate.path, 'go'), '');
      await killed;
      await rt.unfreeze();
      const done = await rt.wait(task.id);
      expect(done).toMatchObject({ state: 'done', runs: 2, output: { answer: 'approved' } });
    } finally {
      gate.cleanup();
    }
  });

  it('does not hold its instance at a dispatch target of 1 while it waits for a child of the same instance', async () => {
    const rt = await runtime({ threads: 1, slotsPerThread: 2, agents: [interactive()] });
    const warm = await rt.submit({ agent: 'interactive', input: { mode: 'leaf' } });
    await rt.wait(warm.id);
    await rt.setDispatchTarget(warm.instanceKey, 1);
    const parent = await rt.submit({ agent: 'interactive', input: { mode: 'family', agent: 'interactive' } });
    const done = await rt.wait(parent.id);
    expect(done.state).toBe('done');
    expect(done.output).toMatchObject({ joined: [{ state: 'done', output: 'leaf' }] });
    expect(done.instanceKey).toBe(warm.instanceKey);
    expect(rt.instances().find((i) => i.key === warm.instanceKey)).toMatchObject({ running: 0, pending: 0, stopping: 0 });
  });

  it('takes its agent reservation back when it resumes: nothing new starts while it keeps the agent over its limit', async () => {
    const gates = tempDir();
    try {
      const rt = await runtime({ threads: 1, slotsPerThread: 4, agents: [interactive({ concurrency: 1 })] });
      const [gateA, gateB, gateC] = ['a', 'b', 'c'].map((name) => join(gates.path, name)) as [string, string, string];
      const a = await rt.submit({ agent: 'interactive', input: { mode: 'askThenGate', path: gateA } });
      await next(rt, 'task.waiting', a.id);
      // A waits: it gave its reservation back, so B runs.
      const b = await rt.submit({ agent: 'interactive', input: { mode: 'gate', path: gateB } });
      await started(rt, b.id);
      // A resumes at once, over the limit of 1, beside B.
      await rt.sendInput(a.id, { message: 'go' });
      const c = await rt.submit({ agent: 'interactive', input: { mode: 'gate', path: gateC } });
      writeFileSync(gateB, '');
      await rt.wait(b.id);
      // B's end leaves A's reservation: the agent is at its limit, and C waits.
      expect((await rt.get(c.id)).state).toBe('queued');
      expect(rt.stats().agents.interactive).toMatchObject({ reserved: 1, queued: 1 });
      writeFileSync(gateA, '');
      expect(await rt.wait(a.id)).toMatchObject({ state: 'done', output: { answer: 'go' } });
      await started(rt, c.id);
      writeFileSync(gateC, '');
      expect((await rt.wait(c.id)).state).toBe('done');
      expect(rt.stats().agents.interactive).toMatchObject({ reserved: 0, queued: 0 });
    } finally {
      gates.cleanup();
    }
  });
});

/** Options with the internal `createPool` (not in the public types). */
const withPool = (options: RuntimeOptions & Pick<InternalOptions, 'createPool'>): RuntimeOptions => options;

describe("a thread's BEGIN that reaches the host after the stop", () => {
  it('leaves the instance counting the attempt as stopping until it ends, then as nothing', async () => {
    let host: PoolHost | undefined;
    // The thread began the attempt before the host's abort reached it: its BEGIN comes after the
    // stop, then its end.
    const create = () => ({
      threads: 1,
      send(request: AttemptRequest) {
        if ((request.input as { hold?: boolean } | undefined)?.hold) return;
        queueMicrotask(() => {
          host!.began(request.attemptId, request.token, Date.now());
          host!.ended(request.attemptId, request.token, { ok: true, result: { kind: 'success', output: 'ok' } }, true);
        });
      },
      connect: (to: PoolHost) => void (host = to),
      async abort(attemptId: string, token: number) {
        setImmediate(() => {
          host!.began(attemptId, token, Date.now());
          setImmediate(() => host!.ended(attemptId, token, { ok: false, error: { code: 'ABORTED', message: 'stopped', retryable: false, fault: 'agent' } }, true));
        });
        return { foundIn: 1, unresponsive: [] };
      },
      terminate: async () => undefined,
      destroy: async () => undefined,
    });
    const rt = await createRuntime(withPool({ dataDir: dataDir(), logger: false, threads: 1, slotsPerThread: 1, createPool: create, agents: [builtinAgent('echo')] }));
    try {
      const warm = await rt.submit({ agent: 'echo', input: 'warm' });
      await rt.wait(warm.id);
      await rt.setDispatchTarget(warm.instanceKey, 1);
      const held = await rt.submit({ agent: 'echo', input: { hold: true } });
      await started(rt, held.id);
      expect(await rt.cancel(held.id)).toMatchObject({ state: 'cancelled' });
      expect(rt.instances().find((i) => i.key === warm.instanceKey)).toMatchObject({ pending: 0, running: 0, stopping: 0, status: 'idle' });
      // The instance admits work again under its target of 1.
      const after = await rt.submit({ agent: 'echo', input: 'after' });
      expect(await rt.wait(after.id)).toMatchObject({ state: 'done', output: 'ok' });
    } finally {
      await rt.close();
    }
  });
});
