/**
 * `troupe backup DIR`, run as a child process from another working directory: the path is taken
 * relative to where the command runs, with or without a runtime serving the data dir.
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
