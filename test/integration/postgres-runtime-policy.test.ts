/**
 * A task's own `timeoutMs` and retry policy on PostgreSQL (schema version 12): stored as given at
 * submit, laid over the agent's registration by the node that claims the task, and shown by
 * get/wait as the LMDB runtime shows them.
 */
import { describe, expect, it } from 'vitest';
import { builtinAgent, type RuntimeEvent } from 'troupe';
import { rejection, scratchPools } from '../helpers.js';
import { pgRuntimes } from '../pg-runtime.js';

const pools = scratchPools();
const runtime = pgRuntimes();

describe('a task with its own timeout and retry policy on PostgreSQL', () => {
  it('times out by its own timeoutMs, and retries by its own delay, over the agent’s', async () => {
    const { url, pool } = await pools({ max: 2 });
    // The agents' own policies would not end either task within the test: no timeout for sleep, a
    // ten-minute retry delay for fail.
    const rt = await runtime(url, {
      agents: [builtinAgent('sleep', { timeoutMs: 0 }), builtinAgent('fail', { retry: { maxAttempts: 3, backoff: 'fixed', delayMs: 600_000, jitter: 0 } })],
    });
    const events: RuntimeEvent[] = [];
    rt.on('*', (event) => events.push(event));

    const slow = await rt.submit({ agent: 'sleep', input: { ms: 600_000 }, timeoutMs: 100, retry: { maxAttempts: 1 } });
    expect(slow).toMatchObject({ timeoutMs: 100, retry: { maxAttempts: 1 } });
    const flaky = await rt.submit({ agent: 'fail', input: { succeedOnAttempt: 2 }, retry: { delayMs: 0 } });
    expect(flaky.retry).toEqual({ maxAttempts: 3, backoff: 'fixed', delayMs: 0, maxDelayMs: expect.any(Number), jitter: 0 });

    const timedOut = await rt.wait(slow.id, { timeoutMs: 20_000 });
    expect(timedOut).toMatchObject({ state: 'dropped', attempts: 1, timeoutMs: 100, error: { code: 'RETRY_EXHAUSTED', message: expect.stringContaining('TIMEOUT') } });
    const recovered = await rt.wait(flaky.id, { timeoutMs: 20_000 });
    expect(recovered).toMatchObject({ state: 'done', attempts: 2, output: { recoveredOnAttempt: 2 } });
    expect(events.find((e) => e.type === 'task.retrying' && e.taskId === flaky.id)?.data).toMatchObject({ delayMs: 0 });

    // As stored: only what the task gave (its budget is max_attempts).
    const stored = await pool.query('SELECT id, timeout_ms::int AS timeout, retry FROM troupe_tasks ORDER BY id');
    expect(stored.rows).toEqual([
      { id: slow.id, timeout: 100, retry: null },
      { id: flaky.id, timeout: null, retry: { delayMs: 0 } },
    ]);
  });

  it('keeps a schedule’s task timeout and retry fields, and the tasks its ticks submit carry them', async () => {
    const { url, pool } = await pools({ max: 2 });
    const rt = await runtime(url, { agents: [builtinAgent('echo')] });
    const created = await rt.schedules.create({ id: 'tick', cron: '* * * * * *', task: { agent: 'echo', timeoutMs: 5_000, retry: { delayMs: 7 } }, overlap: 'allow' });
    expect(created.task).toMatchObject({ timeoutMs: 5_000, retry: { delayMs: 7 } });
    expect(rt.schedules.get('tick').task).toMatchObject({ timeoutMs: 5_000, retry: { delayMs: 7 } });
    const fired = await new Promise<string>((resolve) => {
      const off = rt.on('schedule.fired', (event) => {
        if (event.taskId === undefined) return;
        off();
        resolve(event.taskId);
      });
    });
    expect(await rt.wait(fired, { timeoutMs: 20_000 })).toMatchObject({ state: 'done', timeoutMs: 5_000, retry: { delayMs: 7 } });
    expect((await pool.query('SELECT timeout_ms::int AS timeout, retry FROM troupe_tasks WHERE id = $1', [fired])).rows).toEqual([{ timeout: 5_000, retry: { delayMs: 7 } }]);
  });

  it('refuses a bad timeout or retry field before anything is written', async () => {
    const { url, pool } = await pools({ max: 2 });
    const rt = await runtime(url, { agents: [builtinAgent('echo')] });
    const cases: Array<[Promise<unknown>, string]> = [
      [rt.submit({ agent: 'echo', timeoutMs: -1 }), 'task.timeoutMs'],
      [rt.submit({ agent: 'echo', timeoutMs: 1.5 }), 'task.timeoutMs'],
      [rt.submit({ agent: 'echo', retry: { backoff: 'sometimes' as never } }), 'task.retry.backoff'],
      [rt.submit({ agent: 'echo', retry: { jitter: 2 } }), 'task.retry.jitter'],
      [rt.submit({ agent: 'echo', retry: { bogus: 1 } as never }), 'task.retry.bogus'],
      [rt.submitMany([{ agent: 'echo' }, { agent: 'echo', retry: { delayMs: -5 } }]), 'tasks[1].retry.delayMs'],
    ];
    for (const [promise, names] of cases) expect(await rejection(promise), names).toMatchObject({ code: 'INVALID_INPUT', message: expect.stringContaining(names) });
    expect((await pool.query('SELECT count(*)::int AS n FROM troupe_tasks')).rows[0].n).toBe(0);
  });
});
