/**
 * troupe/testing: a runtime on a temp dir and a manual clock, whose `advance` fires durable timers
 * at once and resolves once what they decided is committed.
 */
import { existsSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { builtinAgent } from 'troupe';
import { AgentError, defineAgent } from 'troupe/agent';
import { threadId } from 'node:worker_threads';
import { collectEvents, createTestRuntime, nextEvent, recordEvents } from 'troupe/testing';
import { rejection, scratchDirs } from '../helpers.js';

const dirs = scratchDirs();

describe('createTestRuntime', () => {
  it('holds a delayed task until the clock reaches it, then runs it on a real thread', async () => {
    const t = await createTestRuntime({ agents: [builtinAgent('echo')] });
    try {
      const started = recordEvents(t.rt, 'task.started');
      const task = await t.rt.submit({ agent: 'echo', input: { hello: 'world' }, delayMs: 60_000 });
      await t.advance(59_999);
      expect(started).toHaveLength(0);
      expect((await t.rt.get(task.id)).state).toBe('queued');
      const starting = t.nextEvent('task.started', { taskId: task.id });
      await t.advance(1);
      expect((await starting).data.run).toBe(1);
      expect(await t.rt.wait(task.id)).toMatchObject({ state: 'done', output: { hello: 'world' } });
      expect(t.clock.now()).toBe(Date.UTC(2026, 0, 1) + 60_000);
    } finally {
      await t.close();
    }
  });

  it('skips a retry backoff: the second attempt runs as soon as the clock passes the delay', async () => {
    const t = await createTestRuntime({ startAt: 0, agents: [builtinAgent('fail', { retry: { maxAttempts: 2, backoff: 'fixed', delayMs: 3_600_000, maxDelayMs: 3_600_000, jitter: 0 }, backoff: false })] });
    try {
      const retrying = nextEvent(t.rt, 'task.retrying');
      const task = await t.rt.submit({ agent: 'fail', input: {} });
      expect((await retrying).data.delayMs).toBe(3_600_000);
      const dropped = collectEvents(t.rt, 'task.dropped', 1, { taskId: task.id });
      await t.advance(3_600_000);
      expect((await dropped)[0]!.data.attempt).toBe(2);
      expect(await t.rt.wait(task.id)).toMatchObject({ state: 'dropped', attempts: 2 });
    } finally {
      await t.close();
    }
  });

  it('removes its temp data dir on close, keeps one it was given, and closes once', async () => {
    const t = await createTestRuntime();
    expect(existsSync(t.dataDir)).toBe(true);
    await Promise.all([t.close(), t.close()]);
    expect(existsSync(t.dataDir)).toBe(false);
    const given = dirs();
    const kept = await createTestRuntime({ dataDir: given });
    await kept[Symbol.asyncDispose]();
    expect(existsSync(given)).toBe(true);
  });

  it('runs agents given as functions in the test\'s own thread: closures, inputs, spawn and join, logs, errors', async () => {
    const calls: string[] = [];
    const t = await createTestRuntime({
      inThread: {
        // A closure over the test's own variables: nothing crosses a thread.
        lint: defineAgent(async (input: { file: string }) => {
          calls.push(`lint ${input.file}`);
          return { thread: threadId, clean: input.file !== 'bad.ts' };
        }),
        review: async (input: { files: string[] }, ctx) => {
          ctx.log.info('reviewing', { files: input.files.length });
          ctx.progress(0.5, 'half');
          const answer = await ctx.waitForInput({ prompt: 'go?' });
          const children = await Promise.all(input.files.map((file) => ctx.spawn({ agent: 'lint', input: { file }, idempotencyKey: file })));
          const joined = await ctx.join(children.map((c) => c.id));
          return { answer, clean: joined.map((j) => (j.output as { clean: boolean }).clean) };
        },
        broken: () => {
          throw new AgentError('nope', { retryable: false, code: 'BROKEN' });
        },
      },
      agents: [builtinAgent('echo')],
    });
    try {
      const waiting = t.nextEvent('task.waiting');
      const task = await t.rt.submit({ agent: 'review', input: { files: ['a.ts', 'bad.ts'] } });
      expect((await waiting).data).toMatchObject({ for: 'input', prompt: 'go?' });
      await t.rt.sendInput(task.id, { message: 'yes' });
      expect(await t.rt.wait(task.id)).toMatchObject({ state: 'done', output: { answer: 'yes', clean: [true, false] } });
      expect(calls.sort()).toEqual(['lint a.ts', 'lint bad.ts']);
      const children = (await t.rt.list({ parentId: task.id })).tasks;
      expect(children.map((c) => (c.output as { thread: number }).thread)).toEqual([threadId, threadId]);
      const lines: string[] = [];
      for await (const line of t.rt.logs(task.id)) lines.push(line.message);
      expect(lines).toEqual(['reviewing']);
      const broken = await t.rt.wait((await t.rt.submit({ agent: 'broken' })).id);
      expect(broken).toMatchObject({ state: 'failed', error: { code: 'BROKEN', message: 'nope' } });
      // A module agent runs in this thread too.
      expect(await t.rt.wait((await t.rt.submit({ agent: 'echo', input: { x: 1 } })).id)).toMatchObject({ state: 'done', output: { x: 1 } });
    } finally {
      await t.close();
    }
  });

  it('skips a retry backoff of an in-thread agent, and two in-thread runtimes keep their agents apart', async () => {
    let attempts = 0;
    const t = await createTestRuntime({ startAt: 0, inThread: { flaky: async () => (++attempts < 2 ? Promise.reject(new Error('first')) : 'second') } });
    const other = await createTestRuntime({ inThread: { flaky: () => 'other' } });
    try {
      const retrying = t.nextEvent('task.retrying');
      const task = await t.rt.submit({ agent: 'flaky', retry: { maxAttempts: 2, delayMs: 600_000, maxDelayMs: 600_000, jitter: 0 } });
      expect((await retrying).data.delayMs).toBe(600_000);
      await t.advance(600_000);
      expect(await t.rt.wait(task.id)).toMatchObject({ state: 'done', output: 'second', attempts: 2 });
      expect(await other.rt.wait((await other.rt.submit({ agent: 'flaky' })).id)).toMatchObject({ state: 'done', output: 'other' });
    } finally {
      await Promise.all([t.close(), other.close()]);
    }
  });

  it("closes with a task waiting for input, on the manual clock: close()'s deadline runs on wall time", async () => {
    const t = await createTestRuntime({ inThread: { asker: async (_: unknown, ctx) => ({ answer: await ctx.waitForInput({ prompt: 'plan?' }) }) } });
    const task = await t.rt.submit({ agent: 'asker', input: {} });
    await t.nextEvent('task.waiting', { taskId: task.id });
    // A graceful close waits for live attempts up to its timeout, then interrupts them.
    await t.rt.close({ timeoutMs: 100 });
    expect(t.rt.state).toBe('closed');
    await t.close();
  });

  it('rejects bad input with a TroupeError', async () => {
    const t = await createTestRuntime();
    try {
      expect(await rejection(t.advance(-1))).toMatchObject({ code: 'INVALID_INPUT' });
      expect(await rejection(t.advance(Number.NaN))).toMatchObject({ code: 'INVALID_INPUT' });
      expect(await rejection(collectEvents(t.rt, 'task.done', 0))).toMatchObject({ code: 'INVALID_INPUT' });
      expect(await rejection(nextEvent(t.rt, 'task.done', { timeoutMs: 10 }))).toMatchObject({ code: 'WAIT_TIMEOUT' });
      expect(await rejection(nextEvent(t.rt, 'task.done', { timeoutMs: Number.POSITIVE_INFINITY }))).toMatchObject({ code: 'INVALID_INPUT' });
      // A type rt.on refuses rejects at once, and leaves no timer to throw when its timeout passes.
      expect(await rejection(nextEvent(t.rt, 'task.finished' as never, { timeoutMs: 5 }))).toMatchObject({ code: 'INVALID_OPTIONS' });
      await new Promise((resolve) => setTimeout(resolve, 30));
      // A match that throws rejects with its error, not with a timeout.
      const thrown = nextEvent(t.rt, 'runtime.frozen', {
        match: () => {
          throw new Error('bad match');
        },
      });
      await t.rt.freeze();
      expect(await rejection(thrown)).toMatchObject({ message: 'bad match' });
    } finally {
      await t.close();
    }
    expect(await rejection(createTestRuntime({ startAt: Number.POSITIVE_INFINITY }))).toMatchObject({ code: 'INVALID_OPTIONS' });
    expect(await rejection(createTestRuntime({ inThread: { bad: 42 as never } }))).toMatchObject({ code: 'INVALID_OPTIONS' });
  });
});
