import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { prng } from '../fixtures/prng.js';
import { openDataDir, tempDir } from '../helpers.js';

const CHILD = new URL('../../dist/test/fixtures/crash/schedule-child.js', import.meta.url);
const SCALE = 200; // one fake second every 5 ms

function run(dataDir: string, fakeStart: number, realStart: number, settle: boolean) {
  const child = spawn(process.execPath, [CHILD.pathname, dataDir, String(fakeStart), String(realStart), String(SCALE), ...(settle ? ['--settle'] : [])], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr.on('data', (c: Buffer) => (err += c.toString()));
  const line = async (text: string) => {
    while (!out.includes(`${text}\n`)) {
      if (child.exitCode !== null) throw new Error(`child exited ${child.exitCode}: ${err}`);
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  };
  return { child, line };
}

// kill -9 while a per-second schedule fires: every tick from the first to the last fires exactly
// once. Advancing nextRunAt and submitting the tick's task share one step, so a crash can neither
// skip a tick (advanced, not submitted) nor double it (submitted, not advanced).
describe('kill -9 while a schedule fires', () => {
  it('neither skips nor doubles a tick', async () => {
    expect(existsSync(CHILD), 'npm test builds the child first').toBe(true);
    const dir = tempDir('troupe-sched-crash-');
    const random = prng(Number(process.env.CRASH_SEED ?? 4242));
    const fakeStart = Date.UTC(2026, 0, 1);
    const realStart = Date.now();
    try {
      for (let kill = 0; kill < 6; kill++) {
        const { child, line } = run(dir.path, fakeStart, realStart, false);
        if (random() < 0.7) await line('open');
        await new Promise((resolve) => setTimeout(resolve, Math.floor(random() * 300)));
        const exited = child.exitCode !== null ? Promise.resolve() : once(child, 'exit');
        child.kill('SIGKILL');
        await exited;
      }
      const last = run(dir.path, fakeStart, realStart, true);
      await last.line('settled');

      // What a restart would see: the store replays its log before anything is read.
      const store = await openDataDir(dir.path);
      const schedule = store.read.schedules.get('tick')!;
      const ticks: number[] = [];
      for (const { value } of store.read.events.range()) if (value.type === 'schedule.fired') ticks.push(value.data.tick as number);
      const keys = new Set<string>();
      for (const { value } of store.read.tasks.range()) if (typeof value.idempotencyKey === 'string') keys.add(value.idempotencyKey);
      await store.close(true);

      expect(ticks.length).toBeGreaterThan(20);
      const sorted = [...ticks].sort((a, b) => a - b);
      expect(new Set(ticks).size, 'a tick fired twice').toBe(ticks.length);
      const first = sorted[0]!;
      const lastTick = sorted.at(-1)!;
      expect(sorted, 'a tick was skipped').toEqual(Array.from({ length: (lastTick - first) / 1000 + 1 }, (_, i) => first + i * 1000));
      expect(schedule).toMatchObject({ fired: ticks.length, skipped: 0, lastTickAt: lastTick });
      expect(schedule.nextRunAt).toBe(lastTick + 1000);
      expect(keys.size).toBe(ticks.length);
      for (const tick of ticks) expect(keys.has(`schedule:tick:${new Date(tick).toISOString()}`)).toBe(true);
    } finally {
      dir.cleanup();
    }
  }, 120_000);
});
