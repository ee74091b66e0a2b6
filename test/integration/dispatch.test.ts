/**
 * Dispatch on LMDB where it differs from PostgreSQL's: a task's instance key, and the one commit
 * of a submitMany's events.
 * What both stores share is in contract.ts (submit, wait, events, keys, lists), contract-flow.ts
 * (priority order) and contract-progress.ts (progress).
 */
import { describe, expect, it } from 'vitest';
import { builtinAgent } from 'troupe';
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

  it('keeps fork results with branch and rev, and agent logs', async () => {
    const rt = await runtime({ agents: [{ name: 'chatty', module: fixtureAgent('chatty') }, { name: 'weird', module: fixtureAgent('weird') }] });
    const chatty = await rt.wait((await rt.submit({ agent: 'chatty', input: { lines: 7 } })).id);
    expect(chatty).toMatchObject({ state: 'done', output: { lines: 7 }, result: { kind: 'success', summary: 'wrote 7 lines', branch: 'feat/chatty', rev: 'abc123' } });
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
});
