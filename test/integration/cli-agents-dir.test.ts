/**
 * What `troupe run --agents DIR` registers: every `<name>.agent.{js,mjs,cjs,ts,mts,cts}`, TypeScript
 * included (run without a build step), and each other `*.agent.*` file named with why it was
 * skipped: as a `troupe:` line on stderr, or a `skipped` event under --json.
 */
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { describe, expect, it } from 'vitest';
import { CLI_PATH, runCli, scratchDirs } from '../helpers.js';

const scratch = scratchDirs();

/** An agents dir: a TypeScript agent, a JavaScript one, and files that are no agent modules. */
function agentsDir(): string {
  const dir = scratch();
  const files: Record<string, string> = {
    'package.json': '{ "type": "module" }',
    'coder.agent.ts': 'interface Job { prompt: string }\nexport default (input: Job): { fixed: string } => ({ fixed: input.prompt });\n',
    'hello.agent.js': 'export default () => "hello";\n',
    'hello.agent.js.map': '{}',
    'coder.agent.d.ts': 'export {};\n',
    '-draft.agent.ts': 'export default () => 1;\n',
    'twice.agent.js': 'export default () => "js";\n',
    'twice.agent.ts': 'export default (): string => "ts";\n',
    'notes.agent.md': '# notes\n',
    'README.md': 'not an agent, not mentioned\n',
  };
  for (const [file, text] of Object.entries(files)) writeFileSync(join(dir, file), text);
  return dir;
}

/** Starts `troupe run`; resolves once its running line is out, with what it printed before. */
function serve(args: string[]): Promise<{ stdout: string[]; stderr: () => string; stop: () => Promise<number | null> }> {
  const child = spawn(process.execPath, [CLI_PATH, 'run', ...args, '--threads', '1'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exit = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  const stop = () => {
    child.kill('SIGTERM');
    return exit;
  };
  const stdout: string[] = [];
  return new Promise((resolve, reject) => {
    createInterface({ input: child.stdout }).on('line', (line) => {
      stdout.push(line);
      if (/^troupe running|^\{"event":"running"/.test(line)) resolve({ stdout, stderr: () => stderr, stop });
    });
    void exit.then((code) => reject(new Error(`troupe run exited ${code} before running; stderr:\n${stderr}`)));
  });
}

const SKIPPED = [
  ['-draft.agent.ts', `"-draft" is not a valid agent name (letters, digits, '.', '_', '-', starting with a letter or digit; up to 64 characters)`],
  ['coder.agent.d.ts', 'a type declaration, not an agent module'],
  ['hello.agent.js.map', 'a source map, not an agent module'],
  ['notes.agent.md', 'not a .js, .mjs, .cjs, .ts, .mts or .cts module'],
  ['twice.agent.ts', 'agent twice is already given by twice.agent.js, which is kept'],
];

describe('troupe run --agents DIR', () => {
  it('registers .ts and .js agents, names each skipped file and why, and runs a task on the .ts agent to done', async () => {
    const dir = agentsDir();
    const dataDir = join(scratch(), 'data');
    const run = await serve(['--agents', dir, '--data-dir', dataDir]);
    try {
      expect(run.stdout).toEqual([`troupe running: 3 agents, data dir ${dataDir}, socket ${join(dataDir, 'control.sock')}`]);
      expect(run.stderr()).toBe(SKIPPED.map(([file, reason]) => `troupe: skipped ${file}: ${reason}\n`).join(''));
      const submitted = await runCli(['submit', 'coder', '--input', '{"prompt":"typed"}', '--wait', '--data-dir', dataDir]);
      expect(submitted.stderr).toBe('');
      const [id, outcome] = submitted.stdout.trim().split('\n');
      expect(outcome).toBe(`${id} done`);
      const shown = await runCli(['show', id!, '--json', '--data-dir', dataDir]);
      expect(JSON.parse(shown.stdout)).toMatchObject({ agent: 'coder', state: 'done', output: { fixed: 'typed' } });
      const twice = await runCli(['submit', 'twice', '--wait', '--data-dir', dataDir]);
      const twiceId = twice.stdout.split('\n')[0]!;
      expect(JSON.parse((await runCli(['show', twiceId, '--json', '--data-dir', dataDir])).stdout)).toMatchObject({ state: 'done', output: 'js' });
    } finally {
      expect(await run.stop()).toBe(0);
    }
  });

  it('prints each skipped file as a JSON event before the running one under --json', async () => {
    const dir = agentsDir();
    const dataDir = join(scratch(), 'data');
    const run = await serve(['--agents', dir, '--data-dir', dataDir, '--json']);
    try {
      const events = run.stdout.map((line) => JSON.parse(line) as Record<string, unknown>);
      expect(events.slice(0, -1)).toEqual(SKIPPED.map(([file, reason]) => ({ event: 'skipped', file, reason })));
      expect(events.at(-1)).toMatchObject({ event: 'running', agents: ['coder', 'hello', 'twice'] });
      expect(run.stderr()).toBe('');
    } finally {
      expect(await run.stop()).toBe(0);
    }
  });
});
