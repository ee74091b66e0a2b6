import { describe, expect, it } from 'vitest';
import { createRuntime, type Runtime, type TaskSpec } from 'troupe';
import { fixtureAgent, rejection, tempDir } from '../helpers.js';

/** A runtime on a dir that outlives it, so a test can reopen the dir and see what was stored. */
async function open(dataDir: string): Promise<Runtime> {
  return createRuntime({ dataDir, threads: 1, logger: false, agents: [{ name: 'weird', module: fixtureAgent('weird'), retry: { maxAttempts: 1 }, backoff: false }] });
}

function nested(depth: number): unknown {
  let value: unknown = 1;
  for (let i = 0; i < depth; i++) value = [value];
  return value;
}

describe('values the store cannot hold', () => {
  it('refuses unstorable task input with INVALID_INPUT and stores nothing', async () => {
    const dir = tempDir();
    const rt = await open(dir.path);
    try {
      const getter = {};
      Object.defineProperty(getter, 'x', { enumerable: true, get: () => { throw new Error('boom'); } });
      const spec = Object.defineProperty({}, 'agent', { enumerable: true, get: () => { throw new Error('spec getter'); } });
      const cases: Array<[TaskSpec, string]> = [
        [{ agent: 'weird', input: { big: 2n ** 70n } }, 'task.input.big is a BigInt outside the 64-bit range'],
        [{ agent: 'weird', input: getter }, 'task.input.x could not be read'],
        [{ agent: 'weird', input: new Proxy({}, { ownKeys: () => { throw new Error('trap'); } }) }, 'task.input is a Proxy'],
        [{ agent: 'weird', input: nested(10_000) }, 'is nested deeper than 256 levels'],
        // eslint-disable-next-line no-sparse-arrays
        [{ agent: 'weird', input: [1, , 3] }, 'task.input[1] is a hole'],
        [{ agent: 'weird', labels: new Map([['k', 'v']]) as never }, 'task.labels is a Map instance'],
        [spec as TaskSpec, 'task could not be read: spec getter'],
        [new Proxy({ agent: 'weird' }, { ownKeys: () => { throw new Error('trap'); } }) as TaskSpec, 'task is a Proxy'],
      ];
      for (const [bad, message] of cases) {
        const error = await rejection(rt.submit(bad));
        expect(error.code, message).toBe('INVALID_INPUT');
        expect(error.message).toContain(message);
      }
      const error = await rejection(rt.sendInput('01ARZ3NDEKTSV4RRFFQ69G5FAV', { message: { big: -(2n ** 64n) } }));
      expect(error).toMatchObject({ code: 'INVALID_INPUT' });
      expect(error.message).toContain('input.message.big is a BigInt');
      expect(rt.stats().tasks.queued ?? 0).toBe(0);
      expect((await rt.list()).tasks).toEqual([]);
    } finally {
      await rt.close();
      dir.cleanup();
    }
  });

  it('a submitMany with one unstorable spec stores none of them and leaves no gap in the event seqs', async () => {
    const dir = tempDir();
    let rt = await open(dir.path);
    const seqs: number[] = [];
    rt.on('*', (e) => seqs.push(e.seq));
    try {
      await rt.freeze();
      const specs: TaskSpec[] = Array.from({ length: 1_000 }, (_, i) => ({ agent: 'weird', input: { i } }));
      specs[999] = { agent: 'weird', input: { big: 2n ** 64n } };
      const error = await rejection(rt.submitMany(specs));
      expect(error.code).toBe('INVALID_INPUT');
      expect(error.message).toContain('tasks[999].input.big is a BigInt');
      expect(rt.stats().tasks.queued ?? 0).toBe(0);
      expect(rt.stats().queued).toBe(0);
      const task = await rt.submit({ agent: 'weird', input: { ok: true } });
      // runtime.frozen, then this task's task.queued: no seq was taken by the refused batch.
      expect(seqs).toHaveLength(2);
      expect(seqs[1]).toBe(seqs[0]! + 1);
      await rt.close();
      rt = await open(dir.path);
      expect((await rt.list()).tasks.map((t) => t.id)).toEqual([task.id]);
    } finally {
      await rt.close();
      dir.cleanup();
    }
  });

  it('an output or result the store cannot hold fails that attempt with INVALID_RESULT, and the task is stored', async () => {
    const dir = tempDir();
    let rt = await open(dir.path);
    const ids: string[] = [];
    try {
      for (const [mode, problem] of [
        ['bigoutput', 'result.output.big is a BigInt'],
        ['deepoutput', 'nested deeper than 256 levels'],
        ['bigresult', 'result.output.list[1] is a hole'],
      ] as const) {
        const task = await rt.wait((await rt.submit({ agent: 'weird', input: { mode } })).id, { timeoutMs: 20_000 });
        expect(task, mode).toMatchObject({ state: 'failed', attempts: 1, error: { code: 'INVALID_RESULT', fault: 'agent', retryable: false } });
        expect(task.error!.message).toContain(problem);
        ids.push(task.id);
      }
      // The runtime still stores everything after them.
      const after = await rt.wait((await rt.submit({ agent: 'weird', input: { mode: 'fork' } })).id);
      expect(after.state).toBe('done');
      ids.push(after.id);
      await rt.close();
      rt = await open(dir.path);
      const stored = await Promise.all(ids.map((id) => rt.get(id)));
      expect(stored.map((t) => t.state)).toEqual(['failed', 'failed', 'failed', 'done']);
    } finally {
      await rt.close();
      dir.cleanup();
    }
  });

  it('stores log fields and a progress message the agent could not have stored as they were, as text', async () => {
    const dir = tempDir();
    let rt = await open(dir.path);
    try {
      const logged = await rt.wait((await rt.submit({ agent: 'weird', input: { mode: 'biglog' } })).id);
      const reported = await rt.wait((await rt.submit({ agent: 'weird', input: { mode: 'bigprogress' } })).id);
      expect(logged.state).toBe('done');
      expect(reported).toMatchObject({ state: 'done', progress: { value: 0.5, message: String(2n ** 70n) } });
      await rt.close();
      rt = await open(dir.path);
      const lines = [];
      for await (const line of rt.logs(logged.id)) lines.push(line);
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatchObject({ message: 'a big number', fields: { big: String(2n ** 70n), small: '5', ok: 'yes' } });
      expect(await rt.get(reported.id)).toMatchObject({ state: 'done', progress: { message: String(2n ** 70n) } });
      // Nothing poisoned the store: new work still commits.
      expect((await rt.wait((await rt.submit({ agent: 'weird', input: { mode: 'fork' } })).id)).state).toBe('done');
    } finally {
      await rt.close();
      dir.cleanup();
    }
  });
});

