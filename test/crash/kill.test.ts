import { describe, expect, it } from 'vitest';
import { runCrashSuite } from '../fixtures/crash/harness.js';
import { tempDir } from '../helpers.js';

// The harness spawns the built child (dist/test/fixtures/crash/child.js): `npm test` builds first.
describe('kill -9 at random moments', () => {
  it('loses no task, settles no run twice, and never exceeds the attempt budget', async () => {
    const dir = tempDir('troupe-crash-');
    const seed = Number(process.env.CRASH_SEED ?? 20261122);
    const phases: string[] = [];
    try {
      const report = await runCrashSuite({ dataDir: dir.path, kills: 12, tasksPerRound: 200, seed, onKill: (_, phase) => phases.push(phase) });
      expect(report.problems, `seed ${seed}`).toEqual([]);
      expect(report.kills).toBe(12);
      expect(phases.filter((p) => p === 'work').length).toBeGreaterThanOrEqual(5);
      // Thousands of tasks went through, the kills really cut attempts short, and every task that
      // ended done really ran. (Not "more attempts than tasks": a kill charges a crashed attempt to
      // every attempt started ahead of the free slots, and under load enough of those tasks can be
      // dropped without running that the agent records fewer attempts than there are tasks.)
      expect(report.tasks).toBeGreaterThanOrEqual(1_000);
      expect(report.crashedAttempts).toBeGreaterThan(0);
      expect(report.attemptsRecordedByAgent).toBeGreaterThanOrEqual(report.byState.done ?? 0);
      expect(report.byState.done ?? 0).toBeGreaterThan(0);
      expect((report.byState.done ?? 0) + (report.byState.failed ?? 0) + (report.byState.dropped ?? 0)).toBe(report.tasks);
    } finally {
      dir.cleanup();
    }
  }, 120_000);
});
