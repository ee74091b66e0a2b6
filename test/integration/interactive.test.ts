/**
 * Interactive agents over real threads and a real store: inputs, sleep/wake with followUp,
 * subtasks with spawn/join, cancel cascades, and a restart while an agent waits.
 */
import { describe, expect, it } from 'vitest';
import { builtinAgent, createRuntime, type Runtime, type RuntimeEvent, type RuntimeOptions } from 'troupe';
import { nextEvent } from 'troupe/testing';
import { fixtureAgent, scratchDirs } from '../helpers.js';

const dir = scratchDirs();
const agents = [{ name: 'int', module: fixtureAgent('interactive') }, builtinAgent('echo'), builtinAgent('sleep')];

function open(options: RuntimeOptions = {}): Promise<Runtime> {
  return createRuntime({ logger: false, threads: 2, slotsPerThread: 4, cancelGraceMs: 500, agents, dataDir: dir(), ...options });
}

describe('inputs', () => {
  it('waitForInput parks the task in waiting with its prompt; sendInput resumes it, once per key', async () => {
    const rt = await open();
    const waiting = nextEvent(rt, 'task.waiting');
    const task = await rt.submit({ agent: 'int', input: { mode: 'ask', prompt: 'ship it?' } });
    expect((await waiting).data).toMatchObject({ for: 'input', prompt: 'ship it?' });
    expect(await rt.get(task.id)).toMatchObject({ state: 'waiting', waitingFor: { kind: 'input', prompt: 'ship it?' } });
    const inputEvent = nextEvent(rt, 'task.input', { taskId: task.id });
    const first = await rt.sendInput(task.id, { message: { ok: true }, idempotencyKey: 'k1' });
    expect(first).toMatchObject({ taskId: task.id, seq: 1, idempotencyKey: 'k1', delivered: true });
    expect((await inputEvent).data).toMatchObject({ seq: 1, delivered: true });
    const done = await rt.wait(task.id);
    expect(done).toMatchObject({ state: 'done', output: { answer: { ok: true } }, attempts: 1, runs: 1 });
    expect(done.waitingFor).toBeUndefined();
    // Same key: the same item, nothing stored, nothing delivered again.
    await expect(rt.sendInput(task.id, { message: 'again', idempotencyKey: 'k1' })).resolves.toMatchObject({ seq: 1, message: { ok: true } });
    await rt.close();
  });

  it('queues inputs sent before the agent asks, and delivers them in order', async () => {
    const rt = await open();
    const task = await rt.submit({ agent: 'int', input: { mode: 'chat', count: 3 }, delayMs: 60_000 });
    for (const message of ['a', 'b', 'c']) await rt.sendInput(task.id, { message });
    const delayed = await rt.retry(task.id).catch((error: { code: string }) => error.code);
    expect(delayed).toBe('ILLEGAL_TRANSITION');
    const waitingTask = await rt.submit({ agent: 'int', input: { mode: 'chat', count: 3 } });
    await nextEvent(rt, 'task.waiting', { taskId: waitingTask.id });
    const sends = await Promise.all(['x', 'y', 'z'].map((message) => rt.sendInput(waitingTask.id, { message })));
    expect(sends.map((s) => s.seq)).toEqual([1, 2, 3]);
    expect(await rt.wait(waitingTask.id)).toMatchObject({ state: 'done', output: { got: ['x', 'y', 'z'] } });
    await rt.cancel(task.id);
    await rt.close();
  });

  it('rejects input to an unknown or settled task and unserializable messages, storing nothing', async () => {
    const rt = await open();
    await expect(rt.sendInput('nope', { message: 1 })).rejects.toMatchObject({ code: 'NOT_FOUND' });
    const done = await rt.wait((await rt.submit({ agent: 'echo', input: 1 })).id);
    await expect(rt.sendInput(done.id, { message: 'late' })).rejects.toMatchObject({ code: 'ILLEGAL_TRANSITION' });
    const live = await rt.submit({ agent: 'int', input: { mode: 'ask' } });
    await expect(rt.sendInput(live.id, { message: () => 1 })).rejects.toMatchObject({ code: 'INVALID_INPUT' });
    await expect(rt.sendInput(live.id, { message: 1, idempotencyKey: '' })).rejects.toMatchObject({ code: 'INVALID_INPUT' });
    await expect(rt.sendInput(live.id, { message: 1, extra: true } as never)).rejects.toMatchObject({ code: 'INVALID_INPUT' });
    await nextEvent(rt, 'task.waiting', { taskId: live.id });
    expect(await rt.sendInput(live.id, { message: 'real' })).toMatchObject({ seq: 1 });
    expect(await rt.wait(live.id)).toMatchObject({ output: { answer: 'real' } });
    await rt.close();
  });

  it('an agent-side timeout resumes the task to running', async () => {
    const rt = await open();
    const task = await rt.submit({ agent: 'int', input: { mode: 'timeout', timeoutMs: 100 } });
    expect(await rt.wait(task.id)).toMatchObject({ state: 'done', output: 'timed out' });
    await rt.close();
  });

  it('a task waiting when the runtime closes keeps waiting; the input resumes it with a new run', async () => {
    const path = dir();
    let rt = await open({ dataDir: path });
    const task = await rt.submit({ agent: 'int', input: { mode: 'ask' } });
    await nextEvent(rt, 'task.waiting', { taskId: task.id });
    await rt.close({ timeoutMs: 0 });
    rt = await open({ dataDir: path });
    expect(await rt.get(task.id)).toMatchObject({ state: 'waiting', runs: 1, attempts: 0 });
    await rt.sendInput(task.id, { message: 'after restart' });
    expect(await rt.wait(task.id)).toMatchObject({ state: 'done', runs: 2, output: { answer: 'after restart', run: `${task.id}:2` } });
    await rt.close();
  });

  it('cancels a waiting task', async () => {
    const rt = await open();
    const task = await rt.submit({ agent: 'int', input: { mode: 'ask' } });
    await nextEvent(rt, 'task.waiting', { taskId: task.id });
    expect(await rt.cancel(task.id, 'no answer')).toMatchObject({ state: 'cancelled', reason: 'no answer' });
    await rt.close();
  });
});

