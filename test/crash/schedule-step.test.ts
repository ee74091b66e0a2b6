import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { openDataDir, tempDir } from '../helpers.js';

const CHILD = new URL('../../dist/test/fixtures/crash/schedule-step-child.js', import.meta.url);
const T0 = Date.UTC(2026, 0, 1, 10, 0, 0);
const HOUR = 3_600_000;

// The kill -9 test below the schedule's fire rarely lands between two commits, and a tick fired
// again after a restart dedupes on its idempotency key, so it cannot tell one step from two. This
// one kills the process at the first instant the tick's task is durable (its task.queued event):
// the schedule's advance, its counters and its schedule.fired event must be durable with it, or a
// restart would record the tick as skipped (catch-up `skip`) although its task runs.
describe('kill -9 right after a tick submits its task', () => {
  it('finds the schedule advanced in the same step', async () => {
    expect(existsSync(CHILD), 'npm test builds the child first').toBe(true);
    const dir = tempDir('troupe-sched-step-');
    try {
      const child = spawn(process.execPath, [CHILD.pathname, dir.path], { stdio: ['ignore', 'pipe', 'pipe'] });
      let err = '';
      child.stderr.on('data', (c: Buffer) => (err += c.toString()));
      const [code, signal] = (await once(child, 'exit')) as [number | null, NodeJS.Signals | null];
      expect(signal, `child exited ${String(code)}: ${err}`).toBe('SIGKILL');

      // What a restart would see: the store replays its log before anything is read.
      const store = await openDataDir(dir.path);
      const schedule = store.read.schedules.get('hourly')!;
      const fired: Array<Record<string, any>> = [];
      for (const { value } of store.read.events.range()) if (value.type === 'schedule.fired') fired.push(value);
      const stored: Array<Record<string, any>> = [];
      for (const { value } of store.read.tasks.range()) stored.push(value);
      await store.close(true);

      const key = `schedule:hourly:${new Date(T0 + HOUR).toISOString()}`;
      expect(stored.map((t) => t.idempotencyKey)).toEqual([key]);
      expect(fired.map((e) => ({ taskId: e.taskId, tick: e.data.tick }))).toEqual([{ taskId: stored[0]!.id, tick: T0 + HOUR }]);
      expect(schedule).toMatchObject({ nextRunAt: T0 + 2 * HOUR, fired: 1, skipped: 0, lastTickAt: T0 + HOUR, lastTaskId: stored[0]!.id });
    } finally {
      dir.cleanup();
    }
  }, 60_000);
});
