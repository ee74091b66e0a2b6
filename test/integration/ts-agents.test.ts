/**
 * TypeScript agents run without a build step: a `*.agent.ts` (or `.mts`, `.cts`) module is loaded
 * in the worker threads through tsx, which the threads register themselves (a loader the host
 * process runs under does not reach them). Agent sources are written into temp "app" dirs at run
 * time, so they are still TypeScript when loaded (tsc compiles test/fixtures to dist/). Without
 * tsx installed, the task fails with AGENT_LOAD_FAILED saying how to install it.
 */
import { execFile } from 'node:child_process';
import { cpSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';
import { runtimes, scratchDirs } from '../helpers.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const runtime = runtimes();
const scratch = scratchDirs();
const noRetry = { retry: { maxAttempts: 1 } };

/** An agent with TypeScript-only syntax: an interface, an enum, `as const`, annotations, a `.ts` helper imported as `.js`. */
const CODER = `
import { AgentError, defineAgent } from 'troupe/agent';
import { shout } from './shout.js';

interface Prompt {
  prompt: string;
  fail?: boolean;
}
enum Verdict {
  Fixed = 'fixed',
}
const STEPS = ['read', 'edit', 'test'] as const;
type Step = (typeof STEPS)[number];

export default defineAgent(async (input: Prompt): Promise<{ verdict: Verdict; steps: Step[]; said: string }> => {
  if (input.fail) throw new AgentError(\`cannot \${input.prompt}\`, { retryable: false, code: 'CANNOT' });
  return { verdict: Verdict.Fixed, steps: [...STEPS], said: shout(input.prompt) };
});
`;
const SHOUT = `export const shout = (text: string): string => \`\${text.toUpperCase()}!\`;\n`;

/**
 * A temp app dir: `package.json` (an ES module package unless `commonjs`), `node_modules/troupe`
 * linked to this package (its `dist/` is what an install holds) unless `linkTroupe` is false, the
 * packages in `link` linked to this package's, and `files`. Returns its path.
 */
function app(files: Record<string, string>, options: { commonjs?: boolean; link?: string[]; linkTroupe?: boolean } = {}): string {
  const dir = scratch();
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'app', private: true, ...(options.commonjs ? {} : { type: 'module' }) }));
  mkdirSync(join(dir, 'node_modules'));
  if (options.linkTroupe !== false) symlinkSync(root, join(dir, 'node_modules', 'troupe'));
  for (const name of options.link ?? []) symlinkSync(join(root, 'node_modules', name), join(dir, 'node_modules', name));
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(dirname(join(dir, path)), { recursive: true });
    writeFileSync(join(dir, path), text);
  }
  return dir;
}

/** Runs `node ...args` in `cwd`; resolves with its exit code and output once it exits by itself. */
function node(args: string[], cwd: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, args, { cwd, timeout: 25_000 }, (error, stdout, stderr) => {
      resolve({ code: error ? (typeof error.code === 'number' ? error.code : null) : 0, stdout, stderr });
    });
  });
}

/** A user's script: registers `agents/coder.agent.ts`, submits, waits and prints the task as JSON, then closes. */
const HOST = `
import { createRuntime } from 'troupe';
const rt = await createRuntime({ dataDir: process.argv[2], threads: 1, logger: false });
rt.agents.register({ name: 'coder', module: new URL('./agents/coder.agent.ts', import.meta.url), retry: { maxAttempts: 1 } });
const task = await rt.submit({ agent: 'coder', input: { prompt: 'fix the build' } });
const final = await rt.wait(task.id);
console.log(JSON.stringify({ state: final.state, output: final.output, error: final.error }));
await rt.close();
`;

/** The same script in TypeScript, for a host that runs under `node --import tsx`. */
const HOST_TS = `
import { createRuntime, type Task } from 'troupe';
const dataDir: string = process.argv[2]!;
const rt = await createRuntime({ dataDir, threads: 1, logger: false });
rt.agents.register({ name: 'coder', module: new URL('./agents/coder.agent.ts', import.meta.url), retry: { maxAttempts: 1 } });
const task: Task = await rt.submit({ agent: 'coder', input: { prompt: 'fix the build' } });
const final = await rt.wait(task.id);
console.log(JSON.stringify({ state: final.state, output: final.output, error: final.error }));
await rt.close();
`;

const FIXED = { verdict: 'fixed', steps: ['read', 'edit', 'test'], said: 'FIX THE BUILD!' };

