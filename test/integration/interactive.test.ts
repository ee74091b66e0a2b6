/**
 * Interactive agents on LMDB: a restart while an agent waits for input, and attempts that are
 * stopping while an input comes or they spawn. Inputs, subtasks, sleeps and slots given back are
 * the contract's, on both stores (contract-inputs.ts, contract-subtasks.ts, contract-flow.ts);
 * PostgreSQL's own waits across nodes are postgres-runtime-inputs.test.ts's.
 */
import { describe, expect, it } from 'vitest';
import { builtinAgent, createRuntime, type Runtime, type RuntimeOptions } from 'troupe';
import { nextEvent } from 'troupe/testing';
import { fixtureAgent, scratchDirs } from '../helpers.js';

const dir = scratchDirs();
const agents = [{ name: 'int', module: fixtureAgent('interactive') }, builtinAgent('echo'), builtinAgent('sleep')];

function open(options: RuntimeOptions = {}): Promise<Runtime> {
  return createRuntime({ logger: false, threads: 2, slotsPerThread: 4, cancelGraceMs: 500, agents, dataDir: dir(), ...options });
}

describe('inputs', () => {
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

  it('a graceful close does not wait out its timeout for a task waiting for input: that attempt ends at once', async () => {
    const path = dir();
    let rt = await open({ dataDir: path });
    const task = await rt.submit({ agent: 'int', input: { mode: 'ask' } });
    await nextEvent(rt, 'task.waiting', { taskId: task.id });
    // Longer than this test may run: the close must not wait for it.
    await rt.close({ timeoutMs: 120_000 });
    rt = await open({ dataDir: path });
    expect(await rt.get(task.id)).toMatchObject({ state: 'waiting', runs: 1, attempts: 0 });
    await rt.close();
  });
});

describe('stopping attempts', () => {
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
