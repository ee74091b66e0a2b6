/**
 * The contract of `ctx.progress` (contract.ts's suite, run by contract-lmdb.test.ts and
 * contract-postgres.test.ts): the reports that reach the store, as the thread throttles and
 * coalesces them (the last of a turn, at most one per 100 ms, the last one sent with the end),
 * each a `task.progress` event before the task's settle; the task's `progress` (the last report,
 * at the agent's clock) on get, list and wait; kept by a settle and a requeue, cleared by a retry.
 * The tests share one runtime (see `sharedRuntime`), each waiting for its own tasks by id.
 */
import { describe, expect, it } from 'vitest';
import type { RuntimeEvent } from 'troupe';
import { fixtureAgent } from '../helpers.js';
import { history, sharedRuntime, type ContractBackend } from './contract.js';

const reporter = { name: 'reporter', module: fixtureAgent('reporter') };

/** Registers the progress contract's tests against `backend` under `name`. */
export function progressContract(name: string, backend: ContractBackend): void {
  describe(`progress on ${name}`, () => {
    const rt = sharedRuntime(backend, { agents: [reporter] });

    it("stores the reports that reach it as task.progress events, before the settle, and the last one as the task's progress", async () => {
      const live: RuntimeEvent[] = [];
      const task = await rt().submit({ agent: 'reporter', input: { mode: 'steps' } });
      const off = rt().on('task.progress', (e) => e.taskId === task.id && live.push(e));
      const done = await rt().wait(task.id);
      const events = await history(rt(), task.id);
      off();
      expect(events.map((e) => e.type)).toEqual(['task.queued', 'task.started', 'task.progress', 'task.progress', 'task.progress', 'task.done']);
      const reports = events.filter((e) => e.type === 'task.progress');
      // Three in one turn: the last. One past the interval. Two in two turns within it: the last, sent with the end.
      expect(reports.map((e) => e.data)).toEqual([{ value: 0.3, message: 'c' }, { value: 0.6, message: 'd' }, { value: 0.8 }]);
      expect(reports.every((e) => e.attemptId === `${task.id}:1:1`)).toBe(true);
      expect(live.map((e) => e.data)).toEqual(reports.map((e) => e.data));
      expect(done).toMatchObject({ state: 'done', output: 'stepped', progress: { value: 0.8 } });
      expect(done.progress).not.toHaveProperty('message');
      // When the agent reported it, on its thread's clock.
      expect(done.progress!.at).toBeGreaterThanOrEqual(done.startedAt! - 1_000);
      expect(done.progress!.at).toBeLessThanOrEqual(done.settledAt! + 1_000);
      expect(await rt().get(task.id)).toEqual(done);
      expect((await rt().list({ agent: 'reporter', limit: 1_000 })).tasks.find((t) => t.id === task.id)).toEqual(done);
    });

    it('keeps the progress through a requeue and a settle; a retry of the dropped task clears it', async () => {
      const retry = { backoff: 'fixed' as const, delayMs: 1, jitter: 0 };
      const requeued = await rt().submit({ agent: 'reporter', input: { mode: 'failFirst' }, retry: { ...retry, maxAttempts: 2 } });
      expect(await rt().wait(requeued.id)).toMatchObject({ state: 'done', attempts: 2, output: 'again', progress: { value: 0.4, message: 'tried' } });
      // Its budget spent by the one retryable failure: dropped.
      const dropped = await rt().wait((await rt().submit({ agent: 'reporter', input: { mode: 'failFirst' }, retry: { ...retry, maxAttempts: 1 } })).id);
      expect(dropped).toMatchObject({ state: 'dropped', progress: { value: 0.4, message: 'tried' } });
      const retried = await rt().retry(dropped.id);
      expect(retried.state).toBe('queued');
      expect(retried).not.toHaveProperty('progress');
      const again = await rt().wait(dropped.id);
      expect(again).toMatchObject({ state: 'done', runs: 2, output: 'again' });
      expect(again).not.toHaveProperty('progress');
    });
  });
}
