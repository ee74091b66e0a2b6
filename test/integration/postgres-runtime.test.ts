/**
 * The runtime on PostgreSQL (issue #15): `createRuntime({ store: { postgres } })` serves the public
 * API on the cluster's database. Every supported call, its bad input (refused before anything is
 * written), the calls with no backing there yet (UNSUPPORTED_STORE), and a cancel of a task that
 * runs on another runtime sharing the database.
 */
import type pg from 'pg';
import { describe, expect, it, vi } from 'vitest';
import { builtinAgent, type RuntimeEvent, type Task } from 'troupe';
import { join } from 'node:path';
import { fixtureAgent, rejection, scratchDirs, scratchPools, started } from '../helpers.js';
import { mostAtOnce, readStamps } from '../cluster.js';
import { pgRuntimes, thrown } from '../pg-runtime.js';
import { heard } from './contract.js';

const pools = scratchPools();
const runtime = pgRuntimes();
const dirs = scratchDirs();

const tasksIn = async (pool: pg.Pool) => Number((await pool.query('SELECT count(*) AS n FROM troupe_tasks')).rows[0].n);

describe('a runtime on PostgreSQL', () => {
  it('submits, gets, lists and waits, with the LMDB runtime shapes; a settled task resolves a wait at once; keys dedupe; submitMany is one transaction', async () => {
    const { url, pool } = await pools({ max: 2 });
    const rt = await runtime(url, { agents: [builtinAgent('echo')] });
    expect(rt.state).toBe('running');
    const task = await rt.submit({ agent: 'echo', input: { n: 1 }, labels: { team: 'red' }, idempotencyKey: 'pr-1', priority: 2 });
    expect(task).toMatchObject({ agent: 'echo', state: 'queued', input: { n: 1 }, labels: { team: 'red' }, idempotencyKey: 'pr-1', priority: 2, attempts: 0, runs: 1, lane: 'default' });
    expect(task.createdAt).toEqual(expect.any(Number));
    const done = await rt.wait(task.id, { timeoutMs: 20_000 });
    expect(done).toMatchObject({ id: task.id, state: 'done', output: { n: 1 }, attempts: 1, runs: 1 });
    expect(done.startedAt).toBeGreaterThanOrEqual(done.createdAt);
    expect(done.settledAt).toBeGreaterThanOrEqual(done.startedAt!);
    expect(await rt.wait(task.id)).toEqual(done);
    expect(await rt.get(task.id)).toEqual(done);
    // The key is taken: the first task comes back, and nothing more is stored.
    expect((await rt.submit({ agent: 'echo', input: { n: 2 }, idempotencyKey: 'pr-1' })).id).toBe(task.id);
    expect(await tasksIn(pool)).toBe(1);

    // A bad spec in a batch stores none of it.
    expect(await rejection(rt.submitMany([{ agent: 'echo', input: 1 }, { agent: 'echo', input: () => 1 }]))).toMatchObject({ code: 'INVALID_INPUT', message: expect.stringContaining('tasks[1].input') });
    expect(await tasksIn(pool)).toBe(1);
    const batch = await rt.submitMany([{ agent: 'echo', input: 'a' }, { agent: 'echo', input: 'b' }, { agent: 'echo', input: 'c' }]);
    expect(batch.map((t) => t.input)).toEqual(['a', 'b', 'c']);
    const settled = await Promise.all(batch.map((t) => rt.wait(t.id)));
    expect(settled.map((t) => t.state)).toEqual(['done', 'done', 'done']);

    // Pages in submit order, filtered by state and agent.
    const first = await rt.list({ state: 'done', agent: 'echo', limit: 3 });
    expect(first.tasks.map((t) => t.id)).toEqual([task.id, ...batch.slice(0, 2).map((t) => t.id)]);
    const second = await rt.list({ state: 'done', limit: 3, after: first.next! });
    expect(second).toEqual({ tasks: [settled[2]], next: null });
    expect((await rt.list({ state: 'queued' })).tasks).toEqual([]);
    expect(await rejection(rt.get('01NOSUCHTASK'))).toMatchObject({ code: 'NOT_FOUND' });
    expect(await rejection(rt.wait('01NOSUCHTASK'))).toMatchObject({ code: 'NOT_FOUND' });
  });

  it('fails an attempt whose output PostgreSQL cannot store (a lone surrogate) with INVALID_RESULT, and the node settles the rest', async () => {
    const { url } = await pools({ max: 4 });
    const rt = await runtime(url, { agents: [builtinAgent('echo'), { name: 'weird', module: fixtureAgent('weird'), backoff: false }] });
    expect(await rejection(rt.submit({ agent: 'echo', input: { text: 'x\uD800y' } }))).toMatchObject({ code: 'INVALID_INPUT', message: expect.stringContaining('lone UTF-16 surrogate') });
    const bad = await rt.submit({ agent: 'weird', input: { mode: 'lonesurrogate' } });
    const good = await Promise.all([1, 2, 3].map((n) => rt.submit({ agent: 'echo', input: n })));
    expect(await rt.wait(bad.id)).toMatchObject({ state: 'failed', error: { code: 'INVALID_RESULT' } });
    for (const [i, task] of good.entries()) expect(await rt.wait(task.id)).toMatchObject({ state: 'done', output: i + 1 });
  });

  it('refuses bad input before anything is written, and the calls it cannot back with UNSUPPORTED_STORE naming them', async () => {
    const { url, pool } = await pools({ max: 2 });
    const rt = await runtime(url, { agents: [builtinAgent('echo')] });
    // Each call is made in its turn: a rejection made early would wait unhandled while earlier cases run.
    const cases: Array<[() => Promise<unknown>, string, string]> = [
      [() => rt.submit({ agent: 'nope' }), 'UNKNOWN_AGENT', 'nope'],
      [() => rt.submit({ agent: 'echo', input: () => 1 } as never), 'INVALID_INPUT', 'task.input'],
      [() => rt.submit({ agent: 'echo', bogus: 1 } as never), 'INVALID_INPUT', 'task.bogus'],
      [() => rt.submit({ agent: 'echo', priority: 1.5 }), 'INVALID_INPUT', 'priority'],
      [() => rt.submit({ agent: 'echo', input: { at: new Date() } }), 'INVALID_INPUT', 'input'],
      // A workspace Troupe would make for the task (no path) would be one node's; a given path is stored (contract-workspace.ts).
      [() => rt.submit({ agent: 'echo', workspace: { keep: 'never' } }), 'UNSUPPORTED_STORE', 'task.workspace without a path'],
      [() => rt.submit({ agent: 'echo', workspace: {} }), 'UNSUPPORTED_STORE', 'task.workspace without a path'],
      [() => rt.submit({ agent: 'echo', lane: 'tenant-a' }), 'UNSUPPORTED_STORE', 'task.lane'],
      [() => rt.submit({ agent: 'echo', timeoutMs: -5 }), 'INVALID_INPUT', 'task.timeoutMs'],
      [() => rt.submitMany('nope' as never), 'INVALID_INPUT', 'array'],
      [() => rt.get(''), 'INVALID_INPUT', 'get: id'],
      [() => rt.list({ limit: 0 }), 'INVALID_INPUT', 'limit'],
      [() => rt.list({ state: 'nope' as never }), 'INVALID_INPUT', 'state'],
      [() => rt.list({ bogus: 1 } as never), 'INVALID_OPTIONS', 'bogus'],
      [() => rt.list({ parentId: '' }), 'INVALID_INPUT', 'parentId'],
      [() => rt.submit({ agent: 'echo', parentId: 'no-such-task' }), 'NOT_FOUND', 'task.parentId'],
      [() => rt.wait('x', { timeoutMs: -1 }), 'INVALID_INPUT', 'timeoutMs'],
      [() => rt.cancel('x', 5 as never), 'INVALID_INPUT', 'reason'],
      [() => rt.retry(''), 'INVALID_INPUT', 'retry: id'],
      [() => rt.freeze(5 as never), 'INVALID_INPUT', 'reason'],
      [() => rt.kill(5 as never), 'INVALID_INPUT', 'kill: reason'],
      // A NUL character, which PostgreSQL's text does not hold: refused, not STORE_FAILED.
      [() => rt.submit({ agent: 'echo', idempotencyKey: 'k\u0000x' }), 'INVALID_INPUT', 'idempotencyKey holds a NUL'],
      [() => rt.sendInput('x', { message: 1, idempotencyKey: 'k\u0000x' }), 'INVALID_INPUT', 'sendInput: idempotencyKey holds a NUL'],
      [() => rt.cancel('x', 'why\u0000'), 'INVALID_INPUT', 'cancel: reason holds a NUL'],
      [() => rt.freeze('r\u0000'), 'INVALID_INPUT', 'freeze: reason holds a NUL'],
      [() => rt.kill('r\u0000'), 'INVALID_INPUT', 'kill: reason holds a NUL'],
      [() => rt.prune({ states: ['queued'] } as never), 'INVALID_OPTIONS', 'prune: states'],
      [() => rt.events({ after: 'not a cursor' }).next(), 'INVALID_INPUT', 'cursor'],
      [() => rt.events({ types: ['task.nope' as never] }).next(), 'INVALID_OPTIONS', 'task.nope'],
      [() => rt.close({ bogus: 1 } as never), 'INVALID_OPTIONS', 'bogus'],
      [() => rt.schedules.create({ id: 'x', cron: 'not cron', task: { agent: 'echo' } }), 'INVALID_CRON', ''],
      [() => rt.schedules.create({ id: 'x', cron: '* * * * *', task: { agent: 'nope' } }), 'UNKNOWN_AGENT', 'nope'],
      [() => rt.schedules.create({ id: 'x', cron: '* * * * *', task: { agent: 'echo' }, catchUp: 'sometimes' as never }), 'INVALID_INPUT', 'catchUp'],
      [() => rt.schedules.create({ id: 'x', cron: '* * * * *', task: { agent: 'echo', workspace: { keep: 'always' } } }), 'UNSUPPORTED_STORE', 'task.workspace without a path'],
      [() => rt.schedules.update('x', { paused: true }), 'NOT_FOUND', 'x'],
    ];
    for (const [call, code, names] of cases) expect(await rejection(call()), `${code} ${names}`).toMatchObject({ code, message: expect.stringContaining(names) });
    expect(thrown(() => rt.on('task.nope' as never, () => undefined))).toMatchObject({ code: 'INVALID_OPTIONS' });
    expect(thrown(() => rt.agents.register({ name: 'git', module: builtinAgent('echo').module, capabilities: ['git\u0000'] }))).toMatchObject({ code: 'INVALID_OPTIONS', message: expect.stringContaining('NUL') });
    expect(thrown(() => rt.agents.register({ name: 'gpt', module: builtinAgent('echo').module, concurrency: { total: 2, 'gpt\u0000': 1 } }))).toMatchObject({ code: 'INVALID_OPTIONS', message: expect.stringContaining('NUL') });
    expect(thrown(() => rt.agents.register({ name: 'bad name!', module: builtinAgent('echo').module }))).toMatchObject({ code: 'INVALID_OPTIONS' });
    expect(await tasksIn(pool)).toBe(0);

    // No backing on PostgreSQL yet: each names itself and the store.
    const refusals: Array<[string, () => unknown]> = [
      ['setDispatchTarget', () => rt.setDispatchTarget('k', 1)],
      ['resetInstance', () => rt.resetInstance('k')],
      ['instances', () => rt.instances()],
      ['backup', () => rt.backup('/tmp/b')],
    ];
    for (const [call, fn] of refusals) {
      let error: { code?: string; message: string };
      try {
        error = await rejection(Promise.resolve().then(fn));
      } catch {
        error = thrown(fn);
      }
      expect(error, call).toMatchObject({ code: 'UNSUPPORTED_STORE', message: expect.stringMatching(new RegExp(`${call.replace('.', '\\.')}.*PostgreSQL`)) });
    }
    // Inputs are backed now (postgres-runtime-inputs.test.ts): an unknown task is NOT_FOUND, as on LMDB.
    expect(await rejection(rt.sendInput('x', { message: 1 }))).toMatchObject({ code: 'NOT_FOUND' });
    // The dashboard is served on PostgreSQL too (postgres-runtime-dashboard.test.ts): off unless asked.
    expect(rt.dashboard()).toBeUndefined();
    await rt.close();
    expect(rt.state).toBe('closed');
    expect(await rejection(rt.submit({ agent: 'echo' }))).toMatchObject({ code: 'CLOSED' });
    expect(thrown(() => rt.events())).toMatchObject({ code: 'CLOSED' });
  });

  it('waits time out, abort, and survive a failure and a retry; retry starts a new run of a failed, dropped or cancelled task only', async () => {
    const { url } = await pools({ max: 2 });
    const rt = await runtime(url, { agents: [builtinAgent('echo'), builtinAgent('fail', { retry: { maxAttempts: 2, backoff: 'fixed', delayMs: 10 } })] });
    const later = await rt.submit({ agent: 'echo', delayMs: 600_000 });
    expect(later.runAt).toBeGreaterThan(later.createdAt);
    expect(await rejection(rt.wait(later.id, { timeoutMs: 50 }))).toMatchObject({ code: 'WAIT_TIMEOUT' });
    const abort = new AbortController();
    const aborted = rt.wait(later.id, { signal: abort.signal });
    abort.abort(new Error('gave up'));
    expect(await rejection(aborted)).toMatchObject({ message: 'gave up' });

    const fatal = await rt.submit({ agent: 'fail', input: { mode: 'fatal' } });
    expect(await rt.wait(fatal.id)).toMatchObject({ state: 'failed', runs: 1, attempts: 1, error: { code: 'FATAL', retryable: false } });
    const dropped = await rt.submit({ agent: 'fail', input: { mode: 'throw' } });
    expect(await rt.wait(dropped.id)).toMatchObject({ state: 'dropped', attempts: 2, reason: 'retry_exhausted', error: { code: 'RETRY_EXHAUSTED' } });
    const again = await rt.retry(fatal.id);
    expect(again).toMatchObject({ id: fatal.id, state: 'queued', runs: 2, attempts: 0 });
    expect(again.error).toBeUndefined();
    expect(await rt.wait(fatal.id)).toMatchObject({ state: 'failed', runs: 2 });
    const recovering = await rt.submit({ agent: 'fail', input: { succeedOnAttempt: 2 } });
    expect(await rt.wait(recovering.id)).toMatchObject({ state: 'done', attempts: 2, output: { recoveredOnAttempt: 2 } });
    expect(await rejection(rt.retry(recovering.id))).toMatchObject({ code: 'ILLEGAL_TRANSITION' });
    expect(await rejection(rt.retry(later.id))).toMatchObject({ code: 'ILLEGAL_TRANSITION' });
    expect(await rejection(rt.retry('01NOSUCHTASK'))).toMatchObject({ code: 'NOT_FOUND' });
  });

  it('cancels a queued task at once, a task running on another runtime through that runtime, and refuses a settled one', async () => {
    const { url, pool } = await pools({ max: 2 });
    // `runner` runs the sleep agent; `operator` runs nothing and only calls the API.
    const runner = await runtime(url, { agents: [builtinAgent('sleep'), builtinAgent('echo')], cancelGraceMs: 5_000 });
    const operator = await runtime(url);

    const queued = await runner.submit({ agent: 'sleep', delayMs: 600_000 });
    const cancelled = await operator.cancel(queued.id, 'not needed');
    expect(cancelled).toMatchObject({ state: 'cancelled', reason: 'not needed' });
    expect(await operator.cancel(queued.id)).toMatchObject({ state: 'cancelled', reason: 'not needed' });

    const long = await runner.submit({ agent: 'sleep', input: { ms: 60_000, steps: 1 } });
    await started(runner, long.id);
    const seen = heard(runner, (e) => e.type === 'task.cancelled' && e.taskId === long.id);
    const stopped = await operator.cancel(long.id, 'operator says stop');
    expect(stopped).toMatchObject({ id: long.id, state: 'cancelled', reason: 'operator says stop', error: { code: 'CANCELLED' } });
    expect((await seen).data).toMatchObject({ exit: 'cancelled', reason: 'operator says stop', run: 1, attempt: 1 });
    expect((await pool.query('SELECT exit FROM troupe_attempts WHERE task_id = $1', [long.id])).rows).toEqual([{ exit: 'cancelled' }]);
    expect(await runner.wait(long.id)).toMatchObject({ state: 'cancelled' });

    const finished = await runner.submit({ agent: 'echo', input: 1 });
    await runner.wait(finished.id);
    expect(await rejection(operator.cancel(finished.id))).toMatchObject({ code: 'ILLEGAL_TRANSITION' });
    expect(await rejection(operator.cancel('01NOSUCHTASK'))).toMatchObject({ code: 'NOT_FOUND' });
    // A cancelled task runs again after a retry, its cancel forgotten.
    await operator.retry(long.id);
    expect((await pool.query('SELECT cancel_reason FROM troupe_tasks WHERE id = $1', [long.id])).rows).toEqual([{ cancel_reason: null }]);
    await operator.cancel(long.id);
  });

  it('streams events: replays after a cursor, then live, each once, in order; on and off', async () => {
    const { url } = await pools({ max: 2 });
    const rt = await runtime(url, { agents: [builtinAgent('echo')] });
    const done: string[] = [];
    const listener = (event: RuntimeEvent<'task.done'>) => void done.push(event.taskId!);
    rt.on('task.done', listener);
    const a = await rt.submit({ agent: 'echo', input: 'a' });
    await rt.wait(a.id);
    const stop = new AbortController();
    const seen: RuntimeEvent[] = [];
    let last: Task | undefined;
    const reading = (async () => {
      for await (const event of rt.events({ signal: stop.signal })) {
        seen.push(event);
        if (event.type === 'task.done' && event.taskId === last?.id) stop.abort();
      }
    })();
    last = await rt.submit({ agent: 'echo', input: 'b' });
    await reading;
    expect(seen.map((e) => [e.type, e.taskId])).toEqual([
      ['task.queued', a.id],
      ['task.started', a.id],
      ['task.done', a.id],
      ['task.queued', last.id],
      ['task.started', last.id],
      ['task.done', last.id],
    ]);
    const cursors = seen.map((e) => e.cursor);
    expect([...cursors].sort()).toEqual(cursors);
    expect(new Set(cursors).size).toBe(cursors.length);
    expect(seen[2]!.data).toMatchObject({ run: 1, attempt: 1, exit: 'success' });
    await expect.poll(() => done).toEqual([a.id, last.id]);

    // After a cursor (or an event's seq), for one task.
    const after = seen[2]!;
    const tail: RuntimeEvent[] = [];
    const stopTail = new AbortController();
    for await (const event of rt.events({ after: after.cursor, taskId: last.id, signal: stopTail.signal })) {
      tail.push(event);
      if (event.type === 'task.done') stopTail.abort();
    }
    expect(tail).toEqual(seen.slice(3));
    const bySeq: RuntimeEvent[] = [];
    for await (const event of rt.events({ after: after.seq, types: ['task.done'], signal: AbortSignal.timeout(1_000) })) {
      bySeq.push(event);
      break;
    }
    expect(bySeq).toEqual([seen[5]]);
    rt.off('task.done', listener as never);
    const c = await rt.submit({ agent: 'echo', input: 'c' });
    await rt.wait(c.id);
    expect(done).toEqual([a.id, last.id]);
  });

  it('freezes and unfreezes the whole cluster, and shows it in stats on every runtime', async () => {
    const { url } = await pools({ max: 2 });
    const runner = await runtime(url, { agents: [builtinAgent('echo')] });
    const operator = await runtime(url);
    // Nothing listens to its events, so it reads none: the NOTIFY's hint has it read the flag again.
    const bystander = await runtime(url);
    const frozen = heard(runner, (e) => e.type === 'runtime.frozen');
    await operator.freeze('deploy');
    expect((await frozen).data).toMatchObject({ reason: 'deploy' });
    expect(runner.stats()).toMatchObject({ frozen: true, freeze: { reason: 'deploy' } });
    expect(operator.stats()).toMatchObject({ frozen: true, freeze: { reason: 'deploy' } });
    await vi.waitFor(() => expect(bystander.stats()).toMatchObject({ frozen: true, freeze: { reason: 'deploy' } }));
    // Nothing starts while frozen: a claim after the freeze takes nothing.
    const task = await runner.submit({ agent: 'echo', input: 1 });
    runner.poke();
    expect(await rejection(runner.wait(task.id, { timeoutMs: 300 }))).toMatchObject({ code: 'WAIT_TIMEOUT' });
    expect((await runner.get(task.id)).state).toBe('queued');
    const thawed = heard(runner, (e) => e.type === 'runtime.unfrozen');
    await operator.unfreeze();
    await thawed;
    expect(await runner.wait(task.id)).toMatchObject({ state: 'done' });
    expect(runner.stats()).toMatchObject({ state: 'running', frozen: false, freeze: null, slots: { total: 2 }, agents: { echo: { limit: null } } });
    await vi.waitFor(() => expect(bystander.stats()).toMatchObject({ frozen: false, freeze: null }));
  });

  it('keeps cron schedules for the cluster: create, list, get, pause, resume, delete; a tick submits a task', async () => {
    const { url } = await pools({ max: 2 });
    const rt = await runtime(url, { agents: [builtinAgent('echo')] });
    const created = await rt.schedules.create({ id: 'tick', cron: '* * * * * *', task: { agent: 'echo', input: { from: 'cron' }, labels: { kind: 'cron' } }, overlap: 'allow' });
    expect(created).toMatchObject({ id: 'tick', tz: 'UTC', overlap: 'allow', paused: false, task: { agent: 'echo', input: { from: 'cron' }, labels: { kind: 'cron' } } });
    expect(rt.schedules.list().map((s) => s.id)).toEqual(['tick']);
    const fired = await heard(rt, (e) => e.type === 'schedule.fired' && e.taskId !== undefined);
    expect(await rt.wait(fired.taskId!)).toMatchObject({ state: 'done', output: { from: 'cron' }, labels: { kind: 'cron' } });
    expect(await rejection(rt.schedules.create({ id: 'tick', cron: '* * * * *', task: { agent: 'echo' } }))).toMatchObject({ code: 'INVALID_INPUT', message: expect.stringContaining('exists') });
    expect(await rt.schedules.pause('tick')).toMatchObject({ paused: true });
    expect(rt.schedules.get('tick').paused).toBe(true);
    expect(await rt.schedules.resume('tick')).toMatchObject({ paused: false });
    await rt.schedules.delete('tick');
    expect(rt.schedules.list()).toEqual([]);
    expect(thrown(() => rt.schedules.get('tick'))).toMatchObject({ code: 'NOT_FOUND' });
    expect(await rejection(rt.schedules.delete('tick'))).toMatchObject({ code: 'NOT_FOUND' });
  });

  it("makes a registration's concurrency the cluster's limit, and closes as the LMDB runtime does", async () => {
    const { url, pool } = await pools({ max: 2 });
    const rt = await runtime(url, { threads: 1, slotsPerThread: 4 });
    const agent = rt.agents.register({ name: 'stamp', module: fixtureAgent('stamp'), concurrency: 1 });
    expect(rt.agents.list()).toEqual([agent]);
    // The stamp agent appends its start and end to the file, running `ms` each.
    const file = join(dirs(), 'stamps');
    const tasks = await rt.submitMany(Array.from({ length: 4 }, () => ({ agent: 'stamp', input: { file, ms: 30 } })));
    for (const task of tasks) expect(await rt.wait(task.id)).toMatchObject({ state: 'done' });
    expect((await pool.query("SELECT concurrency FROM troupe_agents WHERE name = 'stamp'")).rows).toEqual([{ concurrency: 1 }]);
    // Four slots, one at a time: from the agent's own stamps.
    const stamps = [...readStamps(file).values()];
    expect(stamps).toHaveLength(4);
    expect(mostAtOnce(stamps.map((s) => [s.start, s.end!] as const))).toBe(1);

    const closing = rt.close({ timeoutMs: 1_000 });
    expect(rt.close()).toBe(closing);
    await closing;
    expect(rt.state).toBe('closed');
    expect(rt.stats().state).toBe('closed');
  });
});
