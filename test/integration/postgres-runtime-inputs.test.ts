/**
 * Inputs across a PostgreSQL cluster (schema version 15): an input sent from one runtime reaches
 * the agent parked on another; a key sends once (one row); nothing is written for a refused send;
 * a node that closes (force) or dies (kill -9) while its agent waits leaves the task waiting with
 * no attempt, and an input sent then resumes it with a new run on another runtime, as on LMDB.
 * The shared cases run on both stores in contract-inputs.ts.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import { builtinAgent } from 'troupe';
import { fixtureAgent, rejection, scratchPools } from '../helpers.js';
import { pgRuntimes } from '../pg-runtime.js';
import { nextEvent as next } from './contract.js';
import { submitTasks } from '../../src/store/postgres/queue.js';

const pools = scratchPools();
const runtime = pgRuntimes();
const interactive = { name: 'int', module: fixtureAgent('interactive') };
const CHILD = fileURLToPath(new URL('../../dist/test/fixtures/postgres/runtime-node-child.js', import.meta.url));
const children: ChildProcess[] = [];
afterEach(() => {
  for (const child of children.splice(0)) child.kill('SIGKILL');
});

const row = async (pool: pg.Pool, id: string) =>
  (await pool.query('SELECT state, run, attempts, inbox, delivered, owner_node, attempt_id, waiting_for FROM troupe_tasks WHERE id = $1', [id])).rows[0] as Record<string, unknown>;
const items = async (pool: pg.Pool, id: string) => (await pool.query('SELECT seq, message, idempotency_key FROM troupe_inbox WHERE task_id = $1 ORDER BY seq', [id])).rows;

/** A runtime in a child process running the interactive agent; resolves once it is ready. */
function startChild(url: string): Promise<ChildProcess> {
  const child = spawn(process.execPath, [CHILD, url, 'int', fixtureAgent('interactive').href, '2'], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve, reject) => {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      if (line.startsWith('ready ')) resolve(child);
    });
    child.once('exit', (code) => reject(new Error(`child exited ${code} before it was ready: ${stderr}`)));
  });
}

