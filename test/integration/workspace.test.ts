/**
 * Task workspaces: created under the data dir per task (or a given path), handed to the agent as
 * ctx.workspace, and removed or kept per `workspace.keep` when the task settles.
 */
import { existsSync, mkdirSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { builtinAgent, createRuntime, type Runtime } from 'troupe';
import { scratchDirs } from '../helpers.js';

const dir = scratchDirs();

async function open(dataDir = dir()): Promise<Runtime> {
  return createRuntime({ dataDir, logger: false, threads: 1, slotsPerThread: 2, agents: [builtinAgent('shell', { retry: { maxAttempts: 1 } })] });
}

/** Waits (bounded) for a removal that runs after the settling commit. */
async function removed(path: string): Promise<boolean> {
  for (let i = 0; i < 100 && existsSync(path); i++) await new Promise((resolve) => setTimeout(resolve, 10));
  return !existsSync(path);
}

describe('workspaces', () => {
  it('creates <dataDir>/workspaces/<taskId>, runs the agent there, and removes it on success (keep on_failure)', async () => {
    const dataDir = dir();
    const rt = await open(dataDir);
    const ok = await rt.submit({ agent: 'shell', input: { command: 'sh', args: ['-c', 'pwd; echo hi > note.txt'] }, workspace: {} });
    const workspace = join(dataDir, 'workspaces', ok.id);
    expect(ok.workspace).toBe(workspace);
    const done = await rt.wait(ok.id);
    expect(done).toMatchObject({ state: 'done', output: { exitCode: 0, stdoutTail: [workspace] } });
    expect(await removed(workspace)).toBe(true);
    const bad = await rt.wait((await rt.submit({ agent: 'shell', input: { command: 'sh', args: ['-c', 'echo x > kept.txt; exit 2'] }, workspace: {} })).id);
    expect(bad.state).toBe('failed');
    expect(readdirSync(bad.workspace!)).toEqual(['kept.txt']);
    await rt.close();
  });

  it('keep always keeps it, keep never removes it even on failure, and a given path is never removed', async () => {
    const rt = await open();
    const kept = await rt.wait((await rt.submit({ agent: 'shell', input: { command: 'true' }, workspace: { keep: 'always' } })).id);
    expect(existsSync(kept.workspace!)).toBe(true);
    const never = await rt.wait((await rt.submit({ agent: 'shell', input: { command: 'false' }, workspace: { keep: 'never' } })).id);
    expect(never.state).toBe('failed');
    expect(await removed(never.workspace!)).toBe(true);
    const given = join(dir(), 'checkout');
    mkdirSync(given);
    const mine = await rt.wait((await rt.submit({ agent: 'shell', input: { command: 'pwd' }, workspace: given })).id);
    expect(mine).toMatchObject({ state: 'done', workspace: given, output: { stdoutTail: [given] } });
    expect(existsSync(given)).toBe(true);
    await rt.close();
  });

  it('rejects a bad workspace spec before storing anything', async () => {
    const rt = await open();
    for (const workspace of ['', 42, { keep: 'sometimes' }, { path: '' }, { path: '/tmp/x', keep: 'never' }, { dir: '/tmp' }]) {
      await expect(rt.submit({ agent: 'shell', input: { command: 'true' }, workspace: workspace as never })).rejects.toMatchObject({ code: 'INVALID_INPUT' });
    }
    expect(rt.stats().tasks.queued).toBe(0);
    await rt.close();
  });
});
