/**
 * close() can always close: a force close ends a graceful one in progress, and each cleanup step
 * runs in its own try, so one that throws does not skip the others. (Bad options, rejected without
 * being cached, and concurrent calls sharing one promise: the contract suite, on both stores.)
 */
import { describe, expect, it } from 'vitest';
import { builtinAgent, createRuntime, ManualClock, type ClockTimer } from 'troupe';
import { scratchDirs } from '../helpers.js';

const dataDir = scratchDirs();
const base = { logger: false as const, threads: 1, slotsPerThread: 2 };

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

describe('close()', () => {
  it('force: true on a graceful close in progress stops waiting for running attempts', async () => {
    const path = dataDir();
    const rt = await createRuntime({ ...base, dataDir: path, cancelGraceMs: 100, agents: [builtinAgent('sleep')] });
    const started = new Promise<void>((resolve) => rt.on('task.started', () => resolve()));
    const task = await rt.submit({ agent: 'sleep', input: { ms: 600_000 } });
    await started;
    const graceful = rt.close({ timeoutMs: 600_000 });
    await rt.close({ force: true });
    await graceful;
    expect(rt.state).toBe('closed');
    // Interrupted by the close, not failed: requeued on the next open, its budget intact.
    const reopened = await createRuntime({ ...base, dataDir: path });
    expect(await reopened.get(task.id)).toMatchObject({ state: 'queued', attempts: 0 });
    await reopened.close();
  });

  it('runs every cleanup step when one throws: every timer is stopped, and the runtime ends closed', async () => {
    const clock = new ClockThatFailsOnce();
    const rt = await createRuntime({
      ...base,
      dataDir: dataDir(),
      clock,
      agents: [builtinAgent('echo', { rate: { limit: 1, windowMs: 60_000 } })],
    });
    // Arm the three kinds of timer: a durable timer (delayed start), a flow-control hold (the rate
    // bucket is empty after one start) and the supervisor (queued work).
    await rt.submit({ agent: 'echo', input: 'later', delayMs: 60_000 });
    const first = await rt.submit({ agent: 'echo', input: 'now' });
    await rt.wait(first.id);
    await rt.submit({ agent: 'echo', input: 'held' });
    expect(clock.pending).toBeGreaterThanOrEqual(3);
    clock.armed = true;
    // Forced, so there is no deadline timer: the first clearTimeout is the timer wheel's, and the
    // supervisor's and flow control's steps must still run after it threw.
    await rt.close({ force: true });
    expect(rt.state).toBe('closed');
    expect(clock.failed).toBe(1);
    // Only the timer whose clearTimeout threw is still armed.
    expect(clock.pending).toBe(1);
  });
});
