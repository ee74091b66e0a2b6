import { describe, expect, it } from 'vitest';
import type { CronSchedule } from '../../src/scheduler/cron.js';
import { planFire, type PlannedSchedule } from '../../src/store/postgres/schedule-plan.js';
import type { TaskRow } from '../../src/store/postgres/checks.js';

const MIN = 60_000;
/** Every minute, on the minute. */
const EVERY_MINUTE: CronSchedule = {
  expression: '* * * * *',
  tz: 'UTC',
  fields: 5,
  next: (after) => (Math.floor(after / MIN) + 1) * MIN,
  between(from, to, limit) {
    const out: number[] = [];
    for (let t = (Math.floor(from / MIN) + 1) * MIN; t <= to && out.length < limit; t += MIN) out.push(t);
    return out;
  },
};

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