describe('inputs on PostgreSQL', () => {
  it('an input sent from a second runtime reaches the agent parked on the first; a key is stored once', async () => {
    const { url, pool } = await pools({ max: 2 });
    const runner = await runtime(url, { agents: [interactive] });
    const sender = await runtime(url);
    const task = await runner.submit({ agent: 'int', input: { mode: 'ask', prompt: 'ship it?' } });
    await next(sender, 'task.waiting', task.id);
    expect(await sender.get(task.id)).toMatchObject({ state: 'waiting', waitingFor: { kind: 'input', prompt: 'ship it?' } });
    expect(await row(pool, task.id)).toMatchObject({ state: 'waiting', owner_node: expect.any(String), inbox: 0, delivered: 0 });
    const sends = await Promise.all([1, 2, 3].map(() => sender.sendInput(task.id, { message: 'yes', idempotencyKey: 'answer' })));
    for (const sent of sends) expect(sent).toEqual(sends[0]);
    expect(sends[0]).toMatchObject({ taskId: task.id, seq: 1, message: 'yes', idempotencyKey: 'answer', delivered: true });
    expect(await sender.wait(task.id)).toMatchObject({ state: 'done', attempts: 1, runs: 1, output: { answer: 'yes', run: `${task.id}:1` } });
    expect(await items(pool, task.id)).toEqual([{ seq: 1, message: 'yes', idempotency_key: 'answer' }]);
    expect(await row(pool, task.id)).toMatchObject({ state: 'done', inbox: 1, delivered: 1, waiting_for: null });
    // Another key is another input, and a settled task takes none.
    expect(await rejection(sender.sendInput(task.id, { message: 'more', idempotencyKey: 'other' }))).toMatchObject({ code: 'ILLEGAL_TRANSITION' });
    expect(await items(pool, task.id)).toHaveLength(1);
  });

  it('writes nothing for a refused send: unknown or settled task, bad input, a message jsonb cannot hold', async () => {
    const { url, pool } = await pools({ max: 2 });
    const rt = await runtime(url, { agents: [interactive, builtinAgent('echo')] });
    await rt.freeze();
    const queued = await rt.submit({ agent: 'int', input: { mode: 'ask' } });
    const before = (await pool.query('SELECT count(*)::int AS n FROM troupe_event_batches')).rows[0].n as number;
    for (const [send, code] of [
      [() => rt.sendInput('nope', { message: 1 }), 'NOT_FOUND'],
      [() => rt.sendInput('no\u0000pe', { message: 1 }), 'NOT_FOUND'],
      [() => rt.sendInput(queued.id, { message: new Date() }), 'INVALID_INPUT'],
      [() => rt.sendInput(queued.id, { message: 'a\u0000b' }), 'INVALID_INPUT'],
      [() => rt.sendInput(queued.id, { message: 1n }), 'INVALID_INPUT'],
      [() => rt.sendInput(queued.id, { message: 1, idempotencyKey: 7 } as never), 'INVALID_INPUT'],
      [() => rt.sendInput('', { message: 1 }), 'INVALID_INPUT'],
    ] as const) {
      expect(await rejection(send()), code).toMatchObject({ code });
    }
    expect(await items(pool, queued.id)).toEqual([]);
    expect(await row(pool, queued.id)).toMatchObject({ state: 'queued', inbox: 0, delivered: 0 });
    expect((await pool.query('SELECT count(*)::int AS n FROM troupe_event_batches')).rows[0].n).toBe(before);
    await rt.cancel(queued.id);
  });

  it('a node closed (force) while its agent waits leaves the task waiting; an input resumes it on another runtime', async () => {
    const { url, pool } = await pools({ max: 2 });
    const first = await runtime(url, { agents: [interactive] });
    const task = await first.submit({ agent: 'int', input: { mode: 'ask', prompt: 'continue?' } });
    await next(first, 'task.waiting', task.id);
    const second = await runtime(url, { agents: [interactive] });
    const detached = next(second, 'task.waiting', task.id, (event) => (event.data as { detached?: boolean }).detached === true);
    await first.close({ force: true });
    expect((await detached).data).toMatchObject({ run: 1, attempt: 1, exit: 'interrupted', reason: 'interrupted', for: 'input', detached: true });
    expect(await second.get(task.id)).toMatchObject({ state: 'waiting', runs: 1, attempts: 0, waitingFor: { kind: 'input', prompt: 'continue?' } });
    expect(await row(pool, task.id)).toMatchObject({ owner_node: null, attempt_id: null });
    const resumed = next(second, 'task.queued', task.id);
    expect(await second.sendInput(task.id, { message: 'go on', idempotencyKey: 'k' })).toMatchObject({ seq: 1, delivered: false });
    expect((await resumed).data).toEqual({ run: 2, reason: 'resume' });
    expect(await second.wait(task.id)).toMatchObject({ state: 'done', runs: 2, attempts: 1, output: { answer: 'go on', run: `${task.id}:2` } });
  });

  it('an input delivered to an attempt that is stopping is given back at its end: the next attempt receives it', async () => {
    const { url, pool } = await pools({ max: 2 });
    const rt = await runtime(url, { agents: [interactive], cancelGraceMs: 10_000 });
    const task = await rt.submit({ agent: 'int', input: { mode: 'slowAbortAsk', holdMs: 2_000 }, timeoutMs: 300, retry: { maxAttempts: 2, delayMs: 0 } });
    // Attempt 1 waits, its timeout aborts it, and it takes holdMs to stop: the input comes meanwhile
    // (its line is stored while its task is still waiting).
    for await (const line of rt.logs(task.id, { follow: true })) if (line.message === 'aborted') break;
    // In the database the input reached the waiting attempt; its node, stopping it, does not hand it over.
    expect(await rt.sendInput(task.id, { message: 'the answer' })).toMatchObject({ seq: 1 });
    expect(await rt.wait(task.id)).toMatchObject({ state: 'done', runs: 1, attempts: 2, output: { answer: 'the answer', attempt: 2 } });
    expect(await row(pool, task.id)).toMatchObject({ inbox: 1, delivered: 1 });
  });

  it('a waiting task with no attempt is cancelled at once', async () => {
    const { url } = await pools({ max: 2 });
    const first = await runtime(url, { agents: [interactive] });
    const task = await first.submit({ agent: 'int', input: { mode: 'ask' } });
    await next(first, 'task.waiting', task.id);
    await first.close({ force: true });
    const second = await runtime(url);
    const cancelled = next(second, 'task.cancelled', task.id);
    expect(await second.cancel(task.id, 'nobody answered')).toMatchObject({ state: 'cancelled', reason: 'nobody answered' });
    expect((await cancelled).data).toEqual({ run: 1, reason: 'nobody answered', from: 'waiting' });
  });

  it('a node killed (-9) while its agent waits: the sweeper detaches its attempt, and an input resumes the task with a new run that another runtime claims', async () => {
    const { url, pool } = await pools({ max: 2 });
    const observer = await runtime(url);
    const child = await startChild(url);
    const [submitted] = await submitTasks(pool, [{ id: `kill-${Date.now()}`, agent: 'int', input: { mode: 'chat', count: 2 }, maxAttempts: 3 }]);
    const id = submitted!.id;
    await next(observer, 'task.waiting', id);
    const detached = next(observer, 'task.waiting', id, (event) => (event.data as { detached?: boolean }).detached === true);
    child.kill('SIGKILL');
    expect((await detached).data).toMatchObject({ run: 1, attempt: 1, exit: 'interrupted', reason: 'process_crashed', for: 'input', detached: true });
    expect(await row(pool, id)).toMatchObject({ state: 'waiting', run: 1, attempts: 0, owner_node: null });
    expect((await pool.query("SELECT exit FROM troupe_attempts WHERE task_id = $1", [id])).rows).toEqual([{ exit: 'interrupted' }]);
    // Nobody runs the agent now: the input resumes the task with a new run, queued until a runtime that runs it claims it.
    expect(await observer.sendInput(id, { message: 'first' })).toMatchObject({ seq: 1, delivered: false });
    expect(await observer.sendInput(id, { message: 'second' })).toMatchObject({ seq: 2, delivered: false });
    expect(await observer.get(id)).toMatchObject({ state: 'queued', runs: 2 });
    const runner = await runtime(url, { agents: [interactive] });
    expect(await runner.wait(id)).toMatchObject({ state: 'done', runs: 2, attempts: 1, output: { got: ['first', 'second'], run: `${id}:2` } });
    expect((await pool.query('SELECT count(*)::int AS n FROM troupe_nodes')).rows[0].n).toBe(2);
  });
});
