/**
 * The contract of subtasks (`ctx.spawn`, `ctx.join`, a task's `parentId`, `list({ parentId })`,
 * a cancel's cascade), run unchanged on both stores by contract-lmdb.test.ts and
 * contract-postgres.test.ts, with the interactive fixture agent
 * (test/fixtures/agents/interactive.agent.ts). Nothing sleeps: the tests wait for events and
 * `wait()` results. What only PostgreSQL does (children settled on another runtime, a parent's
 * node closed while it waits) is postgres-runtime-subtasks.test.ts's.
 */
import { describe, expect, it } from 'vitest';
import { builtinAgent } from 'troupe';
import { fixtureAgent, rejection } from '../helpers.js';
import { history, nextEvent as next, type ContractBackend } from './contract.js';

const interactive = { name: 'int', module: fixtureAgent('interactive') };
const echoAgent = builtinAgent('echo');
const sleepAgent = builtinAgent('sleep');

/** Registers the subtasks contract against `backend` under `name`. */
export function subtasksContract(name: string, backend: ContractBackend): void {
  describe(`subtasks (${name})`, () => {
    it('spawn creates children with parentId (idempotent per key); join parks the parent and returns their outcomes', async () => {
      const rt = await backend.open({ agents: [interactive, echoAgent] });
      const parent = await rt.submit({ agent: 'int', input: { mode: 'fanout', children: 3, twice: true } });
      const done = await rt.wait(parent.id);
      expect(done).toMatchObject({ state: 'done', attempts: 1, runs: 1, output: { outputs: ['child 0', 'child 1', 'child 2', 'child 0'], states: ['done', 'done', 'done', 'done'] } });
      expect(done.parentId).toBeUndefined();
      const { ids } = done.output as { ids: string[] };
      expect(ids[3]).toBe(ids[0]);
      const children = await rt.list({ parentId: parent.id });
      expect(children.tasks.map((t) => t.id)).toEqual([...new Set(ids)].sort());
      for (const child of children.tasks) expect(child).toMatchObject({ parentId: parent.id, state: 'done', idempotencyKey: expect.stringMatching(new RegExp(`^spawn:${parent.id}:c\\d$`)) });
      expect(await rt.get(ids[0]!)).toMatchObject({ parentId: parent.id });
      // Pages and other filters hold with parentId.
      const page = await rt.list({ parentId: parent.id, limit: 2 });
      expect(page.tasks).toHaveLength(2);
      expect((await rt.list({ parentId: parent.id, after: page.next! })).tasks.map((t) => t.id)).toEqual([children.tasks[2]!.id]);
      expect((await rt.list({ parentId: parent.id, state: 'failed' })).tasks).toEqual([]);
      expect((await rt.list({ parentId: ids[0]! })).tasks).toEqual([]);
      // The parent waited for the join at most once (its children may all have settled before it
      // joined: then it did not wait), in one run of one attempt.
      const events = await history(rt, parent.id);
      const waiting = events.filter((e) => e.type === 'task.waiting');
      expect(waiting.length).toBeLessThanOrEqual(1);
      for (const event of waiting) expect(new Set((event.data as { for: string; ids: string[] }).ids)).toEqual(new Set(ids));
    });

    it('a spec submit would refuse is an error the agent handles (nothing stored); join takes only the task\'s children', async () => {
      const rt = await backend.open({ agents: [interactive, echoAgent] });
      const bad = await rt.wait((await rt.submit({ agent: 'int', input: { mode: 'badspawn' } })).id);
      expect(bad).toMatchObject({ state: 'done', output: { code: 'UNKNOWN_AGENT' } });
      expect((await rt.list({ parentId: bad.id })).tasks).toEqual([]);
      const stranger = await rt.wait((await rt.submit({ agent: 'echo', input: 's' })).id);
      expect(await rt.wait((await rt.submit({ agent: 'int', input: { mode: 'joinStranger', stranger: stranger.id } })).id)).toMatchObject({ state: 'done', output: { code: 'INVALID_INPUT' } });
      expect(await rt.wait((await rt.submit({ agent: 'int', input: { mode: 'joinStranger', stranger: 'no-such-task' } })).id)).toMatchObject({ state: 'done', output: { code: 'NOT_FOUND' } });
    });

    it('a submit names a parent: stored and shown, listed among its children; an unknown parent is NOT_FOUND', async () => {
      const rt = await backend.open({ agents: [echoAgent] });
      const parent = await rt.wait((await rt.submit({ agent: 'echo', input: 'p' })).id);
      const child = await rt.submit({ agent: 'echo', input: 'c', parentId: parent.id });
      expect(child.parentId).toBe(parent.id);
      expect(await rt.wait(child.id)).toMatchObject({ state: 'done', parentId: parent.id });
      expect((await rt.list({ parentId: parent.id })).tasks.map((t) => t.id)).toEqual([child.id]);
      expect(await rejection(rt.submit({ agent: 'echo', input: 'x', parentId: 'no-such-task' }))).toMatchObject({ code: 'NOT_FOUND' });
      expect(await rejection(rt.submitMany([{ agent: 'echo', input: 'y' }, { agent: 'echo', input: 'z', parentId: 'no-such-task' }]))).toMatchObject({ code: 'NOT_FOUND', message: expect.stringContaining('tasks[1].parentId') });
      expect(await rejection(rt.list({ parentId: '' }))).toMatchObject({ code: 'INVALID_INPUT' });
      // Nothing of the refused batches was stored.
      expect((await rt.list({})).tasks).toHaveLength(2);
    });

    it('cancelling a parent parked in a join cancels its children, with the parent\'s reason', async () => {
      const rt = await backend.open({ agents: [interactive, sleepAgent], cancelGraceMs: 5_000 });
      const parent = await rt.submit({ agent: 'int', input: { mode: 'hold', children: 2 } });
      const waiting = await next(rt, 'task.waiting', parent.id);
      expect(waiting.data).toMatchObject({ for: 'join' });
      expect(await rt.get(parent.id)).toMatchObject({ state: 'waiting', waitingFor: { kind: 'join', ids: (waiting.data as { ids: string[] }).ids } });
      expect(await rt.cancel(parent.id, 'stop')).toMatchObject({ state: 'cancelled', reason: 'stop' });
      const children = (await rt.list({ parentId: parent.id })).tasks;
      expect(children).toHaveLength(2);
      for (const child of children) expect(await rt.wait(child.id)).toMatchObject({ state: 'cancelled', reason: 'parent cancelled: stop' });
    });
  });
}
