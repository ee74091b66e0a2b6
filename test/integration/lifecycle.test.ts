import { rmSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { open } from 'lmdb';
import { describe, expect, it } from 'vitest';
import { builtinAgent, createRuntime, type RuntimeEvent } from 'troupe';
import { fixtureAgent, holdInChild, scratchDirs, started } from '../helpers.js';

const dataDir = scratchDirs();

const base = { logger: false as const, threads: 1, slotsPerThread: 2 };

describe('data dir ownership', () => {
  it('gives DATA_DIR_LOCKED to a second runtime in the same process, and nothing is damaged', async () => {
    const path = dataDir();
    const rt = await createRuntime({ ...base, dataDir: path, agents: [builtinAgent('echo')] });
    const task = await rt.wait((await rt.submit({ agent: 'echo', input: 'kept' })).id);
    await expect(createRuntime({ ...base, dataDir: path })).rejects.toMatchObject({ code: 'DATA_DIR_LOCKED' });
    expect(await rt.get(task.id)).toMatchObject({ state: 'done', output: 'kept' });
    await rt.close();
    const again = await createRuntime({ ...base, dataDir: path });
    expect(await again.get(task.id)).toMatchObject({ state: 'done', output: 'kept' });
    await again.close();
  });

  it('gives DATA_DIR_LOCKED while another process holds the dir, and takes over once it is dead', async () => {
    const path = dataDir();
    const holder = await holdInChild(path);
    await expect(createRuntime({ ...base, dataDir: path })).rejects.toMatchObject({ code: 'DATA_DIR_LOCKED', message: expect.stringContaining(String(holder.pid)) });
    holder.kill('SIGKILL');
    await once(holder, 'exit');
    const rt = await createRuntime({ ...base, dataDir: path });
    expect(rt.state).toBe('running');
    await rt.close();
  });

  it.runIf(process.platform === 'linux')('keeps the dir held when its lock file is deleted under a live runtime', async () => {
    const path = dataDir();
    const holder = await holdInChild(path);
    try {
      rmSync(join(path, 'troupe.lock'));
      await expect(createRuntime({ ...base, dataDir: path })).rejects.toMatchObject({ code: 'DATA_DIR_LOCKED', message: expect.stringContaining('held by another live runtime') });
    } finally {
      holder.kill('SIGKILL');
      await once(holder, 'exit');
    }
    // The kernel let go of the hold with the process: the dir opens.
    const rt = await createRuntime({ ...base, dataDir: path });
    expect(rt.state).toBe('running');
    await rt.close();
  });

  it('gives SCHEMA_MISMATCH naming both versions for a data dir from a newer schema', async () => {
    const path = dataDir();
    const rt = await createRuntime({ ...base, dataDir: path });
    await rt.close();
    const env = open({ path });
    await env.openDB({ name: 'meta' }).put('schemaVersion', 99);
    await env.close();
    await expect(createRuntime({ ...base, dataDir: path })).rejects.toMatchObject({ code: 'SCHEMA_MISMATCH', message: expect.stringMatching(/version 99.*version 9/) });
  });
});

describe('schema migrations', () => {
  it('opens a schema 1 data dir (one record per event) and reads its events in order', async () => {
    const path = dataDir();
    const env = open({ path, noSubdir: false, maxDbs: 24 });
    const events = env.openDB<Record<string, unknown>, number>({ name: 'events', sharedStructuresKey: Symbol.for('troupe.structures') });
    for (let seq = 1; seq <= 2_500; seq++) await events.put(seq, { seq, at: seq, type: 'runtime.unfrozen', data: { n: seq } });
    await env.openDB({ name: 'meta' }).put('schemaVersion', 1);
    await env.close();
    const rt = await createRuntime({ ...base, dataDir: path });
    const seqs: number[] = [];
    for await (const e of rt.events({ after: 1_998 })) {
      seqs.push(e.seq);
      if (e.seq === 2_500) break;
    }
    expect(seqs).toEqual(Array.from({ length: 502 }, (_, i) => 1_999 + i));
    // New events continue the sequence.
    await rt.freeze('x');
    const next: number[] = [];
    for await (const e of rt.events({ after: 2_500 })) {
      next.push(e.seq);
      break;
    }
    expect(next).toEqual([2_501]);
    await rt.close();
  });
});

describe('schema 1 records', () => {
  it('reads tasks, attempts and runs schema 1 stored as msgpack maps, and runs a queued one', async () => {
    const path = dataDir();
    const env = open({ path, noSubdir: false, maxDbs: 24 });
    const named = (name: string) => env.openDB<unknown, string | Array<string | number>>({ name, sharedStructuresKey: Symbol.for('troupe.structures') });
    const retry = { maxAttempts: 3, backoff: 'fixed', delayMs: 0, maxDelayMs: 0, jitter: 0 };
    const old = { id: '01OLDTASK0000000000000000A', agent: 'echo', state: 'done', input: 1, output: 1, result: { kind: 'success' }, priority: 0, lane: 'default', instanceKey: 'echo/default/old', labels: {}, timeoutMs: 0, retry, runs: 1, runReason: 'submit', runCreatedAt: 1, attempts: 1, attemptSeq: 1, token: 2, queuedOrder: 1, createdAt: 1, updatedAt: 3, settledAt: 3 };
    const queued = { ...old, id: '01OLDTASK0000000000000000B', state: 'queued', input: 'later', output: undefined, result: undefined, attempts: 0, attemptSeq: 0, token: 0, settledAt: undefined };
    delete (queued as Record<string, unknown>).output;
    delete (queued as Record<string, unknown>).result;
    delete (queued as Record<string, unknown>).settledAt;
    await named('tasks').put(old.id, old);
    await named('tasks').put(queued.id, queued);
    await named('active').put(queued.id, true);
    await named('attempts').put([old.id, 1, 1], { taskId: old.id, run: 1, attempt: 1, attemptId: `${old.id}:1:1`, token: 2, owner: 'x', startedAt: 2, leaseExpiresAt: 9, endedAt: 3, exit: 'success' });
    await named('runs').put([old.id, 1], { taskId: old.id, run: 1, reason: 'submit', createdAt: 1, settledAt: 3, outcome: 'done', attempts: 1 });
    await env.openDB({ name: 'meta' }).put('schemaVersion', 1);
    await env.close();
    const rt = await createRuntime({ ...base, dataDir: path, agents: [builtinAgent('echo')] });
    expect(await rt.get(old.id)).toMatchObject({ state: 'done', output: 1, result: { kind: 'success' } });
    expect(await rt.wait(queued.id)).toMatchObject({ state: 'done', output: 'later', attempts: 1 });
    await rt.close();
  });
});

describe('data dir names', () => {
  it('opens a data dir whose name has a dot in it, and reopens it with its tasks', async () => {
    const path = join(dataDir(), 'my.data');
    const rt = await createRuntime({ ...base, dataDir: path, agents: [builtinAgent('echo')] });
    const task = await rt.wait((await rt.submit({ agent: 'echo', input: 'dotted' })).id);
    await rt.close();
    const again = await createRuntime({ ...base, dataDir: path });
    expect(await again.get(task.id)).toMatchObject({ state: 'done', output: 'dotted' });
    await again.close();
  });
});

describe('close and reopen', () => {
  it('resumes queued tasks after a restart, in FIFO order, without duplicating them', async () => {
    const path = dataDir();
    const first = await createRuntime({ ...base, dataDir: path });
    // No agent registered: the tasks stay queued until the next runtime registers one.
    const tasks = await first.submitMany(Array.from({ length: 20 }, (_, i) => ({ agent: 'echo', input: i, idempotencyKey: `job-${i}` }).valueOf() as never)).catch(() => undefined);
    expect(tasks).toBeUndefined(); // UNKNOWN_AGENT: an agent must be registered to submit
    first.agents.register(builtinAgent('echo'));
    await first.setDispatchTarget((await first.wait((await first.submit({ agent: 'echo', lane: 'later' })).id)).instanceKey, 0);
    const queued = await first.submitMany(Array.from({ length: 20 }, (_, i) => ({ agent: 'echo', lane: 'later', input: i, idempotencyKey: `job-${i}` })));
    await first.close();

    const second = await createRuntime({ ...base, dataDir: path, agents: [builtinAgent('echo')] });
    expect(second.stats().tasks.queued).toBe(20);
    const started: string[] = [];
    second.on('task.started', (e) => started.push(e.taskId!));
    await second.setDispatchTarget(queued[0]!.instanceKey, null);
    const done = await Promise.all(queued.map((t) => second.wait(t.id)));
    expect(done.every((t) => t.state === 'done' && t.attempts === 1)).toBe(true);
    expect(started).toEqual(queued.map((t) => t.id));
    const resubmitted = await second.submit({ agent: 'echo', lane: 'later', input: 'x', idempotencyKey: 'job-3' });
    expect(resubmitted.id).toBe(queued[3]!.id);
    await second.close();
  });

  it('interrupts attempts still running at the close deadline; the next open requeues them without counting', async () => {
    const path = dataDir();
    const first = await createRuntime({ ...base, dataDir: path, agents: [{ name: 'hang', module: fixtureAgent('hang'), retry: { maxAttempts: 1 } }] });
    const task = await first.submit({ agent: 'hang', input: { mode: 'async' } });
    await started(first, task.id);
    await first.close({ timeoutMs: 100 });
    const second = await createRuntime({ ...base, dataDir: path });
    const stored = await second.get(task.id);
    expect(stored).toMatchObject({ state: 'queued', attempts: 0 });
    const types: string[] = [];
    for await (const e of second.events({ taskId: task.id })) {
      types.push(e.type);
      if (types.length === 3) break;
    }
    expect(types).toEqual(['task.queued', 'task.started', 'task.queued']);
    await second.close();
  });

  it('waits for running attempts to finish within the close timeout', async () => {
    const path = dataDir();
    const rt = await createRuntime({ ...base, dataDir: path, agents: [builtinAgent('sleep')] });
    const task = await rt.submit({ agent: 'sleep', input: { ms: 300, steps: 3 } });
    // Progress comes from the agent itself: it is executing, not just recorded as started.
    await new Promise<RuntimeEvent>((resolve) => rt.on('task.progress', resolve));
    const waited = rt.wait(task.id);
    await rt.close({ timeoutMs: 5_000 });
    expect(await waited).toMatchObject({ state: 'done', output: { sleptMs: 300 } });
  });

  it('supports await using (Symbol.asyncDispose) and rejects pending waits with CLOSED', async () => {
    const path = dataDir();
    let pending: Promise<unknown> | undefined;
    {
      await using rt = await createRuntime({ ...base, dataDir: path });
      rt.agents.register(builtinAgent('echo'));
      const probe = await rt.wait((await rt.submit({ agent: 'echo', lane: 'parked' })).id);
      await rt.setDispatchTarget(probe.instanceKey, 0);
      const parked = await rt.submit({ agent: 'echo', lane: 'parked' });
      pending = rt.wait(parked.id).catch((e: unknown) => e);
    }
    expect(await pending).toMatchObject({ code: 'CLOSED' });
    const reopened = await createRuntime({ ...base, dataDir: path });
    expect(reopened.stats().tasks.queued).toBe(1);
    await reopened.close();
  });
});

describe('rebuild after a crash', () => {
  it('records an unclean shutdown and ends attempts of the dead process as crashed, counted against the budget', async () => {
    const path = dataDir();
    const holder = spawn(process.execPath, ['--input-type=module', '-e', `
      import { createRuntime } from ${JSON.stringify(fileURLToPath(new URL('../../dist/src/index.js', import.meta.url)))};
      const rt = await createRuntime({ dataDir: ${JSON.stringify(path)}, logger: false, threads: 1,
        agents: [{ name: 'hang', module: new URL(${JSON.stringify(fixtureAgent('hang').href)}), retry: { maxAttempts: 2, delayMs: 0 } }] });
      rt.on('task.started', () => console.log('started'));
      await rt.submit({ agent: 'hang', input: { mode: 'async' } });
    `], { stdio: ['ignore', 'pipe', 'inherit'] });
    await once(holder.stdout!, 'data');
    holder.kill('SIGKILL');
    await once(holder, 'exit');
    const rt = await createRuntime({ ...base, dataDir: path });
    expect(rt.stats().rebuild).toMatchObject({ previousShutdownClean: false, active: 1, crashed: 1 });
    const [task] = (await rt.list()).tasks;
    expect(task).toMatchObject({ state: 'queued', attempts: 1 });
    const retrying: string[] = [];
    for await (const e of rt.events({ taskId: task!.id })) {
      retrying.push(e.type);
      if (e.type === 'task.retrying') {
        expect(e.data).toMatchObject({ exit: 'crashed', error: { code: 'PROCESS_CRASHED', fault: 'infrastructure' } });
        break;
      }
    }
    expect(retrying).toEqual(['task.queued', 'task.started', 'task.retrying']);
    await rt.close();
    const clean = await createRuntime({ ...base, dataDir: path });
    expect(clean.stats().rebuild).toMatchObject({ previousShutdownClean: true, crashed: 0 });
    await clean.close();
  });
});
