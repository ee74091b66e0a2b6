/**
 * A user's script with a TypeScript agent, run by node on a data dir with nothing around it: it
 * prints the agent's output and exits by itself, whether node runs a plain .mjs host or a .ts host
 * under `node --import tsx` (a loader the host process runs under does not reach the worker
 * threads, which register tsx themselves). Without tsx installed, the task fails with
 * AGENT_LOAD_FAILED saying how to install it. These run a child process on an LMDB data dir; what
 * a TypeScript agent does through the API is the contract suite's (contract-ts-agents.ts).
 */
import { execFile } from 'node:child_process';
import { cpSync, mkdirSync, readFileSync, symlinkSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { scratchDirs } from '../helpers.js';
import { CODER, FIXED, root, SHOUT, tsApp, type TsAppOptions } from '../ts-app.js';

const scratch = scratchDirs();
const app = (files: Record<string, string>, options?: TsAppOptions): string => tsApp(scratch(), files, options);

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
