/**
 * troupe/testing: a runtime on a temp dir and a manual clock, whose `advance` fires durable timers
 * at once and resolves once what they decided is committed.
 */
import { existsSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { builtinAgent } from 'troupe';
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

  it('rejects bad input with a TroupeError', async () => {
    const t = await createTestRuntime();
    try {
      expect(await rejection(t.advance(-1))).toMatchObject({ code: 'INVALID_INPUT' });
      expect(await rejection(t.advance(Number.NaN))).toMatchObject({ code: 'INVALID_INPUT' });
      expect(await rejection(collectEvents(t.rt, 'task.done', 0))).toMatchObject({ code: 'INVALID_INPUT' });
      expect(await rejection(nextEvent(t.rt, 'task.done', { timeoutMs: 10 }))).toMatchObject({ code: 'WAIT_TIMEOUT' });
    } finally {
      await t.close();
    }
    expect(await rejection(createTestRuntime({ startAt: Number.POSITIVE_INFINITY }))).toMatchObject({ code: 'INVALID_OPTIONS' });
  });
});
