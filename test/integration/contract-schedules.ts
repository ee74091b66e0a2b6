/**
 * More of the public API's contract (contract.ts), run unchanged on both stores by
 * `contract-lmdb.test.ts` and `contract-postgres.test.ts`: `schedules.update` (which fields, when
 * `nextRunAt` moves, a field given as `undefined` back to its default, bad patches refused with
 * the same codes and nothing changed), a schedule's `catchUp`, `catchUpWindowMs` and `queue_one`
 * shown as given, and `list({ labels })` (every given label matches, with state, agent and pages).
 * When ticks fire is each store's own test (schedules.test.ts on a manual clock,
 * postgres-schedule-policies.test.ts on the database's).
 */
import { describe, expect, it } from 'vitest';
import { builtinAgent, type ListOptions } from 'troupe';
import { rejection } from '../helpers.js';
import type { ContractBackend } from './contract.js';

const echoAgent = builtinAgent('echo');

/** Registers the tests against `backend` under `name`. */
export function scheduleContract(name: string, backend: ContractBackend): void {
  describe(`schedules.update and list({ labels }) on ${name}`, () => {
    it('updates a schedule: the next tick stays unless the cron or zone changes or it resumes; policies as given', async () => {
      const rt = await backend.open({ agents: [echoAgent] });
      const created = await rt.schedules.create({ id: 'nightly', cron: '0 3 * * *', tz: 'Europe/Berlin', task: { agent: 'echo', input: 1 }, overlap: 'queue_one', catchUp: 'once', catchUpWindowMs: 3_600_000 });
      expect(created).toMatchObject({ overlap: 'queue_one', catchUp: 'once', catchUpWindowMs: 3_600_000, paused: false });
      const v2 = await rt.schedules.update('nightly', { task: { agent: 'echo', input: 2 }, overlap: 'allow', catchUp: 'all', catchUpWindowMs: 0 });
      expect(v2).toMatchObject({ id: 'nightly', cron: '0 3 * * *', tz: 'Europe/Berlin', nextRunAt: created.nextRunAt, task: { agent: 'echo', input: 2 }, overlap: 'allow', catchUp: 'all', catchUpWindowMs: 0, fired: 0, skipped: 0, createdAt: created.createdAt });
      expect(v2.updatedAt).toBeGreaterThanOrEqual(created.updatedAt);
      expect(rt.schedules.get('nightly')).toEqual(v2);
      expect(rt.schedules.list()).toEqual([v2]);
      // A new zone: 03:00 UTC, not Berlin's.
      const utc = await rt.schedules.update('nightly', { tz: 'UTC' });
      expect(utc.nextRunAt).not.toBe(created.nextRunAt);
      expect([new Date(utc.nextRunAt).getUTCHours(), new Date(utc.nextRunAt).getUTCMinutes()]).toEqual([3, 0]);
      expect(utc.nextRunAt).toBeGreaterThan(utc.updatedAt);
      expect(utc.nextRunAt).toBeLessThanOrEqual(utc.updatedAt + 86_400_000);
      // Given as undefined: back to the defaults.
      const defaults = await rt.schedules.update('nightly', { overlap: undefined, catchUp: undefined, catchUpWindowMs: undefined });
      expect(defaults).toMatchObject({ overlap: 'skip', catchUp: 'skip', catchUpWindowMs: 86_400_000, nextRunAt: utc.nextRunAt, task: { input: 2 } });
      expect(await rt.schedules.update('nightly', { paused: true })).toMatchObject({ paused: true, nextRunAt: utc.nextRunAt });
      // A new cron, resumed by the same update.
      const cron = await rt.schedules.update('nightly', { cron: '15 4 * * *', paused: false });
      expect(cron).toMatchObject({ cron: '15 4 * * *', paused: false });
      expect([new Date(cron.nextRunAt).getUTCHours(), new Date(cron.nextRunAt).getUTCMinutes()]).toEqual([4, 15]);
      expect(rt.schedules.get('nightly')).toEqual(cron);
    });

    it('refuses a bad update with the same code on both stores, and changes nothing', async () => {
      const rt = await backend.open({ agents: [echoAgent] });
      const created = await rt.schedules.create({ id: 'nightly', cron: '0 3 * * *', task: { agent: 'echo' } });
      // A field update cannot change is refused, not ignored, with a message that names it.
      const unchangeable: Array<[unknown, string]> = [
        [{ id: 'other' }, 'schedule.id cannot be updated'],
        [{ nextRunAt: Date.now() + 60_000 }, 'schedule.nextRunAt cannot be updated'],
        [{ fired: 5 }, 'schedule.fired cannot be updated'],
        [null, 'a schedule update must be an object'],
      ];
      for (const [patch, message] of unchangeable) expect(await rejection(rt.schedules.update('nightly', patch as never)), message).toMatchObject({ code: 'INVALID_INPUT', message: expect.stringContaining(message) });
      const bad: Array<[unknown, unknown, string]> = [
        ['nightly', { bogus: 1 }, 'INVALID_INPUT'],
        ['nightly', [], 'INVALID_INPUT'],
        ['nightly', { cron: 'nope' }, 'INVALID_CRON'],
        ['nightly', { cron: '@daily' }, 'INVALID_CRON'],
        ['nightly', { tz: 'Mars/Base' }, 'INVALID_TIMEZONE'],
        ['nightly', { tz: 'Mars/Base', cron: 'nope' }, 'INVALID_TIMEZONE'],
        ['nightly', { task: { agent: 'nope' } }, 'UNKNOWN_AGENT'],
        ['nightly', { task: { agent: 'echo', idempotencyKey: 'k' } }, 'INVALID_INPUT'],
        ['nightly', { task: { agent: 'echo', input: () => 1 } }, 'INVALID_INPUT'],
        ['nightly', { task: null }, 'INVALID_INPUT'],
        ['nightly', { overlap: 'sometimes' }, 'INVALID_INPUT'],
        ['nightly', { catchUp: 'some' }, 'INVALID_INPUT'],
        ['nightly', { catchUpWindowMs: -1 }, 'INVALID_INPUT'],
        ['nightly', { catchUpWindowMs: 1.5 }, 'INVALID_INPUT'],
        ['nightly', { paused: 'yes' }, 'INVALID_INPUT'],
        ['nightly', { cron: 'nope', overlap: 'sometimes' }, 'INVALID_CRON'],
        ['nobody', { paused: true }, 'NOT_FOUND'],
        ['bad id!', { paused: true }, 'NOT_FOUND'],
        ['nobody', null, 'INVALID_INPUT'],
        ['', { paused: true }, 'INVALID_INPUT'],
        [5, { paused: true }, 'INVALID_INPUT'],
      ];
      for (const [id, patch, code] of bad) expect(await rejection(rt.schedules.update(id as never, patch as never)), `${String(id)} ${JSON.stringify(patch)}`).toMatchObject({ code });
      expect(rt.schedules.list()).toEqual([created]);
    });

    it('lists tasks with every given label, with a state, an agent and pages', async () => {
      const rt = await backend.open({ agents: [echoAgent] });
      const a = await rt.submit({ agent: 'echo', labels: { team: 'red', tier: 'gold' } });
      const b = await rt.submit({ agent: 'echo', labels: { team: 'red' } });
      const c = await rt.submit({ agent: 'echo', labels: { team: 'blue', tier: 'gold' } });
      const d = await rt.submit({ agent: 'echo' });
      for (const task of [a, b, c, d]) await rt.wait(task.id);
      // Frozen: e stays queued.
      await rt.freeze();
      const e = await rt.submit({ agent: 'echo', labels: { team: 'red', tier: 'gold' } });
      const ids = async (options: ListOptions) => (await rt.list(options)).tasks.map((t) => t.id);
      expect(await ids({ labels: { team: 'red' } })).toEqual([a.id, b.id, e.id]);
      expect(await ids({ labels: { team: 'red', tier: 'gold' } })).toEqual([a.id, e.id]);
      expect(await ids({ labels: { tier: 'gold' } })).toEqual([a.id, c.id, e.id]);
      expect(await ids({ labels: { team: 'green' } })).toEqual([]);
      expect(await ids({ labels: { team: 'red', tier: 'silver' } })).toEqual([]);
      expect(await ids({ labels: {} })).toEqual([a.id, b.id, c.id, d.id, e.id]);
      expect(await ids({ labels: { team: 'red' }, state: 'queued' })).toEqual([e.id]);
      expect(await ids({ labels: { team: 'red' }, state: 'done' })).toEqual([a.id, b.id]);
      expect(await ids({ labels: { team: 'red' }, agent: 'echo' })).toEqual([a.id, b.id, e.id]);
      expect(await ids({ labels: { team: 'red' }, agent: 'other' })).toEqual([]);
      // A page at a time.
      const first = await rt.list({ labels: { team: 'red' }, limit: 2 });
      expect(first.tasks.map((t) => t.id)).toEqual([a.id, b.id]);
      expect(first.next).not.toBeNull();
      const second = await rt.list({ labels: { team: 'red' }, limit: 2, after: first.next! });
      expect(second.tasks.map((t) => t.id)).toEqual([e.id]);
      expect(second.next).toBeNull();
      expect(second.tasks[0]).toMatchObject({ state: 'queued', labels: { team: 'red', tier: 'gold' } });
      expect(first.tasks[0]).toEqual(await rt.get(a.id));
      await rt.unfreeze();
    });
  });
}
