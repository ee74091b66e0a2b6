import { describe, expect, it } from 'vitest';
import { EVERY_MINUTE, MIN } from '../fixtures/every-minute.js';
import { planFire, type PlannedSchedule } from '../../src/store/postgres/schedule-plan.js';
import type { TaskRow } from '../../src/store/postgres/checks.js';

describe('planFire (PostgreSQL)', () => {
  it('catchUp once fires only the latest tick of a downtime longer than one look, whatever the overlap', () => {
    const now = 100 * MIN + 5_000;
    for (const overlap of ['allow', 'skip', 'queue_one'] as const) {
      let schedule: PlannedSchedule = { id: 's', overlap, catchUp: 'once', catchUpWindowMs: 86_400_000, paused: false, nextRunAt: 10 * MIN };
      const fired: number[] = [];
      for (let looks = 0; schedule.nextRunAt <= now; looks++) {
        expect(looks).toBeLessThan(30);
        const plan = planFire(schedule, { cron: EVERY_MINUTE, last: null, now, openedAt: now, maxTicks: 7, rowOf: () => ({}) as TaskRow });
        fired.push(...plan.tasks.map((t) => t.tick));
        schedule = { ...schedule, nextRunAt: plan.next, ...(plan.pending === null ? {} : { pendingTick: plan.pending }) };
      }
      expect({ overlap, fired }).toEqual({ overlap, fired: [100 * MIN] });
    }
  });
});
