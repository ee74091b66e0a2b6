/**
 * The contract of `maxQueued` (AT_CAPACITY), run unchanged on both stores by contract-lmdb.test.ts
 * and contract-postgres.test.ts: past it a submit, a batch and an agent's spawn store nothing, a
 * schedule's tick is skipped with AT_CAPACITY's message, a repeated idempotency key still answers,
 * and the metrics count the refusals. Tasks due in an hour stay queued, so nothing waits for time
 * but the schedule's first tick. That concurrent submits on several runtimes cannot pass it
 * together is postgres-runtime-share.test.ts's.
 */
import { describe, expect, it } from 'vitest';
import { builtinAgent, type RuntimeEvent } from 'troupe';
import { fixtureAgent } from '../helpers.js';
import { heard, type ContractBackend } from './contract.js';

const interactive = { name: 'int', module: fixtureAgent('interactive') };
const FULL = 'admission is full: 3 tasks queued, maxQueued is 3';

/** Registers the admission contract against `backend` under `name`. */
export function admissionContract(name: string, backend: ContractBackend): void {
  describe(`maxQueued (${name})`, () => {
    it('past maxQueued, submits, batches and spawns store nothing, ticks are skipped, repeated keys answer; refusals are counted', async () => {
      const rt = await backend.open({ maxQueued: 3, agents: [interactive, builtinAgent('echo')] });
      const stored = async () => (await rt.list({ limit: 100 })).tasks.length;
      // The parent spawns children due in an hour until admission refuses the fourth.
      const parent = await rt.wait((await rt.submit({ agent: 'int', input: { mode: 'crowd' } })).id);
      expect(parent).toMatchObject({ state: 'done', output: { code: 'AT_CAPACITY', message: FULL } });
      const { ids } = parent.output as { ids: string[] };
      expect(ids).toHaveLength(3);
      expect(await stored()).toBe(4);
      await expect(rt.submit({ agent: 'echo', input: 'over' })).rejects.toMatchObject({ code: 'AT_CAPACITY', retryable: true, message: FULL });
      await expect(rt.submitMany([{ agent: 'echo' }, { agent: 'echo' }])).rejects.toMatchObject({ code: 'AT_CAPACITY', message: FULL });
      // A key already held is no new task: it answers with its task, full or not.
      expect((await rt.submit({ agent: 'echo', idempotencyKey: `spawn:${parent.id}:k0` })).id).toBe(ids[0]);
      const skipped = heard(rt, (e) => e.type === 'schedule.fired' && e.data.scheduleId === 'full');
      await rt.schedules.create({ id: 'full', cron: '* * * * * *', task: { agent: 'echo' } });
      expect(((await skipped) as RuntimeEvent<'schedule.fired'>).data).toMatchObject({ skipped: 'error', error: FULL });
      await rt.schedules.delete('full');
      expect(await stored()).toBe(4);
      // A queued task that leaves makes room for one.
      await rt.cancel(ids[2]!, 'room');
      await rt.submit({ agent: 'echo', input: 'in', delayMs: 3_600_000 });
      await expect(rt.submit({ agent: 'echo', input: 'over' })).rejects.toMatchObject({ code: 'AT_CAPACITY', message: FULL });
      // The spawn and the three submits, not the skipped tick (as LMDB counts them).
      expect((await rt.metrics()).atCapacityRejections).toBe(4);
    });
  });
}
