/**
 * `troupe backup DIR` and `troupe prune`, run as child processes against a data dir no runtime
 * holds; backup from another working directory, whose path it resolves against.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { builtinAgent, createRuntime } from 'troupe';
import { runCli, scratchDirs } from '../helpers.js';

const scratch = scratchDirs();
const troupe = (cwd: string, args: string[]) => runCli(args, { cwd });

describe('troupe backup', () => {
  it('copies a data dir no runtime holds into a directory relative to where it runs, and refuses a non-empty one', async () => {
    const dataDir = join(scratch(), 'data');
    const rt = await createRuntime({ dataDir, logger: false, threads: 1, agents: [builtinAgent('echo')] });
    const task = await rt.submit({ agent: 'echo', input: { hello: 'backup' } });
    await rt.wait(task.id);
    await rt.close();

    const cwd = scratch();
    const result = await troupe(cwd, ['--data-dir', dataDir, '--json', 'backup', 'copies/one', '--compact']);
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    const info = JSON.parse(result.stdout) as { path: string; bytes: number; compact: boolean };
    expect(info).toMatchObject({ path: join(cwd, 'copies', 'one'), compact: true });
    expect(info.bytes).toBeGreaterThan(0);

    const copy = await createRuntime({ dataDir: info.path, logger: false, threads: 1 });
    try {
      expect(await copy.get(task.id)).toMatchObject({ state: 'done', output: { hello: 'backup' } });
    } finally {
      await copy.close();
    }

    mkdirSync(join(cwd, 'taken'));
    writeFileSync(join(cwd, 'taken', 'x'), '');
    const refused = await troupe(cwd, ['--data-dir', dataDir, 'backup', 'taken']);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/^troupe: INVALID_INPUT: backup: .*taken is not empty/);
  });
});

describe('troupe prune', () => {
  it('removes the settled tasks it is asked to, and refuses a date it cannot read', async () => {
    const dataDir = join(scratch(), 'data');
    const rt = await createRuntime({ dataDir, logger: false, threads: 1, agents: [builtinAgent('echo')] });
    const tasks = await rt.submitMany([{ agent: 'echo', input: 1 }, { agent: 'echo', input: 2 }]);
    for (const task of tasks) await rt.wait(task.id);
    await rt.close();
    const cwd = scratch();

    const none = await troupe(cwd, ['--data-dir', dataDir, '--json', 'prune', '--state', 'failed,dropped']);
    expect(none.code).toBe(0);
    expect(JSON.parse(none.stdout)).toEqual({ tasks: 0, runs: 0, attempts: 0, logLines: 0, inputs: 0 });
    const early = await troupe(cwd, ['--data-dir', dataDir, 'prune', '--before', '2001-01-01T00:00:00Z']);
    expect(early.stdout).toBe('pruned 0 tasks (0 runs, 0 attempts, 0 log lines, 0 inputs)\n');
    const all = await troupe(cwd, ['--data-dir', dataDir, 'prune', '--before', '2100-01-01']);
    expect(all.code).toBe(0);
    expect(all.stdout).toBe('pruned 2 tasks (0 runs, 0 attempts, 0 log lines, 0 inputs)\n');
    const bad = await troupe(cwd, ['--data-dir', dataDir, 'prune', '--before', 'soon']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/^troupe: USAGE: --before must be an ISO 8601 date or epoch milliseconds/);
    const badState = await troupe(cwd, ['--data-dir', dataDir, 'prune', '--state', 'running']);
    expect(badState.code).toBe(1);
    expect(badState.stderr).toMatch(/^troupe: INVALID_OPTIONS: prune: states must be/);
  });
});
