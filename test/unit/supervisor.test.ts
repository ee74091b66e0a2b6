/**
 * The supervisor's cycle (src/supervisor/supervisor.ts) on a manual clock: a cycle asked for
 * while one runs (rt.poke() after a change) runs once more after it, however many ask.
 */
import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/clock.js';
import { createSupervisor } from '../../src/supervisor/supervisor.js';
import { capturedLog } from '../log-capture.js';

function harness() {
  const runs: Array<() => void> = [];
  const supervisor = createSupervisor({
    clock: new ManualClock(),
    log: capturedLog('error').log,
    dispatcher: { busy: false, expiredLeases: () => [] } as never,
    sweepMs: 100,
    cycle: { enabled: true, run: () => new Promise<void>((resolve) => runs.push(resolve)) },
  });
  return { supervisor, runs };
}

const turn = () => new Promise((resolve) => setImmediate(resolve));

describe('supervisor cycles', () => {
  it('runs one more cycle after the one under way when asked during it, and resolves once that one is done', async () => {
    const { supervisor, runs } = harness();
    const first = supervisor.cycleNow();
    const poked = supervisor.cycleNow();
    const pokedAgain = supervisor.cycleNow();
    expect(runs).toHaveLength(1);
    let done = false;
    void poked.then(() => (done = true));
    runs[0]!();
    await first;
    await turn();
    expect(runs).toHaveLength(2);
    expect(done).toBe(false);
    runs[1]!();
    await Promise.all([poked, pokedAgain]);
    expect(runs).toHaveLength(2);
    supervisor.stop();
  });
});
