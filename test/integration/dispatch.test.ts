import { describe, expect, it } from 'vitest';
import { builtinAgent, type Runtime, type RuntimeEvent } from 'troupe';
import { fixtureAgent, runtimes } from '../helpers.js';

const runtime = runtimes();

describe('submit → dispatch → settle', () => {
  it('runs a task on a worker thread and stores its output durably', async () => {
    const rt = await runtime({ agents: [builtinAgent('echo')] });
    const submitted = await rt.submit({ agent: 'echo', input: { hello: 'world' }, labels: { team: 'a' } });
    expect(submitted.state).toBe('queued');
    expect(submitted.instanceKey).toMatch(/^echo\/default\//);
    const done = await rt.wait(submitted.id);
    expect(done).toMatchObject({ id: submitted.id, state: 'done', output: { hello: 'world' }, result: { kind: 'success' }, attempts: 1, runs: 1, labels: { team: 'a' } });
    expect(done.startedAt).toBeGreaterThanOrEqual(done.createdAt);
    expect(done.settledAt).toBeGreaterThanOrEqual(done.startedAt!);
    expect(await rt.get(submitted.id)).toEqual(done);
  });

  it('emits queued, started and exactly one settling event per run, in order', async () => {
    const rt = await runtime({ agents: [builtinAgent('echo')] });
    const events: RuntimeEvent[] = [];
    rt.on('*', (e) => events.push(e));
    const task = await rt.submit({ agent: 'echo', input: 1 });
    await rt.wait(task.id);
    const mine = events.filter((e) => e.taskId === task.id).map((e) => e.type);
    expect(mine).toEqual(['task.queued', 'task.started', 'task.done']);
    const cursors = events.map((e) => e.cursor);
    expect([...cursors].sort()).toEqual(cursors);
  });

  it('keeps fork results with branch and rev, and agent logs and progress', async () => {
    const rt = await runtime({ agents: [{ name: 'chatty', module: fixtureAgent('chatty') }, { name: 'weird', module: fixtureAgent('weird') }] });
    const progress: number[] = [];
    rt.on('task.progress', (e) => progress.push(e.data?.value as number));
    const chatty = await rt.wait((await rt.submit({ agent: 'chatty', input: { lines: 7 } })).id);
    expect(chatty).toMatchObject({ state: 'done', output: { lines: 7 }, result: { kind: 'success', summary: 'wrote 7 lines', branch: 'feat/chatty', rev: 'abc123' } });
    expect(chatty.progress).toMatchObject({ value: 0.5, message: 'half way' });
    expect(progress).toEqual([0.5]);
    const lines = [];
    for await (const line of rt.logs(chatty.id)) lines.push(line);
    expect(lines.map((l) => l.message)).toEqual(['line 0', 'line 1', 'line 2', 'line 3', 'line 4', 'line 5', 'line 6']);
    expect(lines[3]).toMatchObject({ level: 'info', fields: { i: 3 } });
    const fork = await rt.wait((await rt.submit({ agent: 'weird', input: { mode: 'fork' } })).id);
    expect(fork).toMatchObject({ state: 'done', result: { kind: 'fork', branch: 'feat/x', rev: 'deadbeef', summary: 'forked' } });
  });

  it('submitMany stores all tasks in one step and returns them in order', async () => {
    const rt = await runtime({ agents: [builtinAgent('echo')] });
    const tasks = await rt.submitMany(Array.from({ length: 50 }, (_, i) => ({ agent: 'echo', input: i })));
    expect(tasks.map((t) => t.input)).toEqual(Array.from({ length: 50 }, (_, i) => i));
    const queuedSeqs: number[] = [];
    for await (const e of rt.events({ types: ['task.queued'] })) {
      queuedSeqs.push(e.seq);
      if (queuedSeqs.length === 50) break;
    }
    expect(queuedSeqs).toEqual(Array.from({ length: 50 }, (_, i) => queuedSeqs[0]! + i));
    const done = await Promise.all(tasks.map((t) => rt.wait(t.id)));
    expect(done.every((t, i) => t.state === 'done' && t.output === i)).toBe(true);
  });

  it('dedupes by idempotency key: the second submit returns the first task and stores nothing', async () => {
    const rt = await runtime({ agents: [builtinAgent('echo')] });
    const first = await rt.submit({ agent: 'echo', input: 'a', idempotencyKey: 'pr-42' });
    const again = await rt.submit({ agent: 'echo', input: 'something else', idempotencyKey: 'pr-42' });
    expect(again.id).toBe(first.id);
    expect(again.input).toBe('a');
    await rt.wait(first.id);
    const afterSettle = await rt.submit({ agent: 'echo', input: 'b', idempotencyKey: 'pr-42' });
    expect(afterSettle).toMatchObject({ id: first.id, state: 'done' });
    const batch = await rt.submitMany([
      { agent: 'echo', input: 1, idempotencyKey: 'k' },
      { agent: 'echo', input: 2, idempotencyKey: 'k' },
      { agent: 'echo', input: 3, idempotencyKey: 'pr-42' },
    ]);
    expect(batch[1]!.id).toBe(batch[0]!.id);
    expect(batch[2]!.id).toBe(first.id);
    const page = await rt.list({ limit: 100 });
    expect(page.tasks.map((t) => t.id).sort()).toEqual([first.id, batch[0]!.id].sort());
  });

  it('lists with filters and a cursor, in submit order', async () => {
    const rt = await runtime({ agents: [builtinAgent('echo'), builtinAgent('fail', { retry: { maxAttempts: 1 } })] });
    const tasks = await rt.submitMany(Array.from({ length: 7 }, (_, i) => ({ agent: i % 2 ? 'fail' : 'echo', input: { mode: 'fatal' } })));
    await Promise.all(tasks.map((t) => rt.wait(t.id)));
    const pages: string[][] = [];
    let after: string | undefined;
    do {
      const page = await rt.list({ limit: 3, after });
      pages.push(page.tasks.map((t) => t.id));
      after = page.next ?? undefined;
    } while (after);
    expect(pages.flat()).toEqual(tasks.map((t) => t.id));
    expect(pages[0]).toHaveLength(3);
    const failed = await rt.list({ state: 'failed' });
    expect(failed.tasks.map((t) => t.id)).toEqual(tasks.filter((_, i) => i % 2).map((t) => t.id));
    expect((await rt.list({ agent: 'echo', state: 'done' })).tasks).toHaveLength(4);
    expect(rt.stats().tasks).toMatchObject({ done: 4, failed: 3, queued: 0, running: 0 });
  });

  it('runs higher priority first, FIFO within a priority', async () => {
    const rt = await runtime({ threads: 1, slotsPerThread: 1, prefetch: 0, agents: [builtinAgent('sleep')] });
    const started: unknown[] = [];
    rt.on('task.started', (e) => started.push(e.taskId));
    // The first task occupies the only slot while the rest queue up behind it.
    const blocker = await rt.submit({ agent: 'sleep', input: { ms: 150 } });
    const [low1, high, low2, urgent] = await rt.submitMany([
      { agent: 'sleep', input: { ms: 1 }, priority: 5 },
      { agent: 'sleep', input: { ms: 1 }, priority: 1 },
      { agent: 'sleep', input: { ms: 1 }, priority: 5 },
      { agent: 'sleep', input: { ms: 1 }, priority: -1 },
    ]);
    await Promise.all([blocker, low1, high, low2, urgent].map((t) => rt.wait(t!.id)));
    expect(started).toEqual([blocker.id, urgent!.id, high!.id, low1!.id, low2!.id]);
  });
});
