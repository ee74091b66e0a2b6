import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { describe, expect, it } from 'vitest';
import { createRuntime } from 'troupe';
import { fixtureAgent, tempDir } from '../helpers.js';

const CHILD = new URL('../../dist/test/fixtures/crash/progress-child.js', import.meta.url);

// kill -9 while an agent reports progress, right after a progress commit was published: on reopen
// the task holds at least that step, each step's event is in the log once and in order, and the
// attempt that died is the one its policy allowed.
describe('kill -9 while an agent reports progress', () => {
  it('keeps every acknowledged step, each event once, and runs no attempt past the policy', async () => {
    const dir = tempDir('troupe-progress-crash-');
    try {
      const child = spawn(process.execPath, [CHILD.pathname, dir.path], { stdio: ['ignore', 'pipe', 'inherit'] });
      let out = '';
      const acked = new Promise<{ taskId: string; step: number }>((resolve) => {
        child.stdout.on('data', (chunk: Buffer) => {
          out += chunk.toString();
          const steps = [...out.matchAll(/progress (\S+) (\d+)\n/g)];
          const last = steps.at(-1);
          // Killed in the turn the fifth step's commit was published.
          if (last && Number(last[2]) >= 5) {
            child.kill('SIGKILL');
            resolve({ taskId: last[1]!, step: Number(last[2]) });
          }
        });
      });
      const { taskId, step } = await acked;
      await once(child, 'exit');

      const rt = await createRuntime({ dataDir: dir.path, logger: false, threads: 1, agents: [{ name: 'steps', module: fixtureAgent('progress'), retry: { maxAttempts: 1 } }] });
      try {
        expect(rt.stats().rebuild.previousShutdownClean).toBe(false);
        // Its one attempt crashed: dropped, never run again.
        const task = await rt.wait(taskId);
        expect(task).toMatchObject({ state: 'dropped', reason: 'retry_exhausted', attempts: 1 });
        expect(task.progress!.value).toBeGreaterThanOrEqual(step / 1000);
        expect(task.progress!.message).toBe(`step ${Math.round(task.progress!.value * 1000)}`);

        const steps: number[] = [];
        const types: string[] = [];
        for await (const ev of rt.events({ taskId, signal: AbortSignal.timeout(5_000) })) {
          types.push(ev.type);
          if (ev.type === 'task.progress') steps.push(Number(String(ev.data!.message).slice('step '.length)));
          if (ev.type === 'task.dropped') break;
        }
        expect(steps.slice(0, step)).toEqual(Array.from({ length: step }, (_, i) => i + 1));
        expect(new Set(steps).size).toBe(steps.length);
        expect(steps.at(-1)).toBe(Math.round(task.progress!.value * 1000));
        expect(types.filter((t) => t === 'task.started')).toHaveLength(1);
      } finally {
        await rt.close();
      }
    } finally {
      dir.cleanup();
    }
  }, 60_000);
});
