/**
 * The contract of capabilities (README: "Capabilities"): agents declare `capabilities`, a spec
 * names `requires` instead of (or with) an agent and goes to the least-loaded agent covering them,
 * and a spec no agent covers is stored `needs_attention` (reason `unmatched`). Run unchanged on
 * both stores by contract-lmdb.test.ts and contract-postgres.test.ts. What only PostgreSQL does
 * (agents of other runtimes, a covering agent that comes later) is
 * postgres-runtime-capabilities.test.ts's.
 */
import { describe, expect, it } from 'vitest';
import { builtinAgent, type Runtime, type RuntimeEvent } from 'troupe';
import { rejection } from '../helpers.js';
import { heard, readEvents, type ContractBackend } from './contract.js';

const echo = builtinAgent('echo').module;
const plain = { name: 'plain', module: echo };
const tsDev = { name: 'tsdev', module: echo, capabilities: ['git', 'ts'] };
const gitOnly = { name: 'gitonly', module: echo, capabilities: ['git'] };

/** The task's events up to the first one `type` names. */
function eventsUntil(rt: Runtime, taskId: string, type: string): Promise<RuntimeEvent[]> {
  return readEvents(rt, { taskId }, (seen) => seen.some((e) => e.type === type));
}

/** Registers the capabilities contract against `backend` under `name`. */
export function capabilitiesContract(name: string, backend: ContractBackend): void {
  describe(`capabilities (${name})`, () => {
    it('routes a spec by requires to an agent covering them; get, list and wait show the agent and the sorted requires', async () => {
      const rt = await backend.open({ agents: [plain, tsDev, gitOnly] });
      const routed = await rt.submit({ requires: ['ts', 'git', 'ts'], input: 1 });
      expect(routed).toMatchObject({ agent: 'tsdev', requires: ['git', 'ts'], state: 'queued', runs: 1 });
      expect(routed.reason).toBeUndefined();
      const done = await rt.wait(routed.id);
      expect(done).toMatchObject({ agent: 'tsdev', requires: ['git', 'ts'], state: 'done', output: 1, attempts: 1 });
      expect(await rt.get(routed.id)).toEqual(done);
      expect((await rt.list({ agent: 'tsdev' })).tasks).toEqual([done]);
      // A named agent that covers them runs it, as named.
      expect(await rt.wait((await rt.submit({ agent: 'gitonly', requires: ['git'], input: 2 })).id)).toMatchObject({ agent: 'gitonly', requires: ['git'], state: 'done' });
      // A task without requires shows none.
      expect(Object.keys(await rt.wait((await rt.submit({ agent: 'plain', input: 3 })).id))).not.toContain('requires');
    });

    it('a batch spreads across the covering agents, least loaded first', async () => {
      const rt = await backend.open({ agents: [{ name: 'z1', module: echo, capabilities: ['z'] }, { name: 'z2', module: echo, capabilities: ['z', 'extra'] }] });
      const batch = await rt.submitMany([1, 2, 3, 4].map((input) => ({ requires: ['z'], input })));
      expect(batch.map((t) => t.agent)).toEqual(['z1', 'z2', 'z1', 'z2']);
      for (const task of batch) expect(await rt.wait(task.id)).toMatchObject({ state: 'done', requires: ['z'] });
    });

    it('a spec no agent covers is stored needs_attention (unmatched) with its event; wait resolves on it; a retry is UNKNOWN_AGENT while none covers it', async () => {
      const rt = await backend.open({ agents: [plain, gitOnly] });
      const lost = await rt.submit({ requires: ['rust'], input: 'r' });
      expect(lost).toMatchObject({ agent: '', requires: ['rust'], state: 'needs_attention', reason: 'unmatched', runs: 1, attempts: 0 });
      const events = await eventsUntil(rt, lost.id, 'task.needs_attention');
      expect(events.map((e) => e.type)).toEqual(['task.needs_attention']);
      expect(events[0]!.data).toMatchObject({ run: 1, reason: 'unmatched', agent: '', requires: ['rust'] });
      expect(await rt.wait(lost.id)).toMatchObject({ state: 'needs_attention', reason: 'unmatched', agent: '', requires: ['rust'] });
      expect(await rt.get(lost.id)).toMatchObject({ state: 'needs_attention', reason: 'unmatched', agent: '', requires: ['rust'] });
      expect(await rejection(rt.retry(lost.id))).toMatchObject({ code: 'UNKNOWN_AGENT', message: expect.stringContaining('rust') });
      expect(await rt.get(lost.id)).toMatchObject({ state: 'needs_attention', agent: '' });
      // A named agent that does not cover them: unmatched, and it stays the task's agent.
      const named = await rt.submit({ agent: 'gitonly', requires: ['git', 'ts'] });
      expect(named).toMatchObject({ agent: 'gitonly', requires: ['git', 'ts'], state: 'needs_attention', reason: 'unmatched' });
      expect(await rejection(rt.retry(named.id))).toMatchObject({ code: 'UNKNOWN_AGENT', message: expect.stringContaining('gitonly') });
      expect((await rt.list({ state: 'needs_attention' })).tasks.map((t) => t.id)).toEqual([lost.id, named.id]);
      // It can be cancelled.
      expect(await rt.cancel(named.id, 'no one')).toMatchObject({ state: 'cancelled', reason: 'no one' });
    });

    it('a schedule\'s template may name requires: each tick\'s task is routed as a submit is', async () => {
      const rt = await backend.open({ agents: [plain, tsDev] });
      const fired = heard(rt, (e) => e.type === 'schedule.fired' && e.taskId !== undefined);
      const created = await rt.schedules.create({ id: 'routed', cron: '* * * * * *', task: { requires: ['ts'], input: 'tick' } });
      expect(created.task).toMatchObject({ requires: ['ts'], input: 'tick' });
      expect(created.task.agent).toBeUndefined();
      const tick = await fired;
      expect(await rt.wait(tick.taskId!)).toMatchObject({ agent: 'tsdev', requires: ['ts'], state: 'done', output: 'tick' });
      // The stored template goes through an update's checks again, unchanged.
      const paused = await rt.schedules.update('routed', { paused: true });
      expect(paused.task).toEqual(created.task);
      expect(await rejection(rt.schedules.update('routed', { task: { requires: [] } }))).toMatchObject({ code: 'INVALID_INPUT', message: expect.stringContaining('requires') });
    });

    it('refuses bad requires and capabilities with the codes of the other store, storing nothing', async () => {
      const rt = await backend.open({ agents: [plain, gitOnly] });
      const cases: Array<[() => Promise<unknown>, string, string]> = [
        [() => rt.submit({ requires: [] }), 'INVALID_INPUT', 'task.requires'],
        [() => rt.submit({ requires: 'git' as never }), 'INVALID_INPUT', 'task.requires'],
        [() => rt.submit({ requires: [''] }), 'INVALID_INPUT', 'task.requires'],
        [() => rt.submit({ requires: [1] as never }), 'INVALID_INPUT', 'task.requires'],
        [() => rt.submit({ input: 1 } as never), 'INVALID_INPUT', 'task.agent'],
        [() => rt.submit({ agent: 'nope', requires: ['git'] }), 'UNKNOWN_AGENT', 'nope'],
        [() => rt.submit({ requires: ['git'], input: () => 1 }), 'INVALID_INPUT', 'task.input'],
        [() => rt.submitMany([{ requires: ['git'] }, { requires: [] }]), 'INVALID_INPUT', 'tasks[1].requires'],
      ];
      for (const [call, code, names] of cases) expect(await rejection(call()), `${code} ${names}`).toMatchObject({ code, message: expect.stringContaining(names) });
      for (const capabilities of ['git', [''], [1]]) {
        expect(() => rt.agents.register({ name: 'bad', module: echo, capabilities: capabilities as never }), JSON.stringify(capabilities)).toThrow(expect.objectContaining({ code: 'INVALID_OPTIONS', message: expect.stringContaining('capabilities') }));
      }
      expect(rt.agents.list().map((a) => a.name)).not.toContain('bad');
      expect((await rt.list({})).tasks).toEqual([]);
    });
  });
}
