/**
 * The contract of a task's workspace given as a path (contract.ts's suite, run by
 * contract-lmdb.test.ts and contract-postgres.test.ts): the agent runs with it as `ctx.workspace`
 * (the shell agent as its working directory), on every attempt; the task shows it on submit, get, list and wait, absolute; a schedule's template and a
 * spawned child keep it; Troupe never removes it; and a bad workspace is refused before anything
 * is stored. A workspace Troupe makes for the task (no path) is LMDB's alone (workspace.test.ts):
 * PostgreSQL refuses it (postgres-runtime.test.ts).
 */
import { existsSync, mkdirSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { builtinAgent } from 'troupe';
import { fixtureAgent, scratchDirs } from '../helpers.js';
import { sharedRuntime, type ContractBackend } from './contract.js';

const where = { name: 'where', module: fixtureAgent('workspace'), retry: { maxAttempts: 2, backoff: 'fixed' as const, delayMs: 1, jitter: 0 } };
const shell = builtinAgent('shell', { retry: { maxAttempts: 1 } });

/** Registers the workspace contract's tests against `backend` under `name`. */
export function workspaceContract(name: string, backend: ContractBackend): void {
  describe(`workspaces on ${name}`, () => {
    const rt = sharedRuntime(backend, { agents: [where, shell] });
    const dir = scratchDirs();

    it('runs every attempt in the given path, shows it on the task, and leaves the directory and its files', async () => {
      const given = join(dir(), 'checkout');
      mkdirSync(given);
      const task = await rt().submit({ agent: 'where', input: { failFirst: true }, workspace: given });
      expect(task.workspace).toBe(given);
      const done = await rt().wait(task.id);
      // The second attempt, after the first failed, has the same workspace.
      expect(done).toMatchObject({ state: 'done', attempts: 2, workspace: given, output: { workspace: given, attempt: 2 } });
      expect(await rt().get(task.id)).toEqual(done);
      expect((await rt().list({ agent: 'where', limit: 1_000 })).tasks.find((t) => t.id === task.id)).toEqual(done);

      // The shell agent works in it: what it writes there stays there once the task is done.
      const written = await rt().wait((await rt().submit({ agent: 'shell', input: { command: 'sh', args: ['-c', 'pwd; echo hi > note.txt'] }, workspace: { path: given, keep: 'always' } })).id);
      expect(written).toMatchObject({ state: 'done', workspace: given, output: { exitCode: 0, stdoutTail: [given] } });
      expect(existsSync(join(given, 'note.txt'))).toBe(true);
      // A failure does not remove it either.
      const failed = await rt().wait((await rt().submit({ agent: 'shell', input: { command: 'sh', args: ['-c', 'exit 3'] }, workspace: given })).id);
      expect(failed).toMatchObject({ state: 'failed', workspace: given });
      expect(existsSync(join(given, 'note.txt'))).toBe(true);
    });

    it('stores a relative path as the absolute one it names, and a task without one has none', async () => {
      const given = join(dir(), 'relative');
      mkdirSync(given);
      const task = await rt().submit({ agent: 'where', workspace: relative(process.cwd(), given) });
      expect(task.workspace).toBe(resolve(given));
      expect(await rt().wait(task.id)).toMatchObject({ state: 'done', workspace: given, output: { workspace: given } });
      const none = await rt().wait((await rt().submit({ agent: 'where' })).id);
      expect(none).toMatchObject({ state: 'done', output: { workspace: null } });
      expect(none).not.toHaveProperty('workspace');
    });

    it("keeps it in a schedule's template and in a child an agent spawns with one", async () => {
      const given = join(dir(), 'scheduled');
      const schedule = await rt().schedules.create({ id: `ws-${Date.now()}`, cron: '0 0 1 1 *', task: { agent: 'where', workspace: given }, paused: true });
      expect(schedule.task.workspace).toBe(given);
      expect((await rt().schedules.get(schedule.id)).task.workspace).toBe(given);
      await rt().schedules.delete(schedule.id);

      const parent = await rt().wait((await rt().submit({ agent: 'where', input: { spawn: { agent: 'where', workspace: given } } })).id);
      const childId = (parent.output as { child: string }).child;
      expect(await rt().wait(childId)).toMatchObject({ state: 'done', parentId: parent.id, workspace: given, output: { workspace: given } });
    });

    it('refuses a bad workspace before anything is stored', async () => {
      const agent = `refused-${Date.now()}`;
      const bad: unknown[] = ['', 42, { keep: 'sometimes' }, { path: '' }, { path: '/tmp/x', keep: 'never' }, { dir: '/tmp' }];
      for (const workspace of bad) {
        await expect(rt().submit({ agent: 'where', labels: { agent }, workspace: workspace as never }), JSON.stringify(workspace)).rejects.toMatchObject({ code: 'INVALID_INPUT' });
      }
      expect((await rt().list({ labels: { agent } })).tasks).toEqual([]);
    });
  });
}