describe('ids the API cannot take', () => {
  it('rejects a malformed id with INVALID_INPUT and an unknown one with NOT_FOUND, from every entry point', async () => {
    const dir = tempDir();
    const rt = await open(dir.path);
    try {
      const calls: Array<[string, (id: never) => Promise<unknown>]> = [
        ['get', (id) => rt.get(id)],
        ['wait', (id) => rt.wait(id, { timeoutMs: 1_000 })],
        ['cancel', (id) => rt.cancel(id)],
        ['retry', (id) => rt.retry(id)],
        ['sendInput', (id) => rt.sendInput(id, { message: 'hi' })],
        ['setDispatchTarget', (id) => rt.setDispatchTarget(id, 1)],
        ['resetInstance', (id) => rt.resetInstance(id)],
        [
          'logs',
          async (id) => {
            for await (const line of rt.logs(id)) return line;
          },
        ],
      ];
      for (const [name, call] of calls) {
        for (const bad of ['x'.repeat(5_000), undefined, {}, 42, '']) {
          const error = await rejection(call(bad as never));
          expect(error.code, `${name}(${typeof bad === 'string' ? `${bad.length} chars` : String(bad)})`).toBe('INVALID_INPUT');
          expect(error.message.length).toBeLessThan(200);
        }
        const unknown = await rejection(call('01ARZ3NDEKTSV4RRFFQ69G5FAV' as never));
        expect(unknown.code, name).toBe('NOT_FOUND');
      }
      expect(rt.state).toBe('running');
    } finally {
      await rt.close();
      dir.cleanup();
    }
  });
});
