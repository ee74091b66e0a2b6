import { describe, expect, it } from 'vitest';
import { builtinAgent, createRuntime, TroupeError, type Runtime } from 'troupe';
import { runtimes, tempDir } from '../helpers.js';

const runtime = runtimes();

async function storedTaskCount(rt: Runtime): Promise<number> {
  return (await rt.list({ limit: 1000 })).tasks.length;
}

describe('bad input is rejected before anything is stored', () => {
  it('rejects an unknown agent with UNKNOWN_AGENT', async () => {
    const rt = await runtime({ agents: [builtinAgent('echo')] });
    const error = await rt.submit({ agent: 'nobody', input: {} }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(TroupeError);
    expect(error).toMatchObject({ code: 'UNKNOWN_AGENT', retryable: false });
    expect((error as Error).message).toContain('"nobody"');
    expect(await storedTaskCount(rt)).toBe(0);
  });

  it.each([
    ['a function', { cb: () => 1 }, 'task.input.cb is a function'],
    ['a symbol', { s: Symbol('x') }, 'task.input.s is a symbol'],
    ['a class instance', { when: new (class Deadline {})() }, 'task.input.when is a Deadline instance'],
    ['a Map', { m: new Map() }, 'task.input.m is a Map instance'],
    ['a circular reference', (() => { const o: Record<string, unknown> = {}; o.self = o; return o; })(), 'task.input.self is a circular reference'],
  ])('rejects input with %s as INVALID_INPUT naming the path', async (_, input, message) => {
    const rt = await runtime({ agents: [builtinAgent('echo')] });
    await expect(rt.submit({ agent: 'echo', input })).rejects.toMatchObject({ code: 'INVALID_INPUT', message: expect.stringContaining(message) });
    expect(await storedTaskCount(rt)).toBe(0);
  });

  it.each([
    [{ agent: 'echo', priority: 1.5 }, 'task.priority must be an integer'],
    [{ agent: 'echo', lane: 'no spaces' }, 'task.lane must match'],
    [{ agent: 'echo', labels: { a: 1 } }, 'task.labels must be an object of string values'],
    [{ agent: 'echo', labels: null }, 'task.labels must be an object of string values'],
    [{ agent: 'echo', idempotencyKey: '' }, 'task.idempotencyKey must be a non-empty string'],
    [{ agent: 'echo', timeoutMs: -1 }, 'task.timeoutMs must be a non-negative integer'],
    [{ agent: 'echo', retry: { maxAttempts: 0 } }, 'task.retry.maxAttempts must be a positive integer'],
    [{ agent: 'echo', retry: { backoff: 'linear' } }, "task.retry.backoff must be 'fixed' or 'exponential'"],
    [{ agent: 'echo', colour: 'red' }, 'task.colour is not a task field'],
    [{ agent: 'echo', parentId: 'does-not-exist' }, 'no task does-not-exist'],
  ])('rejects a malformed spec %j', async (spec, message) => {
    const rt = await runtime({ agents: [builtinAgent('echo')] });
    const error = await rt.submit(spec as never).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(TroupeError);
    expect((error as Error).message).toContain(message);
    expect(await storedTaskCount(rt)).toBe(0);
  });

  it('submitMany stores nothing when one spec in the batch is bad, and names its index', async () => {
    const rt = await runtime({ agents: [builtinAgent('echo')] });
    await expect(rt.submitMany([{ agent: 'echo' }, { agent: 'echo' }, { agent: 'echo', input: { f: () => 0 } }])).rejects.toMatchObject({
      code: 'INVALID_INPUT',
      message: expect.stringContaining('tasks[2].input.f is a function'),
    });
    await expect(rt.submitMany({} as never)).rejects.toMatchObject({ code: 'INVALID_INPUT' });
    expect(await storedTaskCount(rt)).toBe(0);
  });

  it('rejects past maxQueued with AT_CAPACITY and stores nothing', async () => {
    const rt = await runtime({ maxQueued: 3, agents: [builtinAgent('echo')] });
    // A dispatch target of 0 parks the lane so tasks stay queued.
    const probe = await rt.wait((await rt.submit({ agent: 'echo', lane: 'parked' })).id);
    await rt.setDispatchTarget(probe.instanceKey, 0);
    await rt.submitMany([{ agent: 'echo', lane: 'parked' }, { agent: 'echo', lane: 'parked' }]);
    const error = await rt.submitMany([{ agent: 'echo', lane: 'parked' }, { agent: 'echo', lane: 'parked' }]).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'AT_CAPACITY', retryable: true });
    expect(rt.stats().tasks.queued).toBe(2);
    expect(await storedTaskCount(rt)).toBe(3);
    await rt.submit({ agent: 'echo', lane: 'parked' });
    await expect(rt.submit({ agent: 'echo', lane: 'parked' })).rejects.toMatchObject({ code: 'AT_CAPACITY' });
  });

  it('rejects bad ids, cursors and options of the read API', async () => {
    const rt = await runtime({ agents: [builtinAgent('echo')] });
    await expect(rt.get('missing')).rejects.toMatchObject({ code: 'NOT_FOUND' });
    await expect(rt.get('' as string)).rejects.toMatchObject({ code: 'INVALID_INPUT' });
    await expect(rt.wait('missing')).rejects.toMatchObject({ code: 'NOT_FOUND' });
    await expect(rt.list({ limit: 0 })).rejects.toMatchObject({ code: 'INVALID_INPUT' });
    await expect(rt.list({ state: 'sideways' as never })).rejects.toMatchObject({ code: 'INVALID_INPUT' });
    await expect(rt.events({ after: 'not-a-cursor' }).next()).rejects.toMatchObject({ code: 'INVALID_INPUT' });
    expect(() => rt.logs('missing')).toThrow(expect.objectContaining({ code: 'NOT_FOUND' }));
    await expect(rt.setDispatchTarget('no/such/instance', 1)).rejects.toMatchObject({ code: 'NOT_FOUND' });
    await expect(rt.setDispatchTarget('x', -1)).rejects.toMatchObject({ code: 'INVALID_INPUT' });
  });
});

