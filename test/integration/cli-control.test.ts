/**
 * The `troupe` binary's control connection, run as a child process: replies of any size a task
 * makes arrive whole over the socket, a runtime that does not answer is reported instead of
 * waited on forever, and a socket refused on purpose exits 1.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { builtinAgent, createRuntime, type Task } from 'troupe';
import { CLI_AGENTS, runCli, serveCli, stopCli, tempDir } from '../helpers.js';

describe('the control connection', () => {
  it('carries a reply larger than the 16 MiB a request may be', async () => {
    const dir = tempDir('troupe-cli-control-');
    const dataDir = join(dir.path, 'data');
    try {
      const rt = await createRuntime({ dataDir, logger: false, threads: 1, agents: [builtinAgent('echo')] });
      const SIZE = 9 * 1024 * 1024;
      let id: string;
      try {
        id = (await rt.wait((await rt.submit({ agent: 'echo', input: 'x'.repeat(SIZE) })).id)).id;
      } finally {
        await rt.close();
      }
      // Input and output: a reply of over 18 MiB.
      const run = await serveCli(['--agents', CLI_AGENTS, '--data-dir', dataDir, '--threads', '1']);
      try {
        const shown = await runCli(['show', id, '--json', '--data-dir', dataDir]);
        expect(shown.stderr).toBe('');
        expect(shown.code).toBe(0);
        const task = JSON.parse(shown.stdout) as Task;
        expect([task.id, task.state, (task.output as string).length, (task.input as string).length]).toEqual([id, 'done', SIZE, SIZE]);
      } finally {
        expect(await stopCli(run)).toBe(0);
      }
    } finally {
      dir.cleanup();
    }
  });
});

describe('a runtime that accepts the connection but does not answer', () => {
  it('is NOT_ANSWERING, exit 3, after a few seconds, not a command that hangs', async () => {
    const dir = tempDir('troupe-cli-control-');
    const dataDir = join(dir.path, 'data');
    const run = await serveCli(['--agents', CLI_AGENTS, '--data-dir', dataDir, '--threads', '1']);
    try {
      // Stopped: the kernel still accepts connections on its socket, nothing reads them.
      run.child.kill('SIGSTOP');
      const socket = join(dataDir, 'control.sock');
      const [listed, waited] = await Promise.all([runCli(['list', '--data-dir', dataDir]), runCli(['wait', 'some-task', '--data-dir', dataDir])]);
      for (const result of [listed, waited]) {
        expect(result).toEqual({ code: 3, stdout: '', stderr: `troupe: NOT_ANSWERING: a runtime accepted the connection on ${socket} but did not answer within 5000 ms\n` });
      }
    } finally {
      run.child.kill('SIGCONT');
      expect(await stopCli(run)).toBe(0);
      dir.cleanup();
    }
  });
});

describe('a control socket the CLI refuses', () => {
  it('is CONTROL_FAILED, exit 1, when control.sock is not a socket', async () => {
    const dir = tempDir('troupe-cli-control-');
    try {
      writeFileSync(join(dir.path, 'control.sock'), '');
      const result = await runCli(['list', '--data-dir', dir.path]);
      expect(result).toEqual({ code: 1, stdout: '', stderr: `troupe: CONTROL_FAILED: ${join(dir.path, 'control.sock')} is not a socket: refusing to connect\n` });
    } finally {
      dir.cleanup();
    }
  });
});
