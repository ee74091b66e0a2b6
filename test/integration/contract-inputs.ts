/**
 * The contract of interactive inputs (`rt.sendInput` → `ctx.waitForInput` / `ctx.inputs()`),
 * run unchanged on both stores by contract-lmdb.test.ts and contract-postgres.test.ts, with the
 * interactive fixture agent (test/fixtures/agents/interactive.agent.ts). Nothing sleeps: the tests
 * wait for events and `wait()` results. What only PostgreSQL does (another runtime sends, a node
 * closes or dies while its agent waits) is postgres-runtime-inputs.test.ts's.
 */
import { describe, expect, it } from 'vitest';
import { builtinAgent } from 'troupe';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fixtureAgent, maxOverlap, rejection, tempDir } from '../helpers.js';
import { history, nextEvent as next, type ContractBackend } from './contract.js';

const interactive = { name: 'int', module: fixtureAgent('interactive') };
const echoAgent = builtinAgent('echo');
const hostile = { name: 'hostile', module: fixtureAgent('hostile') };
const overlap = { name: 'overlap', module: fixtureAgent('overlap') };

/** Registers the inputs contract against `backend` under `name`. */
export function inputsContract(name: string, backend: ContractBackend): void {
  describe(`inputs (${name})`, () => {
    it('waitForInput parks the task in waiting with its prompt; sendInput resumes it, once per key', async () => {
      const rt = await backend.open({ agents: [interactive] });
      const task = await rt.submit({ agent: 'int', input: { mode: 'ask', prompt: 'ship it?' } });
      const waiting = await next(rt, 'task.waiting', task.id);
      expect(waiting.data).toEqual({ for: 'input', prompt: 'ship it?' });
      expect(await rt.get(task.id)).toMatchObject({ state: 'waiting', waitingFor: { kind: 'input', prompt: 'ship it?' } });
      const inputEvent = next(rt, 'task.input', task.id);
      const first = await rt.sendInput(task.id, { message: { ok: true }, idempotencyKey: 'k1' });
      expect(first).toMatchObject({ taskId: task.id, seq: 1, message: { ok: true }, idempotencyKey: 'k1', delivered: true, at: expect.any(Number) });
      expect((await inputEvent).data).toEqual({ seq: 1, idempotencyKey: 'k1', delivered: true });
      const done = await rt.wait(task.id);
      expect(done).toMatchObject({ state: 'done', output: { answer: { ok: true }, run: `${task.id}:1` }, attempts: 1, runs: 1 });
      expect(done.waitingFor).toBeUndefined();
      // Same key: the same item, nothing stored, nothing delivered again, even though the task settled.
      expect(await rt.sendInput(task.id, { message: 'again', idempotencyKey: 'k1' })).toEqual(first);
      expect((await history(rt, task.id)).filter((e) => e.type === 'task.input')).toHaveLength(1);
    });

    it('keeps inputs sent before the agent asks, and hands them over in order; later ones reach it parked', async () => {
      const rt = await backend.open({ agents: [interactive] });
      await rt.freeze('hold');
      const task = await rt.submit({ agent: 'int', input: { mode: 'chat', count: 4 } });
      expect(await rt.sendInput(task.id, { message: 'a' })).toMatchObject({ seq: 1, delivered: false });
      expect(await rt.sendInput(task.id, { message: 'b' })).toMatchObject({ seq: 2, delivered: false });
      expect(await rt.get(task.id)).toMatchObject({ state: 'queued' });
      const waiting = next(rt, 'task.waiting', task.id);
      await rt.unfreeze();
      await waiting;
      const waitingAgain = next(rt, 'task.waiting', task.id);
      expect(await rt.sendInput(task.id, { message: 'c' })).toMatchObject({ seq: 3, delivered: true });
      await waitingAgain;
      expect(await rt.sendInput(task.id, { message: 'd' })).toMatchObject({ seq: 4, delivered: true });
      expect(await rt.wait(task.id)).toMatchObject({ state: 'done', attempts: 1, runs: 1, output: { got: ['a', 'b', 'c', 'd'] } });
      // The agent parked twice (after b, after c); a and b were handed over without a wait.
      const events = await history(rt, task.id);
      expect(events.filter((e) => e.type === 'task.waiting')).toHaveLength(2);
      expect(events.filter((e) => e.type === 'task.input').map((e) => e.data)).toEqual([
        { seq: 1, delivered: false },
        { seq: 2, delivered: false },
        { seq: 3, delivered: true },
        { seq: 4, delivered: true },
      ]);
    });

    it('an input timeout resumes the agent, which handles INPUT_TIMEOUT', async () => {
      const rt = await backend.open({ agents: [interactive] });
      const task = await rt.submit({ agent: 'int', input: { mode: 'timeout', timeoutMs: 100 } });
      expect(await rt.wait(task.id)).toMatchObject({ state: 'done', attempts: 1, output: 'timed out' });
      expect((await history(rt, task.id)).map((e) => e.type)).toEqual(['task.queued', 'task.started', 'task.waiting', 'task.done']);
    });

    it('an agent whose input wait timed out holds its slot again: nothing runs beside it on a one-slot thread', async () => {
      const dir = tempDir();
      try {
        const file = join(dir.path, 'marks');
        writeFileSync(file, '');
        const rt = await backend.open({ threads: 1, slotsPerThread: 1, agents: [hostile, overlap] });
        // Fast attempts first: the dispatcher then starts the next ones ahead, into the thread's queue.
        const warm = await rt.submitMany(Array.from({ length: 50 }, (_, i) => ({ agent: 'hostile', input: { mode: 'echo', value: i } })));
        for (const task of warm) await rt.wait(task.id);
        const held = await rt.submit({ agent: 'hostile', input: { mode: 'timeoutThenWork', file, timeoutMs: 20, ms: 300 } });
        // It timed out and works (holding the one slot, as it did before it waited).
        while (!readFileSync(file, 'utf8').includes(held.id)) await new Promise((resolve) => setTimeout(resolve, 5));
        const others = await rt.submitMany([1, 2].map(() => ({ agent: 'overlap', input: { file, ms: 20 } })));
        expect(await rt.wait(held.id)).toMatchObject({ state: 'done', output: 'worked' });
        for (const task of others) expect(await rt.wait(task.id)).toMatchObject({ state: 'done' });
        expect(maxOverlap(file)).toBe(1);
      } finally {
        dir.cleanup();
      }
    });

    it('rejects input to an unknown or settled task and bad input, storing nothing', async () => {
      const rt = await backend.open({ agents: [interactive, echoAgent] });
      expect(await rejection(rt.sendInput('nope', { message: 1 }))).toMatchObject({ code: 'NOT_FOUND' });
      const done = await rt.wait((await rt.submit({ agent: 'echo', input: 1 })).id);
      expect(await rejection(rt.sendInput(done.id, { message: 'late' }))).toMatchObject({ code: 'ILLEGAL_TRANSITION' });
      expect(await rejection(rt.sendInput(done.id, { message: 'late', idempotencyKey: 'never-sent' }))).toMatchObject({ code: 'ILLEGAL_TRANSITION' });
      const live = await rt.submit({ agent: 'int', input: { mode: 'ask' } });
      const waiting = next(rt, 'task.waiting', live.id);
      expect(await rejection(rt.sendInput(live.id, { message: () => 1 }))).toMatchObject({ code: 'INVALID_INPUT' });
      expect(await rejection(rt.sendInput(live.id, { message: 1, idempotencyKey: '' }))).toMatchObject({ code: 'INVALID_INPUT' });
      expect(await rejection(rt.sendInput(live.id, { message: 1, extra: true } as never))).toMatchObject({ code: 'INVALID_INPUT' });
      expect(await rejection(rt.sendInput(live.id, null as never))).toMatchObject({ code: 'INVALID_INPUT' });
      await waiting;
      // None of them was stored: the first real input is seq 1.
      expect(await rt.sendInput(live.id, { message: 'real' })).toMatchObject({ seq: 1, delivered: true });
      expect(await rt.wait(live.id)).toMatchObject({ output: { answer: 'real' } });
      const events = await history(rt, live.id);
      expect(events.filter((e) => e.type === 'task.input')).toHaveLength(1);
    });

    it('cancels a task whose agent waits for input: its wait is aborted and it settles cancelled', async () => {
      const rt = await backend.open({ agents: [interactive], cancelGraceMs: 5_000 });
      const task = await rt.submit({ agent: 'int', input: { mode: 'ask' } });
      await next(rt, 'task.waiting', task.id);
      expect(await rt.cancel(task.id, 'no answer')).toMatchObject({ state: 'cancelled', reason: 'no answer' });
      expect(await rejection(rt.sendInput(task.id, { message: 'too late' }))).toMatchObject({ code: 'ILLEGAL_TRANSITION' });
      const events = await history(rt, task.id);
      expect(events.map((e) => e.type)).toEqual(['task.queued', 'task.started', 'task.waiting', 'task.cancelled']);
      // Its attempt was stopped (ctx.signal) and ended cancelled: the task did not leave it running.
      expect(events[3]!.data).toMatchObject({ run: 1, attempt: 1, exit: 'cancelled', reason: 'no answer' });
    });
  });
}