describe('invalid options name the option', () => {
  it.each([
    [{ threads: 0 }, 'options.threads must be a positive integer'],
    [{ slotsPerThread: 1.5 }, 'options.slotsPerThread must be a positive integer'],
    [{ maxQueued: -1 }, 'options.maxQueued must be a positive integer'],
    [{ maxLiveInstances: 0 }, 'options.maxLiveInstances must be a positive integer'],
    [{ cancelGraceMs: -5 }, 'options.cancelGraceMs must be a non-negative integer'],
    [{ dataDir: '' }, 'options.dataDir must be a non-empty string'],
    [{ logger: 'loud' }, 'options.logger must be a pino logger, pino options, or false'],
    [{ defaultRetry: { delayMs: -1 } }, 'options.defaultRetry.delayMs must be a non-negative integer'],
    [{ thread: 2 }, 'options.thread is not a known option'],
  ])('createRuntime(%j) throws INVALID_OPTIONS', async (options, message) => {
    const dir = tempDir();
    try {
      await expect(createRuntime({ dataDir: dir.path, logger: false, ...options } as never)).rejects.toMatchObject({ code: 'INVALID_OPTIONS', message });
    } finally {
      dir.cleanup();
    }
  });

  it('rejects bad agent registrations, naming the field', async () => {
    const rt = await runtime();
    expect(() => rt.agents.register({ name: 'bad name', module: builtinAgent('echo').module })).toThrow(/agent\.name must match/);
    expect(() => rt.agents.register({ name: 'rel', module: './relative.js' })).toThrow(/module must be a file: URL or an absolute path/);
    expect(() => rt.agents.register({ name: 'gone', module: '/definitely/not/here.agent.js' })).toThrow(/module not found/);
    expect(() => rt.agents.register({ ...builtinAgent('echo'), concurrency: 0 })).toThrow('agent echo: concurrency must be a positive integer');
    expect(() => rt.agents.register({ ...builtinAgent('echo'), retry: { maxAttempts: -1 } })).toThrow('agent echo: retry.maxAttempts must be a positive integer');
    expect(() => rt.agents.register({ ...builtinAgent('echo'), color: 'red' } as never)).toThrow('agent.color is not a known agent option');
    expect(rt.agents.list()).toEqual([]);
  });
});

describe('a closed runtime', () => {
  it('rejects every call with CLOSED, and close() is idempotent', async () => {
    const dir = tempDir();
    try {
      const rt = await createRuntime({ dataDir: dir.path, logger: false, threads: 1, agents: [builtinAgent('echo')] });
      const done = await rt.wait((await rt.submit({ agent: 'echo' })).id);
      const closing = rt.close();
      expect(rt.close()).toBe(closing);
      await closing;
      expect(rt.state).toBe('closed');
      for (const call of [() => rt.submit({ agent: 'echo' }), () => rt.submitMany([]), () => rt.get(done.id), () => rt.wait(done.id), () => rt.cancel(done.id), () => rt.retry(done.id), () => rt.list()]) {
        await expect(call()).rejects.toMatchObject({ code: 'CLOSED', message: expect.stringContaining('closed') });
      }
      expect(() => rt.events()).toThrow(expect.objectContaining({ code: 'CLOSED' }));
      expect(() => rt.agents.register(builtinAgent('sleep'))).toThrow(expect.objectContaining({ code: 'CLOSED' }));
    } finally {
      dir.cleanup();
    }
  });
});
