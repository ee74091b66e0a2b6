/**
 * The contract of long timers (contract.ts's suite, run by contract-lmdb.test.ts and
 * contract-postgres.test.ts): timeouts and delays past Node's 2^31-1 ms timer limit. An overflowing
 * `setTimeout` fires after 1 ms (with a TimeoutOverflowWarning), so a long timeout must not fire
 * early and a far delay must not spin. These tests wait a few hundred milliseconds of wall time on
 * purpose: that is the window in which an overflowed timer would have fired hundreds of times. The
 * tests share one runtime (see `sharedRuntime`), each waiting for its own tasks by id.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { builtinAgent, type RuntimeEvent, type Task } from 'troupe';
import { fixtureAgent, started } from '../helpers.js';
import { nextEvent, sharedRuntime, type ContractBackend } from './contract.js';

// A minute past the limit, so what is left of it when a timer is armed is still past it.
const LONG = 2 ** 31 + 60_000;

const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Settles with how `promise` ended, so a late rejection is never unhandled. */
function outcome(promise: Promise<Task>): { current: () => 'pending' | Task | Error } {
  let current: 'pending' | Task | Error = 'pending';
  promise.then(
    (task) => (current = task),
    (error: Error) => (current = error),
  );
  return { current: () => current };
}

/**
 * Counts the TimeoutOverflowWarnings of each test of the calling block (call at its top level):
 * the warning Node gives for a `setTimeout` past the limit, which it fires after 1 ms.
 */
export function overflowWarnings(): () => number {
  let overflows = 0;
  const onWarning = (warning: Error) => {
    if (warning.name === 'TimeoutOverflowWarning') overflows++;
  };
  beforeEach(() => {
    overflows = 0;
    process.on('warning', onWarning);
  });
  afterEach(() => {
    process.off('warning', onWarning);
  });
  return () => overflows;
}

/** Registers the long-timer contract's tests against `backend` under `name`. */
export function timersContract(name: string, backend: ContractBackend): void {
  describe(`long timers on ${name}`, () => {
    const agents = [builtinAgent('sleep', { retry: { maxAttempts: 1 } }), builtinAgent('echo'), { name: 'int', module: fixtureAgent('interactive') }];
    const rt = sharedRuntime(backend, { threads: 1, slotsPerThread: 2, agents });

    const overflows = overflowWarnings();

    it('runs a task with a timeoutMs past 2^31 to done instead of timing it out at once', async () => {
      const task = await rt().submit({ agent: 'sleep', input: { ms: 100 }, timeoutMs: LONG });
      expect(await rt().wait(task.id)).toMatchObject({ state: 'done', attempts: 1, output: { sleptMs: 100 } });
      expect(overflows()).toBe(0);
    });

    it('keeps rt.wait with a timeoutMs past 2^31 pending on a held-back task, then resolves it', async () => {
      await rt().freeze('hold');
      const task = await rt().submit({ agent: 'echo', input: 'later' });
      const wait = outcome(rt().wait(task.id, { timeoutMs: LONG }));
      try {
        await pause(200);
        expect(wait.current()).toBe('pending');
        expect(overflows()).toBe(0);
      } finally {
        // The runtime is the other tests' too.
        await rt().unfreeze();
      }
      await expect(rt().wait(task.id)).resolves.toMatchObject({ state: 'done' });
      await pause(0);
      expect(wait.current()).toMatchObject({ state: 'done', output: 'later' });
    });

    it('holds a task submitted with delayMs past 2^31 in the queue, without spinning', async () => {
      // The thread's start-up (loading its modules) is not what this measures: let it finish first.
      await rt().wait((await rt().submit({ agent: 'echo', input: 'warm' })).id);
      const starts: RuntimeEvent[] = [];
      const off = rt().on('task.started', (e) => starts.push(e));
      const task = await rt().submit({ agent: 'echo', input: 'next month', delayMs: LONG });
      expect(task.runAt).toBeGreaterThanOrEqual(task.createdAt + LONG);
      const cpu = process.cpuUsage();
      await pause(300);
      const used = process.cpuUsage(cpu);
      off();
      expect(await rt().get(task.id)).toMatchObject({ state: 'queued', attempts: 0 });
      expect(starts).toEqual([]);
      expect(overflows()).toBe(0);
      expect((used.user + used.system) / 1_000).toBeLessThan(100);
      await rt().cancel(task.id);
    });

    it('lets an agent sleep past 2^31 ms in its worker thread until cancelled', async () => {
      const task = await rt().submit({ agent: 'sleep', input: { ms: LONG, steps: 1 } });
      await started(rt(), task.id);
      await pause(300);
      expect(await rt().get(task.id)).toMatchObject({ state: 'running' });
      await rt().cancel(task.id);
      expect(await rt().wait(task.id)).toMatchObject({ state: 'cancelled' });
      expect(overflows()).toBe(0);
    });

    it('keeps waitForInput with a timeoutMs past 2^31 waiting until an input arrives', async () => {
      const task = await rt().submit({ agent: 'int', input: { mode: 'timeout', timeoutMs: LONG } });
      await nextEvent(rt(), 'task.waiting', task.id);
      await pause(300);
      expect(await rt().get(task.id)).toMatchObject({ state: 'waiting' });
      await rt().sendInput(task.id, { message: 'here' });
      expect(await rt().wait(task.id)).toMatchObject({ state: 'done', output: { answer: 'here' } });
      expect(overflows()).toBe(0);
    });
  });
}
