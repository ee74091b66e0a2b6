/**
 * The `troupe` binary writing to pipes, run as a child process: output larger than a pipe holds
 * arrives whole, and a reader that goes away (`troupe list | head -1`) ends the command quietly,
 * with the runtime it opened closed, instead of crashing on EPIPE.
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { builtinAgent, createRuntime, type Task } from 'troupe';
import { CLI_AGENTS, CLI_PATH, runCli, serveCli, startCli, stopCli, tempDir, type CliResult } from '../helpers.js';

/** Runs `troupe ...args` with its stdout closed from the start: every write to it fails with EPIPE. */
function withStdoutClosed(args: string[]): Promise<CliResult> {
  const child = spawn(process.execPath, [CLI_PATH, ...args], { env: { ...process.env, NO_COLOR: undefined, FORCE_COLOR: undefined }, stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout.destroy();
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout: '', stderr }));
  });
}

describe('output to a pipe', () => {
  let dir: { path: string; cleanup: () => void };
  let big: Task;
  const BIG = 1_000_000;

  beforeAll(async () => {
    dir = tempDir('troupe-cli-pipes-');
    const rt = await createRuntime({ dataDir: dir.path, logger: false, threads: 1, agents: [builtinAgent('echo')] });
    try {
      big = await rt.wait((await rt.submit({ agent: 'echo', input: 'x'.repeat(BIG) })).id);
    } finally {
      await rt.close();
    }
  });

  afterAll(() => dir.cleanup());

  it('arrives whole when it is larger than the pipe holds, as JSON or text', async () => {
    const asJson = await runCli(['show', big.id, '--json', '--data-dir', dir.path]);
    expect(asJson.stderr).toBe('');
    expect(asJson.code).toBe(0);
    expect(JSON.parse(asJson.stdout)).toMatchObject({ id: big.id, state: 'done', output: 'x'.repeat(BIG) });
    const asText = await runCli(['show', big.id, '--data-dir', dir.path]);
    expect(asText.code).toBe(0);
    const lines = asText.stdout.split('\n');
    expect(lines.find((line) => line.startsWith('output '))).toBe(`output     ${'x'.repeat(BIG)}`);
    // The last field is there too: nothing after the long one was dropped.
    expect(lines.at(-2)).toMatch(/^settled +\S+$/);
  });

  it('ends a command quietly when its reader has gone, and closes the data dir it opened', async () => {
    for (const args of [['list'], ['show', big.id, '--json'], ['status']]) {
      expect(await withStdoutClosed([...args, '--data-dir', dir.path]), args.join(' ')).toEqual({ code: 0, stdout: '', stderr: '' });
    }
    // Closed cleanly: the next command opens the dir at once, with nothing to recover.
    const listed = await runCli(['list', '--json', '--data-dir', dir.path]);
    expect(listed.code).toBe(0);
    expect((JSON.parse(listed.stdout) as { tasks: Task[] }).tasks.map((t) => t.id)).toEqual([big.id]);
  });
});

describe('a follow whose reader goes away', () => {
  it('stops following and exits 0 quietly, and the runtime serves on', async () => {
    const dir = tempDir('troupe-cli-pipes-');
    const dataDir = join(dir.path, 'data');
    const run = await serveCli(['--agents', CLI_AGENTS, '--data-dir', dataDir, '--threads', '1']);
    try {
      const id = (await runCli(['submit', 'ask', '--data-dir', dataDir])).stdout.trim();
      // The task logs "asking" and waits: the follow has a line to write, and no end.
      const follower = startCli(['tail', id, '--follow', '--data-dir', dataDir]);
      await follower.line(/ asking$/);
      follower.child.kill('SIGKILL');
      const closed = await withStdoutClosed(['tail', id, '--follow', '--data-dir', dataDir]);
      expect(closed).toEqual({ code: 0, stdout: '', stderr: '' });
      expect((await runCli(['status', '--data-dir', dataDir])).code).toBe(0);
      // Cancelled, so the runtime has no running attempt to wait for as it closes.
      expect((await runCli(['cancel', id, '--data-dir', dataDir])).code).toBe(0);
    } finally {
      expect(await stopCli(run)).toBe(0);
      dir.cleanup();
    }
  });
});
