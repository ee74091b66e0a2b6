/**
 * close() can always close, on both stores (contract-lmdb.test.ts, contract-postgres.test.ts): a
 * force close ends a graceful one in progress, and each cleanup step runs in its own try, so one
 * that throws does not skip the others. (That an interrupted attempt is requeued with its budget
 * intact needs its store opened again: lifecycle.test.ts on LMDB, cluster-node-stop.test.ts on
 * PostgreSQL.)
 */
import { describe, expect, it } from 'vitest';
import { builtinAgent, ManualClock, type ClockTimer } from 'troupe';
import { fixtureAgent } from '../helpers.js';
import { heard, type ContractBackend } from './contract.js';

/** A manual clock whose clearTimeout throws once, when armed, and leaves that timer armed. */
class ClockThatFailsOnce extends ManualClock {
  armed = false;
  failed = 0;
  override clearTimeout(timer: ClockTimer): void {
    if (this.armed) {
      this.armed = false;
      this.failed++;
      throw new Error('clearTimeout failed');
    }
    super.clearTimeout(timer);
  }
}

/** Registers the close() contract against `backend` under `name`. */
export function closeContract(name: string, backend: ContractBackend): void {
  describe(`close() on ${name}`, () => {
    it('force: true on a graceful close in progress stops waiting for running attempts', async () => {
      // Reports progress until aborted.
      const rt = await backend.open({ cancelGraceMs: 100, agents: [{ name: 'progress', module: fixtureAgent('progress') }] });
      // A report shows the agent running on its thread: a close stops an attempt not yet running there at once.
      const running = heard(rt, (e) => e.type === 'task.progress');
      await rt.submit({ agent: 'progress' });
      await running;
      const graceful = rt.close({ timeoutMs: 600_000 });
      expect(rt.close({ force: true })).toBe(graceful);
      await graceful;
      expect(rt.state).toBe('closed');
    });

    it('runs every cleanup step when one throws: every timer is stopped, and the runtime ends closed', async () => {
      const clock = new ClockThatFailsOnce();
      const rt = await backend.open({ clock, agents: [builtinAgent('echo', { rate: { limit: 1, windowMs: 60_000 } })] });
      // Arm the runtime's timers: on LMDB a durable timer (the delayed start), a flow-control hold
      // (the rate bucket is empty after one start) and the supervisor (queued work); on PostgreSQL
      // the node's poll loops. Retention's, on both, is the first a close clears.
      await rt.submit({ agent: 'echo', input: 'later', delayMs: 60_000 });
      const first = await rt.submit({ agent: 'echo', input: 'now' });
      await rt.wait(first.id);
      await rt.submit({ agent: 'echo', input: 'held' });
      expect(clock.pending).toBeGreaterThanOrEqual(3);
      clock.armed = true;
      // Forced, so there is no deadline timer: the steps after the one whose clearTimeout threw must still run.
      await rt.close({ force: true });
      expect(rt.state).toBe('closed');
      expect(clock.failed).toBe(1);
      // Only the timer whose clearTimeout threw is still armed.
      expect(clock.pending).toBe(1);
    });
  });
}
