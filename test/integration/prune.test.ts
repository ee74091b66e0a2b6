/**
 * `rt.prune()`: settled tasks go with every record they left (their events stay); tasks still
 * live, too young, in other states, or parents of children that stay, are kept.
 */
import { existsSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { builtinAgent, createRuntime, TroupeError, type Runtime, type Task } from 'troupe';
import { fixtureAgent, openDataDir, pastMs, scratchDirs, started } from '../helpers.js';

const scratch = scratchDirs();

async function openAt(dataDir: string): Promise<Runtime> {
  return createRuntime({
    dataDir,
    logger: false,
    threads: 1,
    slotsPerThread: 4,
    agents: [builtinAgent('echo'), builtinAgent('sleep'), builtinAgent('fail', { retry: { maxAttempts: 2, delayMs: 1 } }), { name: 'chatty', module: fixtureAgent('chatty') }, { name: 'int', module: fixtureAgent('interactive') }],
  });
}

/** What the store holds of a task, read after the runtime closed. */
async function storedOf(dataDir: string, id: string): Promise<{ task: boolean; runs: number; attempts: number; logs: number; inbox: number; key: string | undefined }> {
  const dir = await openDataDir(dataDir);
  try {
    const read = dir.read as unknown as Record<string, { get(k: unknown): unknown; keys(o?: unknown): Iterable<unknown> }>;
    const count = (db: string, start: unknown[], end: unknown[]) => [...read[db]!.keys({ start, end })].length;
    const max = Number.MAX_SAFE_INTEGER;
    return {
      task: read.tasks!.get(id) !== undefined,
      runs: count('runs', [id, 0], [id, max]),
      attempts: count('attempts', [id, 0, 0], [id, max, 0]),
      logs: count('logs', [id, 0, 0, 0], [id, max, 0, 0]),
      inbox: count('inbox', [id, 0], [id, max]),
      key: read.idempotency!.get(`key-${id}`) as string | undefined,
    };
  } finally {
    await dir.close(true);
  }
}

describe('prune', () => {
  it('removes a settled task with its runs, attempts, log lines, inputs, keys and workspace; its events stay', async () => {
    const dataDir = scratch();
    const rt = await openAt(dataDir);
    const chatty = await rt.submit({ agent: 'chatty', input: { lines: 3 }, idempotencyKey: 'chatty-once', workspace: { keep: 'always' } });
    expect((await rt.wait(chatty.id)).state).toBe('done');
    // Two runs: it failed, then a user retry.
    const failing = await rt.submit({ agent: 'fail', input: { mode: 'result' } });
    expect((await rt.wait(failing.id)).state).toBe('failed');
    await rt.retry(failing.id);
    expect((await rt.wait(failing.id)).runs).toBe(2);
    const asked = await rt.submit({ agent: 'int', input: { mode: 'ask', prompt: 'go?' } });
    await rt.sendInput(asked.id, { message: 'yes', idempotencyKey: 'answer' });
    const answered = await rt.wait(asked.id);
    expect(answered.state).toBe('done');
    const workspace = (await rt.get(chatty.id)).workspace!;
    expect(existsSync(workspace)).toBe(true);

    // The default horizon is now: a task settled in this very millisecond is not before it.
    await pastMs(answered.settledAt!);
    const result = await rt.prune();
    // Stored records: a settled task holds its last run and attempt in its own record; the first
    // run of the retried one, and its attempt, were written out when the retry began.
    expect(result).toMatchObject({ tasks: 3, runs: 1, attempts: 1, inputs: 1 });
    expect(result.logLines).toBeGreaterThanOrEqual(3);
    for (const task of [chatty, failing, asked]) await expect(rt.get(task.id)).rejects.toMatchObject({ code: 'NOT_FOUND' });
    // The key is free again: a new task.
    const again = await rt.submit({ agent: 'chatty', input: { lines: 1 }, idempotencyKey: 'chatty-once' });
    expect(again.id).not.toBe(chatty.id);
    await rt.wait(again.id);
    const types: string[] = [];
    for await (const ev of rt.events({ taskId: chatty.id, signal: AbortSignal.timeout(5_000) })) {
      types.push(ev.type);
      if (ev.type === 'task.done') break;
    }
    expect(types).toContain('task.done');
    await rt.close();
    expect(existsSync(workspace)).toBe(false);

    for (const task of [chatty, failing, asked]) expect(await storedOf(dataDir, task.id)).toEqual({ task: false, runs: 0, attempts: 0, logs: 0, inbox: 0, key: undefined });
    const dir = await openDataDir(dataDir);
    try {
      const read = dir.read as unknown as Record<string, { get(k: string): unknown }>;
      expect(read.idempotency!.get('chatty-once')).toBe(again.id);
      expect(read.idempotency!.get(`input:${asked.id}:answer`)).toBeUndefined();
    } finally {
      await dir.close(true);
    }
  });

  it('keeps live tasks, younger ones, other states, and a parent whose child stays', async () => {
    const rt = await openAt(scratch());
    try {
      const old = await rt.submit({ agent: 'echo', input: 1 });
      const failed = await rt.submit({ agent: 'fail', input: { mode: 'result' } });
      await rt.wait(old.id);
      await rt.wait(failed.id);
      const horizon = Date.now() + 1;
      await new Promise((resolve) => setTimeout(resolve, 5));
      const young = await rt.submit({ agent: 'echo', input: 2 });
      const youngSettled = (await rt.wait(young.id)).settledAt!;
      const running = await rt.submit({ agent: 'sleep', input: { ms: 60_000 } });
      await started(rt, running.id);
      const parent = await rt.submit({ agent: 'echo', input: 'parent' });
      await rt.wait(parent.id);
      const child = await rt.submit({ agent: 'sleep', input: { ms: 60_000 }, parentId: parent.id });
      await started(rt, child.id);

      const before = rt.stats().tasks;
      expect(await rt.prune({ before: horizon, states: ['failed'] })).toMatchObject({ tasks: 1 });
      // The counts follow: one failed task fewer.
      expect(rt.stats().tasks).toEqual({ ...before, failed: (before.failed ?? 0) - 1 });
      await expect(rt.get(failed.id)).rejects.toMatchObject({ code: 'NOT_FOUND' });
      expect((await rt.get(old.id)).state).toBe('done');

      expect(await rt.prune({ before: new Date(horizon) })).toMatchObject({ tasks: 1 });
      await expect(rt.get(old.id)).rejects.toMatchObject({ code: 'NOT_FOUND' });
      // Settled after the horizon, still running, or a parent with a live child: kept. (The default
      // horizon is now, and a task settled in this very millisecond is not before it.)
      await pastMs(youngSettled);
      expect(await rt.prune()).toMatchObject({ tasks: 1 });
      await expect(rt.get(young.id)).rejects.toMatchObject({ code: 'NOT_FOUND' });
      expect((await rt.get(running.id)).state).toBe('running');
      expect((await rt.get(parent.id)).state).toBe('done');
      // Once the child settles, both go, the child first.
      await rt.cancel(child.id);
      await pastMs((await rt.wait(child.id)).settledAt!);
      expect(await rt.prune()).toMatchObject({ tasks: 2 });
      for (const task of [parent, child] as Task[]) await expect(rt.get(task.id)).rejects.toMatchObject({ code: 'NOT_FOUND' });
    } finally {
      await rt.close({ force: true });
    }
  });

  it('refuses bad options, removing nothing', async () => {
    const rt = await openAt(scratch());
    try {
      const task = await rt.submit({ agent: 'echo' });
      await rt.wait(task.id);
      for (const options of [{ before: -1 }, { before: 'soon' }, { before: Number.NaN }, { before: new Date('nope') }, { states: ['running'] }, { states: [] }, { states: 'done' }, { after: 1 }, 'all']) {
        const error = await rt.prune(options as never).then(() => undefined, (e: unknown) => e);
        expect(error, JSON.stringify(options)).toBeInstanceOf(TroupeError);
        expect((error as TroupeError).code).toBe('INVALID_OPTIONS');
      }
      expect((await rt.get(task.id)).state).toBe('done');
    } finally {
      await rt.close();
    }
  });
});
