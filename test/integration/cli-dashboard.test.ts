/**
 * The dashboard from the CLI: `troupe run --dashboard [PORT]` serves it and prints its URL, and
 * `troupe dashboard` gives the running runtime's URL, says when it serves none, or serves one on a
 * data dir no runtime holds.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { describe, expect, it } from 'vitest';
import { builtinAgent, createRuntime } from 'troupe';
import { CLI_PATH, runCli, scratchDirs, tempDir } from '../helpers.js';

const dirs = scratchDirs();

/** Starts the CLI; resolves once it printed a line matching `ready`, with the lines so far. */
function start(args: string[], ready: RegExp): Promise<{ lines: string[]; stop: () => Promise<number | null> }> {
  const child = spawn(process.execPath, [CLI_PATH, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, TROUPE_DASHBOARD_TOKEN: '' } });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exit = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  const lines: string[] = [];
  return new Promise((resolve, reject) => {
    createInterface({ input: child.stdout }).on('line', (line) => {
      lines.push(line);
      if (ready.test(line)) resolve({ lines, stop: () => (child.kill('SIGTERM'), exit) });
    });
    void exit.then((code) => reject(new Error(`exited ${code} before ${ready}; stderr:\n${stderr}`)));
  });
}

const urlIn = (lines: string[]) => /^troupe dashboard: (http:\/\/\S+)$/.exec(lines.find((l) => l.startsWith('troupe dashboard: ')) ?? '')?.[1];

describe('troupe run --dashboard and troupe dashboard', () => {
  it('run --dashboard prints the URL it serves, and troupe dashboard gives the same one', async () => {
    const dataDir = dirs();
    const agents = dirs();
    const run = await start(['run', '--agents', agents, '--data-dir', dataDir, '--threads', '1', '--dashboard'], /^troupe dashboard: /);
    try {
      const url = urlIn(run.lines)!;
      expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/$/);
      const overview = (await (await fetch(`${url}api/overview`)).json()) as { stats: { state: string } };
      expect(overview.stats.state).toBe('running');
      const asked = await runCli(['dashboard', '--data-dir', dataDir]);
      expect(asked).toMatchObject({ code: 0, stdout: `troupe dashboard: ${url}\n`, stderr: '' });
      // Where it would listen is not this command's to say while a runtime serves one.
      const withPort = await runCli(['dashboard', '--port', '9999', '--data-dir', dataDir]);
      expect(withPort).toMatchObject({ code: 0, stdout: `troupe dashboard: ${url}\n` });
      expect(withPort.stderr).toContain('--port and --host apply only');
    } finally {
      expect(await run.stop()).toBe(0);
    }
  });

  it('troupe dashboard says so when the running runtime serves none', async () => {
    const dataDir = dirs();
    const run = await start(['run', '--agents', dirs(), '--data-dir', dataDir, '--threads', '1'], /^troupe running/);
    try {
      const asked = await runCli(['dashboard', '--data-dir', dataDir]);
      expect(asked.code).toBe(1);
      expect(asked.stderr).toContain('NO_DASHBOARD');
    } finally {
      await run.stop();
    }
  });

  it('troupe dashboard serves a data dir no runtime holds, with no agents: tasks show and can be cancelled', async () => {
    const dataDir = join(dirs(), 'data');
    mkdirSync(dataDir);
    // A task left queued by an earlier runtime (due in an hour).
    const before = await createRuntime({ dataDir, logger: false, threads: 1, agents: [builtinAgent('echo')] });
    const { id } = await before.submit({ agent: 'echo', input: {}, delayMs: 3_600_000 });
    await before.close();
    const served = await start(['dashboard', '--data-dir', dataDir, '--port', '0'], /^troupe dashboard: /);
    try {
      const url = urlIn(served.lines)!;
      const page = (await (await fetch(`${url}api/tasks`)).json()) as { tasks: Array<{ id: string; state: string }> };
      expect(page.tasks).toEqual([expect.objectContaining({ id, state: 'queued' })]);
      const cancelled = await fetch(`${url}api/tasks/${id}/cancel`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
      expect(((await cancelled.json()) as { task: { state: string } }).task.state).toBe('cancelled');
    } finally {
      expect(await served.stop()).toBe(0);
    }
  });

  it('rejects a port that is no port', async () => {
    const result = await runCli(['run', '--agents', dirs(), '--data-dir', dirs(), '--dashboard', '70000']);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('--dashboard');
  });
});

describe('dashboard options', () => {
  it('name the option that is wrong, and --dashboard-host needs --dashboard', async () => {
    const dir = tempDir('troupe-cli-dashboard-');
    try {
      const dataDir = join(dir.path, 'data');
      // Checked before --agents (which names no directory here) and before the data dir.
      const cases: Array<[string[], string]> = [
        [['run', '--agents', join(dir.path, 'none'), '--dashboard-host', '0.0.0.0'], '--dashboard-host needs --dashboard'],
        [['run', '--agents', join(dir.path, 'none'), '--dashboard', '99999'], '--dashboard takes a port number (0..65535; 0 or none: a free one)'],
        [['dashboard', '--port', '99999'], '--port takes a port number (0..65535; 0: a free one)'],
        [['dashboard', '--port', 'http'], '--port must be an integer >= 0 (got "http")'],
      ];
      const results = await Promise.all(cases.map(([args]) => runCli([...args, '--data-dir', dataDir])));
      cases.forEach(([args, message], i) => {
        expect(results[i], args.join(' ')).toEqual({ code: 2, stdout: '', stderr: `troupe: USAGE: ${message}\nrun \`troupe help\` for usage\n` });
      });
      expect(existsSync(dataDir)).toBe(false);
    } finally {
      dir.cleanup();
    }
  });
});