describe('sleep and wake', () => {
  it('a sleep result parks the task with a durable timer; the wake run sees followUp on ctx', async () => {
    const rt = await open();
    const sleeping = nextEvent(rt, 'task.sleeping');
    const task = await rt.submit({ agent: 'int', input: { mode: 'sleeper' } });
    expect((await sleeping).taskId).toBe(task.id);
    expect(await rt.wait(task.id)).toMatchObject({ state: 'done', runs: 2, output: { wokeWith: { step: 2 }, run: `${task.id}:2` } });
    await rt.close();
  });
});

describe('subtasks', () => {
  it('spawn creates children with parentId (idempotent per key); join waits for them and returns their outcomes', async () => {
    const rt = await open();
    const parent = await rt.submit({ agent: 'int', input: { mode: 'fanout', children: 3, twice: true } });
    const done = await rt.wait(parent.id);
    expect(done).toMatchObject({ state: 'done', output: { outputs: ['child 0', 'child 1', 'child 2', 'child 0'], states: ['done', 'done', 'done', 'done'] } });
    const { ids } = done.output as { ids: string[] };
    expect(ids[3]).toBe(ids[0]);
    const children = await rt.list({ parentId: parent.id });
    expect(children.tasks.map((t) => t.id).sort()).toEqual([...new Set(ids)].sort());
    for (const child of children.tasks) expect(child).toMatchObject({ parentId: parent.id, state: 'done' });
    await rt.close();
  });

  it('an invalid spawn spec is an error the agent can handle', async () => {
    const rt = await open();
    const task = await rt.wait((await rt.submit({ agent: 'int', input: { mode: 'badspawn' } })).id);
    expect(task).toMatchObject({ state: 'done', output: { code: 'UNKNOWN_AGENT' } });
    expect((await rt.list({ parentId: task.id })).tasks).toEqual([]);
    await rt.close();
  });

  it('cancelling a parent cancels its children', async () => {
    const rt = await open();
    const parent = await rt.submit({ agent: 'int', input: { mode: 'hold', children: 2 } });
    const waiting = await nextEvent(rt, 'task.waiting', { taskId: parent.id });
    expect(waiting.data).toMatchObject({ for: 'join' });
    expect(await rt.cancel(parent.id, 'stop')).toMatchObject({ state: 'cancelled' });
    const children = (await rt.list({ parentId: parent.id })).tasks;
    expect(children).toHaveLength(2);
    for (const child of children) expect(await rt.wait(child.id)).toMatchObject({ state: 'cancelled', reason: 'parent cancelled: stop' });
    await rt.close();
  });
});

