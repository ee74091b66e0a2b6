import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { describe, expect, it } from 'vitest';
import { createRuntime } from 'troupe';
import { fixtureAgent, tempDir } from '../helpers.js';

const CHILD = new URL('../../dist/test/fixtures/crash/waiting-child.js', import.meta.url);

// kill -9 while an agent waits for input: on reopen the task still waits (its attempt does not
// count), and the input resumes it with a new run that receives it.
describe('kill -9 while an agent waits for input', () => {
  it('keeps the task waiting, and the input resumes it with a new run', async () => {
    const dir = tempDir('troupe-wait-crash-');
    try {
      const child = spawn(process.execPath, [CHILD.pathname, dir.path], { stdio: ['ignore', 'pipe', 'inherit'] });
      let out = '';
      const waiting = new Promise<string>((resolve) => {
        child.stdout.on('data', (chunk: Buffer) => {
          out += chunk.toString();
          const match = /waiting (\S+)\n/.exec(out);
          if (match) resolve(match[1]!);
        });
      });
      const taskId = await waiting;
      const exited = once(child, 'exit');
      child.kill('SIGKILL');
      await exited;

      const rt = await createRuntime({ dataDir: dir.path, logger: false, threads: 1, agents: [{ name: 'int', module: fixtureAgent('interactive') }] });
      expect(rt.stats().rebuild.previousShutdownClean).toBe(false);
      expect(await rt.get(taskId)).toMatchObject({ state: 'waiting', runs: 1, attempts: 0, waitingFor: { kind: 'input', prompt: 'continue?' } });
      await rt.sendInput(taskId, { message: 'yes', idempotencyKey: 'answer' });
      expect(await rt.wait(taskId)).toMatchObject({ state: 'done', runs: 2, output: { answer: 'yes', run: `${taskId}:2` } });
      await rt.close();
    } finally {
      dir.cleanup();
    }
  }, 60_000);
});