describe('a TypeScript agent registered through the API', () => {
  it('runs to done with its output, TypeScript syntax and .ts helper included', async () => {
    const dir = app({ 'coder.agent.ts': CODER, 'shout.ts': SHOUT });
    const rt = await runtime({ agents: [{ name: 'coder', module: pathToFileURL(join(dir, 'coder.agent.ts')), ...noRetry }] });
    const task = await rt.submit({ agent: 'coder', input: { prompt: 'fix the build' } });
    const final = await rt.wait(task.id);
    expect(final.error).toBeUndefined();
    expect(final).toMatchObject({ state: 'done', output: FIXED });
  });

  it('fails with the error the agent threw, code and message', async () => {
    const dir = app({ 'coder.agent.ts': CODER, 'shout.ts': SHOUT });
    const rt = await runtime({ agents: [{ name: 'coder', module: pathToFileURL(join(dir, 'coder.agent.ts')), ...noRetry }] });
    const task = await rt.submit({ agent: 'coder', input: { prompt: 'divide by zero', fail: true } });
    expect(await rt.wait(task.id)).toMatchObject({
      state: 'failed',
      error: { code: 'CANNOT', message: 'cannot divide by zero', retryable: false, fault: 'agent' },
    });
  });

  it('runs .mts and .cts agents, and a .ts agent that Node reads as CommonJS', async () => {
    const dir = app(
      {
        'esm.agent.mts': 'export default (input: { n: number }): number => input.n * 2;\n',
        'cjs.agent.cts': 'const triple = (input: { n: number }): number => input.n * 3;\nmodule.exports = triple;\n',
        'plain.agent.ts': 'const enum Offset { By = 4 }\nexport default (input: { n: number }): number => input.n + Offset.By;\n',
      },
      { commonjs: true },
    );
    const agent = (name: string, file: string) => ({ name, module: pathToFileURL(join(dir, file)), ...noRetry });
    const rt = await runtime({ agents: [agent('esm', 'esm.agent.mts'), agent('cjs', 'cjs.agent.cts'), agent('plain', 'plain.agent.ts')] });
    const tasks = await rt.submitMany(['esm', 'cjs', 'plain'].map((name) => ({ agent: name, input: { n: 10 } })));
    const finals = await Promise.all(tasks.map((task) => rt.wait(task.id)));
    expect(finals.map((t) => [t.agent, t.state, t.output ?? t.error])).toEqual([
      ['esm', 'done', 20],
      ['cjs', 'done', 30],
      ['plain', 'done', 14],
    ]);
  });

  it('fails a .ts agent that does not compile with AGENT_LOAD_FAILED and the compile error', async () => {
    const dir = app({ 'broken.agent.ts': 'export default (input: { n: number } => input.n;\n' });
    const rt = await runtime({ agents: [{ name: 'broken', module: pathToFileURL(join(dir, 'broken.agent.ts')), ...noRetry }] });
    const task = await rt.submit({ agent: 'broken', input: { n: 1 } });
    const final = await rt.wait(task.id);
    expect(final).toMatchObject({ state: 'failed', error: { code: 'AGENT_LOAD_FAILED', retryable: false } });
    // tsx's compile error, with the file, line and column.
    expect(final.error!.message).toMatch(/^agent broken failed to load: .*\/broken\.agent\.ts:1:37: ERROR: Expected "\)" but found "=>"/s);
  });
});

describe("a user's script with a TypeScript agent, run by node with nothing around it", () => {
  it('prints the agent output and exits by itself', async () => {
    const dir = app({ 'host.mjs': HOST, 'agents/coder.agent.ts': CODER, 'agents/shout.ts': SHOUT });
    const { code, stdout, stderr } = await node(['host.mjs', join(dir, 'data')], dir);
    expect(stderr).toBe('');
    expect(JSON.parse(stdout)).toEqual({ state: 'done', output: FIXED });
    expect(code).toBe(0);
  });

  it('does the same when the host itself runs under node --import tsx', async () => {
    const dir = app({ 'host.ts': HOST_TS, 'agents/coder.agent.ts': CODER, 'agents/shout.ts': SHOUT }, { link: ['tsx'] });
    const { code, stdout, stderr } = await node(['--import', 'tsx', 'host.ts', join(dir, 'data')], dir);
    expect(stderr).toBe('');
    expect(JSON.parse(stdout)).toEqual({ state: 'done', output: FIXED });
    expect(code).toBe(0);
  });

  it('fails the task with AGENT_LOAD_FAILED saying how to install tsx when the app has none', async () => {
    const dir = app({ 'host.mjs': HOST, 'agents/coder.agent.ts': CODER, 'agents/shout.ts': SHOUT }, { linkTroupe: false });
    // troupe as npm installs it: a real copy (so tsx is resolved from it, not from this package),
    // beside every runtime dependency but tsx.
    const installed = join(dir, 'node_modules', 'troupe');
    const manifest = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { files: string[]; dependencies: Record<string, string> };
    for (const path of ['package.json', ...manifest.files.filter((f) => f.startsWith('dist/'))]) cpSync(join(root, path), join(installed, path), { recursive: true });
    for (const name of Object.keys(manifest.dependencies).filter((name) => name !== 'tsx')) {
      mkdirSync(dirname(join(dir, 'node_modules', name)), { recursive: true });
      symlinkSync(join(root, 'node_modules', name), join(dir, 'node_modules', name));
    }
    const { code, stdout, stderr } = await node(['host.mjs', join(dir, 'data')], dir);
    expect(stderr).toBe('');
    expect(JSON.parse(stdout)).toEqual({
      state: 'failed',
      error: {
        code: 'AGENT_LOAD_FAILED',
        message: 'agent coder is TypeScript (coder.agent.ts): install tsx (npm i -D tsx) to run .ts agents without a build step, or register its compiled .js',
        retryable: false,
        fault: 'agent',
      },
    });
    expect(code).toBe(0);
  });
});