describe('waiting gives the slot back', () => {
  it('parents parked in join do not starve their children, and a task waiting for input does not block the others', async () => {
    const rt = await open({ threads: 1, slotsPerThread: 2 });
    const parents = await rt.submitMany([{ agent: 'int', input: { mode: 'spawnThenJoin' } }, { agent: 'int', input: { mode: 'spawnThenJoin' } }]);
    for (const p of parents) expect(await rt.wait(p.id, { timeoutMs: 10_000 })).toMatchObject({ state: 'done', output: { joined: [{ state: 'done', output: 'c' }] } });
    await rt.close();
    const single = await open({ threads: 1, slotsPerThread: 1 });
    const asking = await single.submit({ agent: 'int', input: { mode: 'ask' } });
    await nextEvent(single, 'task.waiting', { taskId: asking.id });
    expect(await single.wait((await single.submit({ agent: 'echo', input: 'meanwhile' })).id, { timeoutMs: 10_000 })).toMatchObject({ state: 'done' });
    await single.sendInput(asking.id, { message: 'now' });
    expect(await single.wait(asking.id)).toMatchObject({ state: 'done', output: { answer: 'now' } });
    await single.close();
  });

  it('an input sent while the waiting attempt is stopping goes to the next attempt, not the stopping one', async () => {
    const rt = await open();
    const task = await rt.submit({ agent: 'int', input: { mode: 'slowAbortAsk', holdMs: 600 }, timeoutMs: 300, retry: { maxAttempts: 2, delayMs: 0 } });
    for (let i = 0; i < 300; i++) {
      const lines: string[] = [];
      for await (const line of rt.logs(task.id)) lines.push(line.message);
      if (lines.includes('aborted')) break;
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    expect(await rt.sendInput(task.id, { message: 'the answer' })).toMatchObject({ delivered: false });
    expect(await rt.wait(task.id)).toMatchObject({ state: 'done', output: { answer: 'the answer', attempt: 2 } });
    await rt.close();
  });

  it('a stopping attempt cannot spawn (no orphan survives the cancel), and join takes only children', async () => {
    const rt = await open();
    const parent = await rt.submit({ agent: 'int', input: { mode: 'spawnOnAbort' } });
    for (let i = 0; i < 300; i++) {
      const lines: string[] = [];
      for await (const line of rt.logs(parent.id)) lines.push(line.message);
      if (lines.includes('running')) break;
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    expect(await rt.cancel(parent.id)).toMatchObject({ state: 'cancelled' });
    expect((await rt.list({ parentId: parent.id })).tasks).toEqual([]);
    const stranger = await rt.wait((await rt.submit({ agent: 'echo', input: 's' })).id);
    expect(await rt.wait((await rt.submit({ agent: 'int', input: { mode: 'joinStranger', stranger: stranger.id } })).id)).toMatchObject({ state: 'done', output: { code: 'INVALID_INPUT' } });
    await rt.close();
  });
});
