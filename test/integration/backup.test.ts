/**
 * `rt.backup()`: a consistent copy of the store taken while the runtime serves. The copy opens as
 * a data dir of its own (as after a crash) and holds everything acknowledged before the call.
 */
import { mkdirSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { builtinAgent, createRuntime, TroupeError } from 'troupe';
import { fixtureAgent, runtimes, scratchDirs, started, startRuntime } from '../helpers.js';

const open = runtimes();
const scratch = scratchDirs();

async function rejection(promise: Promise<unknown>): Promise<TroupeError> {
  const error = await promise.then(() => undefined, (e: unknown) => e);
  expect(error).toBeInstanceOf(TroupeError);
  return error as TroupeError;
}

describe('backup', () => {
  it('copies what was acknowledged while attempts run and tasks queue, and the copy opens and finishes them', async () => {
    const rt = await open({ threads: 1, slotsPerThread: 1, agents: [builtinAgent('echo'), { name: 'hang', module: fixtureAgent('hang'), retry: { maxAttempts: 1 } }] });
    const done = await Promise.all([1, 2, 3].map((n) => rt.submit({ agent: 'echo', input: { n } })));
    for (const task of done) await rt.wait(task.id);
    // One attempt running (it never ends) and one task behind it, queued or started ahead.
    const hung = await rt.submit({ agent: 'hang', input: { mode: 'async' } });
    await started(rt, hung.id);
    const queued = await rt.submit({ agent: 'echo', input: { n: 4 } });
    const dest = join(scratch(), 'copy');

    const info = await rt.backup(dest);
    expect(info).toEqual({ path: dest, bytes: statSync(join(dest, 'data.mdb')).size, compact: false });
    // The runtime serves on (its one slot stays with the hung attempt; later ones may start ahead).
    const after = await rt.submit({ agent: 'echo', input: { n: 5 } });
    expect(['queued', 'running']).toContain((await rt.get(after.id)).state);

    // The copy: its own runtime, no lock held on the original.
    const copy = await createRuntime({ dataDir: dest, logger: false, threads: 1, slotsPerThread: 4, agents: [builtinAgent('echo'), { name: 'hang', module: fixtureAgent('hang'), retry: { maxAttempts: 1 } }] });
    try {
      expect(copy.stats().rebuild.previousShutdownClean).toBe(false);
      for (const task of done) expect(await copy.get(task.id)).toMatchObject({ state: 'done', output: { n: (task.input as { n: number }).n } });
      // Submitted after the backup: not in it.
      await expect(copy.get(after.id)).rejects.toMatchObject({ code: 'NOT_FOUND' });
      // The task behind it runs in the copy.
      expect(await copy.wait(queued.id)).toMatchObject({ state: 'done', output: { n: 4 } });
      // Its one attempt was running when the copy was taken: crashed, and the policy allows no other.
      expect(await copy.wait(hung.id)).toMatchObject({ state: 'dropped', reason: 'retry_exhausted', attempts: 1, runs: 1 });
      const types: string[] = [];
      for await (const ev of copy.events({ taskId: done[0]!.id, signal: AbortSignal.timeout(5_000) })) {
        types.push(ev.type);
        if (ev.type === 'task.done') break;
      }
      expect(types).toEqual(['task.queued', 'task.started', 'task.done']);
    } finally {
      await copy.close({ force: true });
    }
    expect(readdirSync(dest).sort()).toContain('data.mdb');
  });

  it('writes a private directory and file, and compacts on request', async () => {
    const rt = await open({ agents: [builtinAgent('echo')] });
    const tasks = await Promise.all(Array.from({ length: 50 }, (_, n) => rt.submit({ agent: 'echo', input: { n, pad: 'x'.repeat(2_000) } })));
    for (const task of tasks) await rt.wait(task.id);
    const plain = await rt.backup(join(scratch(), 'plain'));
    const compacted = await rt.backup(join(scratch(), 'compact'), { compact: true });
    expect(compacted.compact).toBe(true);
    expect(compacted.bytes).toBeLessThanOrEqual(plain.bytes);
    expect(statSync(plain.path).mode & 0o777).toBe(0o700);
    expect(statSync(join(plain.path, 'data.mdb')).mode & 0o777).toBe(0o600);
    const copy = await createRuntime({ dataDir: compacted.path, logger: false, threads: 1 });
    try {
      expect((await copy.list({ state: 'done', limit: 100 })).tasks).toHaveLength(50);
    } finally {
      await copy.close();
    }
  });

  it('takes a new or empty directory outside the data dir, and refuses anything else writing nothing', async () => {
    const { rt, dataDir, stop } = await startRuntime({ agents: [builtinAgent('echo')] });
    const base = scratch();
    const file = join(base, 'a-file');
    writeFileSync(file, 'keep');
    const full = join(base, 'full');
    mkdirSync(full);
    writeFileSync(join(full, 'mine.txt'), 'keep');
    const empty = join(base, 'empty');
    mkdirSync(empty);

    for (const [path, options, code] of [
      [42, undefined, 'INVALID_INPUT'],
      ['', undefined, 'INVALID_INPUT'],
      [join(base, 'x'), { compact: 'yes' }, 'INVALID_OPTIONS'],
      [join(base, 'x'), { nope: true }, 'INVALID_OPTIONS'],
      [join(base, 'x'), 'compact', 'INVALID_OPTIONS'],
      [file, undefined, 'INVALID_INPUT'],
      [full, undefined, 'INVALID_INPUT'],
    ] as const) {
      const error = await rejection(rt.backup(path as string, options as never));
      expect(error.code, `${String(path)} ${JSON.stringify(options)}`).toBe(code);
    }
    expect(readdirSync(full)).toEqual(['mine.txt']);
    expect(readdirSync(base).sort()).toEqual(['a-file', 'empty', 'full']);
    expect((await rejection(rt.backup(dataDir))).code).toBe('INVALID_INPUT');
    expect((await rejection(rt.backup(join(dataDir, 'backups', 'one')))).code).toBe('INVALID_INPUT');
    expect(readdirSync(dataDir)).not.toContain('backups');
    // An empty directory is taken as it is.
    expect((await rt.backup(empty)).path).toBe(empty);
    await stop();
    expect((await rejection(rt.backup(join(base, 'late')))).code).toBe('CLOSED');
  });
});
