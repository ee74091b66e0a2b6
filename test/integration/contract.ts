/**
 * The contract of the public API (src/api/runtime.ts), written once and run unchanged against
 * each store: `contract-lmdb.test.ts` and `contract-postgres.test.ts` call {@link contractSuite}
 * with a backend that opens runtimes on a fresh store. It covers every call both stores support;
 * what PostgreSQL refuses (UNSUPPORTED_STORE, INVALID_OPTIONS: README, "Running on many
 * machines") is left to each store's own tests. Bad input must fail with the same TroupeError
 * code on both. Nothing here sleeps: tests wait for events and `wait()` results, and assert
 * states, counts and orders, never speed.
 *
 * Known differences, left out of the shared assertions (see the README):
 * - a schedule shows its `task` with the resolved priority and attempt budget on PostgreSQL;
 * - task input with Dates, Uint8Arrays or BigInts is stored on LMDB and refused on PostgreSQL;
 * - `wait()` checks its `signal` and options object on PostgreSQL only;
 * - `heldBy` (why a queued task is held back: frozen, rate, …) is shown on LMDB only;
 * - `logs()` of an unknown task throws NOT_FOUND when called on LMDB, and rejects the first
 *   `next()` on PostgreSQL (it must read first): the bad-input test takes either.
 */
import { once } from 'node:events';
import { readFileSync, watch, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { builtinAgent, TroupeError, type EventType, type LogLine, type LogOptions, type Runtime, type RuntimeEvent, type RuntimeOptions, type Task } from 'troupe';
import { fixtureAgent, rejection, scratchDirs } from '../helpers.js';
import { thrown } from '../pg-runtime.js';
import { badInput, badOptions } from './contract-bad-input.js';

/** What the suite is given: a way to open runtimes of one store. */
export interface ContractBackend {
  /**
   * Opens a runtime on a fresh, empty store of this backend with `options`; the backend closes it
   * after the test (a runtime the test closed itself closes again at once).
   */
  open(options?: ContractOptions): Promise<Runtime>;
  /**
   * Opens a runtime on a fresh, empty store of this backend with `options`, which the caller closes
   * with `close()` (that also removes its store): see {@link sharedRuntime}.
   */
  openKept(options?: ContractOptions): Promise<{ rt: Runtime; close(): Promise<void> }>;
}

/** The options the suite gives a runtime: both stores take them. */
export type ContractOptions = Pick<RuntimeOptions, 'agents' | 'cancelGraceMs' | 'metricsPort' | 'threads' | 'slotsPerThread' | 'prefetch' | 'logger' | 'maxQueued' | 'clock'>;

/**
 * One runtime for every test of the calling `describe` block (call at its top level): opened
 * before its first test, closed after its last. Each store opened costs a PostgreSQL database and
 * its migration, so tests that need no store of their own (they wait for their own tasks by id)
 * share one. The getter throws outside the block's tests.
 */
export function sharedRuntime(backend: ContractBackend, options: ContractOptions): () => Runtime {
  let kept: { rt: Runtime; close(): Promise<void> } | undefined;
  beforeAll(async () => {
    kept = await backend.openKept(options);
  });
  afterAll(async () => {
    await kept?.close();
    kept = undefined;
  });
  return () => {
    if (!kept) throw new Error('sharedRuntime: no runtime outside the tests of its describe block');
    return kept.rt;
  };
}

/** The events that settle a run: each run has exactly one. */
const SETTLING: ReadonlySet<EventType> = new Set<EventType>(['task.done', 'task.failed', 'task.dropped', 'task.cancelled']);

/** The fail agent (README, "Error codes"), retried quickly: three attempts unless a task says otherwise. */
const failAgent = builtinAgent('fail', { retry: { maxAttempts: 3, backoff: 'fixed', delayMs: 1 } });
const echoAgent = builtinAgent('echo');
/** Writes log lines in each attempt (test/fixtures/agents/logging.agent.ts), retried at once. */
const loggingAgent = { name: 'logging', module: fixtureAgent('logging'), retry: { maxAttempts: 2, backoff: 'fixed' as const, delayMs: 1 } };

/**
 * The fields of a Task in each state, on both stores. Every done task has a `result`; a failed one
 * has one when its agent returned `{ kind: 'fail' }`, not when it threw.
 */
const BASE = ['agent', 'attempts', 'createdAt', 'id', 'input', 'instanceKey', 'labels', 'lane', 'priority', 'queuedAt', 'retry', 'runs', 'state', 'timeoutMs', 'updatedAt'];
const FIELDS = {
  queued: BASE,
  done: [...BASE, 'output', 'result', 'settledAt', 'startedAt'].sort(),
  failed: [...BASE, 'error', 'settledAt', 'startedAt'].sort(),
  failedWithResult: [...BASE, 'error', 'result', 'settledAt', 'startedAt'].sort(),
  dropped: [...BASE, 'error', 'reason', 'settledAt', 'startedAt'].sort(),
  cancelledQueued: [...BASE, 'reason', 'settledAt'].sort(),
  cancelledRunning: [...BASE, 'error', 'reason', 'settledAt', 'startedAt'].sort(),
};

/** A task's fields, sorted, without `idempotencyKey` (given or not by the test). */
function fields(task: Task): string[] {
  return Object.keys(task)
    .filter((k) => k !== 'idempotencyKey')
    .sort();
}

/** The run an event of a task names. */
function runOf(event: RuntimeEvent): number | undefined {
  return (event.data as { run?: number }).run;
}

/** Resolves with the first event `rt.on('*')` hears that `test` accepts (listen before acting). */
export function heard(rt: Runtime, test: (event: RuntimeEvent) => boolean): Promise<RuntimeEvent> {
  return new Promise((resolve) => {
    const off = rt.on('*', (event) => {
      if (!test(event)) return;
      off();
      resolve(event);
    });
  });
}

/** The next event of `type` for `taskId` that `test` accepts (listen before acting). */
export function nextEvent(rt: Runtime, type: string, taskId: string, test: (event: RuntimeEvent) => boolean = () => true): Promise<RuntimeEvent> {
  return heard(rt, (event) => event.type === type && event.taskId === taskId && test(event));
}

/** Resolves once `file` holds `text`: watched for changes, not polled. */
async function fileHolds(file: string, text: string): Promise<void> {
  const watcher = watch(file);
  try {
    const changed = once(watcher, 'change');
    if (readFileSync(file, 'utf8').includes(text)) return;
    await changed;
    return await fileHolds(file, text);
  } finally {
    watcher.close();
  }
}

/** Reads `rt.events(options)` until `done(events so far)` holds, then stops. */
export async function readEvents(rt: Runtime, options: Parameters<Runtime['events']>[0], done: (events: readonly RuntimeEvent[]) => boolean): Promise<RuntimeEvent[]> {
  const stop = new AbortController();
  const seen: RuntimeEvent[] = [];
  for await (const event of rt.events({ ...options, signal: stop.signal })) {
    seen.push(event);
    if (done(seen)) stop.abort();
  }
  return seen;
}

/** Every line `rt.logs(id, options)` yields, until it ends. */
export async function readLines(rt: Runtime, id: string, options?: LogOptions): Promise<LogLine[]> {
  const lines: LogLine[] = [];
  for await (const line of rt.logs(id, options)) lines.push(line);
  return lines;
}

/** A task's events, from its submit to its `runs`-th settling event. */
export function history(rt: Runtime, taskId: string, runs = 1): Promise<RuntimeEvent[]> {
  return readEvents(rt, { taskId }, (seen) => seen.filter((e) => SETTLING.has(e.type)).length === runs);
}

/** Registers the contract's tests against `backend` under `name`. */
export function contractSuite(name: string, backend: ContractBackend): void {
  describe(`the public API on ${name}`, () => {
    const dirs = scratchDirs();

    it('registers and lists agents; a bad registration throws INVALID_OPTIONS and changes nothing; an agent registered after start runs', async () => {
      const rt = await backend.open();
      expect(rt.agents.list()).toEqual([]);
      const first = rt.agents.register(echoAgent);
      expect(first).toMatchObject({ name: 'echo' });
      expect(rt.agents.list()).toEqual([first]);
      const replaced = rt.agents.register(builtinAgent('echo', { timeoutMs: 5_000 }));
      expect(rt.agents.list()).toEqual([replaced]);
      expect(replaced.timeoutMs).toBe(5_000);
      const bad = [{ name: 'bad name', module: echoAgent.module }, { name: 'rel', module: './relative.js' }, { name: 'gone', module: '/not/here.agent.js' }, { ...echoAgent, concurrency: 0 }, { ...echoAgent, retry: { maxAttempts: -1 } }, { ...echoAgent, color: 'red' }, null];
      for (const registration of bad) expect(thrown(() => rt.agents.register(registration as never)), JSON.stringify(registration)).toMatchObject({ code: 'INVALID_OPTIONS' });
      expect(rt.agents.list()).toEqual([replaced]);
      const task = await rt.submit({ agent: 'echo', input: 'hi' });
      expect(await rt.wait(task.id)).toMatchObject({ state: 'done', output: 'hi', timeoutMs: 5_000 });
    });

    it('submits a queued task; wait and get return it settled, with the same fields on both stores; a settled task resolves wait at once', async () => {
      const rt = await backend.open({ agents: [echoAgent] });
      // Frozen, so that get() below still finds it queued.
      await rt.freeze();
      const task = await rt.submit({ agent: 'echo', input: { n: 1 }, labels: { team: 'red' }, priority: 2 });
      expect(task).toMatchObject({ agent: 'echo', state: 'queued', input: { n: 1 }, labels: { team: 'red' }, priority: 2, attempts: 0, runs: 1, lane: 'default' });
      expect(fields(task)).toEqual(FIELDS.queued);
      // `heldBy` aside: LMDB shows `{ kind: 'frozen' }`, PostgreSQL no hold (see the module comment).
      const { heldBy: _held, ...got } = await rt.get(task.id);
      expect(got).toEqual(task);
      await rt.unfreeze();
      const done = await rt.wait(task.id);
      expect(done).toMatchObject({ id: task.id, state: 'done', output: { n: 1 }, result: { kind: 'success' }, attempts: 1, runs: 1, createdAt: task.createdAt });
      expect(fields(done)).toEqual(FIELDS.done);
      expect(done.startedAt).toBeGreaterThanOrEqual(done.createdAt);
      expect(done.settledAt).toBeGreaterThanOrEqual(done.startedAt!);
      expect(await rt.get(task.id)).toEqual(done);
      expect(await rt.wait(task.id)).toEqual(done);
      // A settled task resolves wait() whatever its timeout (many times: a timer armed before the read only loses some races).
      for (let i = 0; i < 30; i++) expect(await rt.wait(task.id, { timeoutMs: 0 })).toEqual(done);
      // Not frozen: submit and submitMany resolve with the tasks as committed, queued, however fast an agent takes them.
      for (let i = 0; i < 5; i++) {
        const [one, ...many] = [await rt.submit({ agent: 'echo', input: i }), ...(await rt.submitMany([{ agent: 'echo' }, { agent: 'echo' }]))];
        for (const t of [one!, ...many]) expect(t).toMatchObject({ state: 'queued', attempts: 0 });
        for (const t of [one!, ...many]) await rt.wait(t.id);
      }
    });

    it('submitMany stores all specs in order, or none when one is bad; an idempotency key returns the first task', async () => {
      const rt = await backend.open({ agents: [echoAgent] });
      expect(await rt.submitMany([])).toEqual([]);
      for (const [specs, code, where] of [
        [[{ agent: 'echo', input: 1 }, { agent: 'echo', input: () => 1 }], 'INVALID_INPUT', 'tasks[1]'],
        [[{ agent: 'echo', input: 1 }, { agent: 'nope' }], 'UNKNOWN_AGENT', 'tasks[1]'],
        [[{ agent: 'echo', idempotencyKey: 'k' }, { agent: 'echo', priority: 0.5 }], 'INVALID_INPUT', 'tasks[1].priority'],
      ] as const) {
        expect(await rejection(rt.submitMany(specs as never))).toMatchObject({ code, message: expect.stringContaining(where) });
      }
      expect((await rt.list()).tasks).toEqual([]);

      const batch = await rt.submitMany([{ agent: 'echo', input: 'a' }, { agent: 'echo', input: 'b', idempotencyKey: 'pr-1' }, { agent: 'echo', input: 'c' }]);
      expect(batch.map((t) => [t.input, t.runs])).toEqual([['a', 1], ['b', 1], ['c', 1]]);
      expect(batch[1]!.idempotencyKey).toBe('pr-1');
      const first = await rt.wait(batch[1]!.id);
      // The key is taken while the task exists: a second submit (alone or in a batch) returns the first task.
      const again = await rt.submit({ agent: 'echo', input: 'other', idempotencyKey: 'pr-1' });
      expect(again).toMatchObject({ id: first.id, input: 'b', state: 'done' });
      const mixed = await rt.submitMany([{ agent: 'echo', input: 'd' }, { agent: 'echo', input: 'e', idempotencyKey: 'pr-1' }]);
      expect(mixed[1]).toMatchObject({ id: first.id, input: 'b' });
      expect((await rt.list()).tasks.map((t) => t.input)).toEqual(['a', 'b', 'c', 'd']);
      // Two specs of one batch with one key: the second is the first's task.
      const twice = await rt.submitMany([{ agent: 'echo', input: 'f', idempotencyKey: 'k' }, { agent: 'echo', input: 'g', idempotencyKey: 'k' }]);
      expect(twice[1]).toMatchObject({ id: twice[0]!.id, input: 'f' });
      for (const t of [...mixed, twice[0]!]) await rt.wait(t.id);
    });

    it('gets and waits: NOT_FOUND for an unknown id, INVALID_INPUT for a bad one, WAIT_TIMEOUT, an aborted wait, and a wait that sees its task settle', async () => {
      const rt = await backend.open({ agents: [echoAgent] });
      for (const call of [() => rt.get('01NOSUCHTASK'), () => rt.wait('01NOSUCHTASK')]) expect(await rejection(call())).toMatchObject({ code: 'NOT_FOUND' });
      for (const id of ['', 5, undefined, 'x'.repeat(10_000)]) {
        expect(await rejection(rt.get(id as never))).toMatchObject({ code: 'INVALID_INPUT' });
        expect(await rejection(rt.wait(id as never))).toMatchObject({ code: 'INVALID_INPUT' });
      }
      const later = await rt.submit({ agent: 'echo', delayMs: 600_000 });
      expect(later.runAt).toBeGreaterThan(later.createdAt);
      const timedOut = await rejection(rt.wait(later.id, { timeoutMs: 20 }));
      expect(timedOut).toBeInstanceOf(TroupeError);
      expect(timedOut).toMatchObject({ code: 'WAIT_TIMEOUT', retryable: true });
      const abort = new AbortController();
      const aborted = rt.wait(later.id, { signal: abort.signal });
      abort.abort(new Error('gave up'));
      expect(await rejection(aborted)).toMatchObject({ message: 'gave up' });
      // A wait pending when the task settles resolves with it (here: a cancel).
      const pending = rt.wait(later.id);
      const cancelled = await rt.cancel(later.id);
      expect(await pending).toEqual(cancelled);
    });

    it('lists in submit order, filtered by state and agent, in pages', async () => {
      const rt = await backend.open({ agents: [echoAgent, failAgent] });
      const echoes = await rt.submitMany(['a', 'b', 'c', 'd', 'e'].map((input) => ({ agent: 'echo', input })));
      const fails = await rt.submitMany([{ agent: 'fail', input: { mode: 'fatal' } }, { agent: 'fail', input: { mode: 'result' } }]);
      for (const t of [...echoes, ...fails]) await rt.wait(t.id);
      const ids = (tasks: readonly Task[]) => tasks.map((t) => t.id);
      expect(ids((await rt.list()).tasks)).toEqual(ids([...echoes, ...fails]));
      const pages: string[][] = [];
      let after: string | undefined;
      for (;;) {
        const page = await rt.list({ state: 'done', limit: 2, ...(after === undefined ? {} : { after }) });
        pages.push(ids(page.tasks));
        if (page.next === null) break;
        after = page.next;
      }
      expect(pages.flat()).toEqual(ids(echoes));
      expect(pages.slice(0, 2)).toEqual([ids(echoes.slice(0, 2)), ids(echoes.slice(2, 4))]);
      expect(ids((await rt.list({ agent: 'fail' })).tasks)).toEqual(ids(fails));
      expect(ids((await rt.list({ state: 'failed', agent: 'fail', limit: 1 })).tasks)).toEqual(ids(fails.slice(0, 1)));
      expect(await rt.list({ state: 'failed', agent: 'echo' })).toEqual({ tasks: [], next: null });
      expect(await rt.list({ state: 'queued' })).toEqual({ tasks: [], next: null });
      expect((await rt.list({ after: fails[1]!.id })).tasks).toEqual([]);
    });

    it('retries per retry.maxAttempts, with the same Task and events on both stores', async () => {
      const rt = await backend.open({ agents: [failAgent] });
      const [twice, agentBudget, recovers, fatal, result] = await rt.submitMany([
        { agent: 'fail', input: { mode: 'throw' }, retry: { maxAttempts: 2 } },
        { agent: 'fail', input: { mode: 'throw' } },
        { agent: 'fail', input: { succeedOnAttempt: 2 } },
        { agent: 'fail', input: { mode: 'fatal' } },
        { agent: 'fail', input: { mode: 'result' } },
      ]);
      // The last error's stack stays with RETRY_EXHAUSTED, for operators.
      const agentError = { code: 'RETRY_EXHAUSTED', retryable: false, fault: 'agent', message: expect.stringContaining('AGENT_ERROR'), stack: expect.stringMatching(/^Error: failing on purpose\n\s+at /) };
      const dropped = await rt.wait(twice!.id);
      expect(dropped).toMatchObject({ state: 'dropped', attempts: 2, runs: 1, reason: 'retry_exhausted', retry: { maxAttempts: 2 }, error: agentError });
      expect(fields(dropped)).toEqual(FIELDS.dropped);
      expect(await rt.wait(agentBudget!.id)).toMatchObject({ state: 'dropped', attempts: 3, runs: 1, retry: { maxAttempts: 3 }, error: agentError });
      expect(await rt.wait(recovers!.id)).toMatchObject({ state: 'done', attempts: 2, runs: 1, output: { recoveredOnAttempt: 2 } });
      const failed = await rt.wait(fatal!.id);
      expect(failed).toMatchObject({ state: 'failed', attempts: 1, runs: 1, error: { code: 'FATAL', retryable: false, fault: 'agent', message: 'failing on purpose', stack: expect.stringMatching(/^AgentError: failing on purpose\n\s+at /) } });
      expect(fields(failed)).toEqual(FIELDS.failed);
      const failedResult = await rt.wait(result!.id);
      expect(failedResult).toMatchObject({ state: 'failed', attempts: 1, result: { kind: 'fail', summary: 'failing on purpose' }, error: { code: 'AGENT_FAILED', retryable: false, fault: 'agent' } });
      expect(fields(failedResult)).toEqual(FIELDS.failedWithResult);
      expect(failedResult.error).not.toHaveProperty('stack');

      const events = await history(rt, twice!.id);
      expect(events.map((e) => [e.type, (e.data as { attempt?: number }).attempt])).toEqual([
        ['task.queued', undefined],
        ['task.started', 1],
        ['task.retrying', 1],
        ['task.started', 2],
        ['task.dropped', 2],
      ]);
      expect(events[2]!.data).toMatchObject({ run: 1, exit: 'error', error: { code: 'AGENT_ERROR', retryable: true } });
      expect(events[4]!.data).toMatchObject({ run: 1, exit: 'error', reason: 'retry_exhausted', error: { code: 'RETRY_EXHAUSTED', stack: dropped.error!.stack } });
      expect((await history(rt, recovers!.id)).map((e) => e.type)).toEqual(['task.queued', 'task.started', 'task.retrying', 'task.started', 'task.done']);
    });

    it('keeps the result an agent returned (kind, summary, branch, rev) apart from its output, in get, list and wait; a retry clears it', async () => {
      const rt = await backend.open({ agents: [{ name: 'result', module: fixtureAgent('result') }] });
      const [success, bare, fork, fail] = await rt.submitMany([
        { agent: 'result', input: { kind: 'success', summary: 'all good', output: { n: 1 } } },
        { agent: 'result', input: { kind: 'success' } },
        { agent: 'result', input: { kind: 'fork', summary: 'forked', branch: 'fix/1', rev: 'c0ffee', output: 'patch' } },
        { agent: 'result', input: { kind: 'fail', summary: 'tests fail', branch: 'fix/2', rev: 'bad' } },
      ]);
      const settled = [await rt.wait(success!.id), await rt.wait(bare!.id), await rt.wait(fork!.id), await rt.wait(fail!.id)];
      expect(settled.map((t) => [t.state, t.result, t.output])).toEqual([
        ['done', { kind: 'success', summary: 'all good' }, { n: 1 }],
        ['done', { kind: 'success' }, undefined],
        ['done', { kind: 'fork', summary: 'forked', branch: 'fix/1', rev: 'c0ffee' }, 'patch'],
        ['failed', { kind: 'fail', summary: 'tests fail', branch: 'fix/2', rev: 'bad' }, undefined],
      ]);
      expect(settled.map(fields)).toEqual([FIELDS.done, FIELDS.done.filter((f) => f !== 'output'), FIELDS.done, FIELDS.failedWithResult]);
      expect(settled[3]!.error).toEqual({ code: 'AGENT_FAILED', message: 'tests fail', retryable: false, fault: 'agent' });
      for (const task of settled) expect(await rt.get(task.id)).toEqual(task);
      expect((await rt.list()).tasks).toEqual(settled);
      const done = await history(rt, fork!.id);
      expect(done[2]).toMatchObject({ type: 'task.done', data: { kind: 'fork', summary: 'forked' } });

      // A new run starts without the last one's result (frozen: get() finds it queued).
      await rt.freeze();
      const again = await rt.retry(fail!.id);
      expect(again).toMatchObject({ state: 'queued', runs: 2 });
      expect(fields(again)).toEqual(FIELDS.queued);
      expect(await rt.get(fail!.id)).not.toHaveProperty('result');
      await rt.unfreeze();
      expect(await rt.wait(fail!.id)).toMatchObject({ state: 'failed', runs: 2, result: { kind: 'fail', summary: 'tests fail' } });
    });

    it('cancels a queued task at once and a running one through ctx.signal; a settled task is ILLEGAL_TRANSITION', async () => {
      const file = join(dirs(), 'aborts');
      writeFileSync(file, '');
      // A long grace: the running attempt ends because its agent heard the abort, not because its thread was ended.
      const rt = await backend.open({ agents: [echoAgent, { name: 'aborted', module: fixtureAgent('aborted') }], cancelGraceMs: 60_000 });
      const queued = await rt.submit({ agent: 'echo', delayMs: 600_000 });
      const cancelled = await rt.cancel(queued.id, 'not needed');
      expect(cancelled).toMatchObject({ id: queued.id, state: 'cancelled', reason: 'not needed', attempts: 0, runs: 1 });
      expect(fields(cancelled)).toEqual(FIELDS.cancelledQueued);
      expect(await rt.cancel(queued.id, 'again')).toMatchObject({ state: 'cancelled', reason: 'not needed' });
      expect((await history(rt, queued.id)).map((e) => [e.type, e.data])).toEqual([
        ['task.queued', expect.objectContaining({ run: 1, agent: 'echo' })],
        ['task.cancelled', { run: 1, reason: 'not needed', from: 'queued' }],
      ]);

      const running = await rt.submit({ agent: 'aborted', input: { file } });
      // Its agent runs: a cancel at `task.started` may still find the attempt waiting for its thread.
      await fileHolds(file, `+ ${running.id} 1`);
      const stopped = await rt.cancel(running.id, 'stop now');
      expect(stopped).toMatchObject({ id: running.id, state: 'cancelled', reason: 'stop now', attempts: 1, runs: 1, error: { code: 'CANCELLED', retryable: false } });
      expect(fields(stopped)).toEqual(FIELDS.cancelledRunning);
      expect(readFileSync(file, 'utf8').trim().split('\n')).toEqual([`+ ${running.id} 1`, `- ${running.id} 1`]);
      const events = await history(rt, running.id);
      expect(events.map((e) => e.type)).toEqual(['task.queued', 'task.started', 'task.cancelled']);
      expect(events[2]!.data).toMatchObject({ run: 1, attempt: 1, exit: 'cancelled', reason: 'stop now' });

      const done = await rt.wait((await rt.submit({ agent: 'echo' })).id);
      expect(await rejection(rt.cancel(done.id))).toMatchObject({ code: 'ILLEGAL_TRANSITION' });
      expect(await rejection(rt.cancel('01NOSUCHTASK'))).toMatchObject({ code: 'NOT_FOUND' });
      expect(await rt.get(done.id)).toEqual(done);
    });

    it('retry() starts a new run of a failed, dropped or cancelled task, and of nothing else', async () => {
      const rt = await backend.open({ agents: [echoAgent, failAgent] });
      const [fatal, throws, recovering] = await rt.submitMany([
        { agent: 'fail', input: { mode: 'fatal' } },
        { agent: 'fail', input: { mode: 'throw' }, retry: { maxAttempts: 1 } },
        { agent: 'fail', input: { mode: 'throw' } },
      ]);
      expect(await rt.wait(fatal!.id)).toMatchObject({ state: 'failed', runs: 1 });
      expect(await rt.wait(throws!.id)).toMatchObject({ state: 'dropped', attempts: 1 });
      await rt.wait(recovering!.id);
      const parked = await rt.submit({ agent: 'echo', input: 'parked', delayMs: 600_000 });
      await rt.cancel(parked.id);
      // Frozen, so that the events below come in a known order.
      await rt.freeze();
      const again = await rt.retry(fatal!.id);
      expect(again).toMatchObject({ id: fatal!.id, state: 'queued', runs: 2, attempts: 0 });
      expect(fields(again)).toEqual(FIELDS.queued);
      expect(await rt.retry(throws!.id)).toMatchObject({ state: 'queued', runs: 2, attempts: 0 });
      expect(await rt.retry(parked.id)).toMatchObject({ state: 'queued', runs: 2, attempts: 0 });
      await rt.unfreeze();
      expect(await rt.wait(fatal!.id)).toMatchObject({ state: 'failed', runs: 2, attempts: 1, error: { code: 'FATAL' } });
      const events = await history(rt, fatal!.id, 2);
      expect(events.map((e) => [e.type, runOf(e)])).toEqual([
        ['task.queued', 1],
        ['task.started', 1],
        ['task.failed', 1],
        ['task.queued', 2],
        ['task.started', 2],
        ['task.failed', 2],
      ]);
      expect(events[3]!.data).toMatchObject({ reason: 'retry', from: 'failed' });

      expect(await rt.wait(throws!.id)).toMatchObject({ state: 'dropped', runs: 2, attempts: 1, error: { code: 'RETRY_EXHAUSTED' } });
      expect(await rt.wait(parked.id)).toMatchObject({ state: 'done', runs: 2, attempts: 1, output: 'parked' });

      expect(await rejection(rt.retry(parked.id))).toMatchObject({ code: 'ILLEGAL_TRANSITION' });
      const queued = await rt.submit({ agent: 'echo', delayMs: 600_000 });
      expect(await rejection(rt.retry(queued.id))).toMatchObject({ code: 'ILLEGAL_TRANSITION' });
      expect(await rejection(rt.retry('01NOSUCHTASK'))).toMatchObject({ code: 'NOT_FOUND' });
      expect(await rt.get(queued.id)).toMatchObject({ state: 'queued', runs: 1 });
      // Not frozen: retry resolves with the task as the retry committed it, queued.
      expect(await rt.retry(fatal!.id)).toMatchObject({ id: fatal!.id, state: 'queued', runs: 3, attempts: 0 });
      expect(await rt.wait(fatal!.id)).toMatchObject({ state: 'failed', runs: 3 });
    });

    it('streams events: a replay then live, with no gap and no duplicate; after a cursor or a seq; by task and type; one settling event per run', async () => {
      const rt = await backend.open({ agents: [echoAgent, failAgent] });
      const a = await rt.submit({ agent: 'echo', input: 'a' });
      await rt.wait(a.id);
      // Readers of the whole log: the first replays a's events, then reads live. Each event a
      // listener hears while a burst of tasks runs starts another, whose replay reads while events
      // commit, so some reach it both by its replay and live: each must come once. Then b, c and
      // b again. Every reader must read the same log.
      const readers: Array<Promise<RuntimeEvent[]>> = [];
      const startReader = () => readers.push(readEvents(rt, {}, (seen) => seen.filter((e) => SETTLING.has(e.type)).length === 24));
      startReader();
      const stopStarting = rt.on('*', () => void (readers.length < 12 && startReader()));
      const burst = await rt.submitMany(Array.from({ length: 20 }, (_, i) => ({ agent: 'echo', input: i })));
      for (const t of burst) await rt.wait(t.id);
      stopStarting();
      const b = await rt.submit({ agent: 'fail', input: { mode: 'fatal' } });
      await rt.wait(b.id);
      const c = await rt.submit({ agent: 'fail', input: { mode: 'throw' }, retry: { maxAttempts: 2 } });
      await rt.wait(c.id);
      await rt.retry(b.id);
      await rt.wait(b.id);
      const [live, ...others] = await Promise.all(readers);
      expect(others).toHaveLength(11);
      for (const other of others) expect(other).toEqual(live);

      const byTask = (id: string) => live.filter((e) => e.taskId === id).map((e) => e.type);
      expect(byTask(a.id)).toEqual(['task.queued', 'task.started', 'task.done']);
      expect(byTask(b.id)).toEqual(['task.queued', 'task.started', 'task.failed', 'task.queued', 'task.started', 'task.failed']);
      expect(byTask(c.id)).toEqual(['task.queued', 'task.started', 'task.retrying', 'task.started', 'task.dropped']);
      for (const t of burst) expect(byTask(t.id)).toEqual(['task.queued', 'task.started', 'task.done']);
      expect(live).toHaveLength(14 + 3 * burst.length);
      const cursors = live.map((e) => e.cursor);
      expect([...cursors].sort()).toEqual(cursors);
      expect(new Set(cursors).size).toBe(live.length);
      expect(new Set(live.map((e) => e.seq)).size).toBe(live.length);
      const settles = live.filter((e) => SETTLING.has(e.type)).map((e) => `${e.taskId}/${runOf(e)}`);
      expect(settles.sort()).toEqual([a, b, c, ...burst].map((t) => `${t.id}/1`).concat(`${b.id}/2`).sort());

      // The same log read again from its start, after a cursor, after a seq, by task and by type.
      expect(await readEvents(rt, {}, (seen) => seen.length === live.length)).toEqual(live);
      expect(await readEvents(rt, { after: live[4]!.cursor }, (seen) => seen.length === live.length - 5)).toEqual(live.slice(5));
      expect(await readEvents(rt, { after: live[4]!.seq }, (seen) => seen.length === live.length - 5)).toEqual(live.slice(5));
      expect(await readEvents(rt, { taskId: c.id }, (seen) => seen.length === 5)).toEqual(live.filter((e) => e.taskId === c.id));
      const failures = live.filter((e) => e.type === 'task.failed' || e.type === 'task.dropped');
      expect(await readEvents(rt, { types: ['task.failed', 'task.dropped'] }, (seen) => seen.length === failures.length)).toEqual(failures);
      // Live after a cursor: nothing before it, then what comes next.
      const tail = readEvents(rt, { after: live[live.length - 1]!.cursor }, (seen) => seen.some((e) => e.type === 'task.done'));
      const d = await rt.submit({ agent: 'echo', input: 'd' });
      expect((await tail).map((e) => [e.type, e.taskId])).toEqual([
        ['task.queued', d.id],
        ['task.started', d.id],
        ['task.done', d.id],
      ]);
    });

    it('logs: the lines an agent wrote across a retry, in order, after a cursor; a follow started before any line goes live and ends as the task settles', async () => {
      const rt = await backend.open({ agents: [loggingAgent, echoAgent] });
      // Frozen, so that the follows below start before the agent writes anything.
      await rt.freeze();
      const task = await rt.submit({ agent: 'logging', input: { lines: 300, failAttempts: 1 } });
      const followed = readLines(rt, task.id, { follow: true });
      const stop = new AbortController();
      const aborted = readLines(rt, task.id, { follow: true, signal: stop.signal });
      stop.abort();
      expect(await aborted).toEqual([]);
      await rt.unfreeze();
      expect(await rt.wait(task.id)).toMatchObject({ state: 'done', attempts: 2, output: { lines: 300 } });
      const live = await followed;
      const stored = await readLines(rt, task.id);
      expect(live).toEqual(stored);
      const expected = [1, 2].flatMap((attempt) =>
        Array.from({ length: 300 }, (_, i) => {
          const line: Record<string, unknown> = { taskId: task.id, attemptId: `${task.id}:1:${attempt}`, level: i === 0 ? 'warn' : 'info', message: `attempt ${attempt} line ${i}` };
          if (i % 2 === 0) line.fields = { i, attempt };
          return line;
        }),
      );
      expect(stored.map(({ cursor: _cursor, at: _at, ...line }) => line)).toEqual(expected);
      for (const line of stored) expect(typeof line.at).toBe('number');
      const cursors = stored.map((l) => l.cursor);
      expect([...cursors].sort()).toEqual(cursors);
      expect(new Set(cursors).size).toBe(cursors.length);

      // After a cursor: the rest, whether following (the task is settled: it ends) or not.
      expect(await readLines(rt, task.id, { after: cursors[299] })).toEqual(stored.slice(300));
      expect(await readLines(rt, task.id, { after: cursors[10], follow: true })).toEqual(stored.slice(11));
      expect(await readLines(rt, task.id, { after: cursors.at(-1) })).toEqual([]);
      expect(await readLines(rt, task.id, { follow: true })).toEqual(stored);
      // A task whose agent wrote nothing.
      const quiet = await rt.wait((await rt.submit({ agent: 'echo' })).id);
      expect(await readLines(rt, quiet.id)).toEqual([]);
      expect(await readLines(rt, quiet.id, { follow: true })).toEqual([]);
      // A follow a signal ends, of a task that has not started.
      const parked = await rt.submit({ agent: 'logging', delayMs: 600_000 });
      const later = new AbortController();
      const waiting = readLines(rt, parked.id, { follow: true, signal: later.signal });
      later.abort();
      expect(await waiting).toEqual([]);
    });

    it('on() and off(): listeners hear committed events until removed', async () => {
      const rt = await backend.open({ agents: [echoAgent] });
      const done: string[] = [];
      const all: Array<[string, string | undefined]> = [];
      const onDone = (event: RuntimeEvent<'task.done'>) => void done.push(event.taskId!);
      rt.on('task.done', onDone);
      const offAll = rt.on('*', (event) => void all.push([event.type, event.taskId]));
      const settled = (id: string) => heard(rt, (e) => e.type === 'task.done' && e.taskId === id);
      const first = await rt.submit({ agent: 'echo' });
      // Listeners are called in the order they were added: once the last hears it, the others have.
      await Promise.all([settled(first.id), rt.wait(first.id)]);
      expect(done).toEqual([first.id]);
      expect(all).toEqual([
        ['task.queued', first.id],
        ['task.started', first.id],
        ['task.done', first.id],
      ]);
      rt.off('task.done', onDone as never);
      offAll();
      const second = await rt.submit({ agent: 'echo' });
      await Promise.all([settled(second.id), rt.wait(second.id)]);
      expect(done).toEqual([first.id]);
      expect(all).toHaveLength(3);
    });

    it('freeze() stops starts and still accepts submits; unfreeze() starts them', async () => {
      const rt = await backend.open({ agents: [echoAgent] });
      const frozen = heard(rt, (e) => e.type === 'runtime.frozen');
      await rt.freeze('deploy');
      expect((await frozen).data).toMatchObject({ reason: 'deploy' });
      const held = await rt.submitMany([{ agent: 'echo', input: 1 }, { agent: 'echo', input: 2 }]);
      rt.poke();
      // A bounded wait is the only way to see that nothing starts; the order of the log checks it too.
      expect(await rejection(rt.wait(held[0]!.id, { timeoutMs: 200 }))).toMatchObject({ code: 'WAIT_TIMEOUT' });
      expect((await rt.list({ state: 'queued' })).tasks.map((t) => t.id)).toEqual(held.map((t) => t.id));
      await rt.unfreeze();
      for (const task of held) expect(await rt.wait(task.id)).toMatchObject({ state: 'done', attempts: 1 });
      const log = await readEvents(rt, {}, (seen) => seen.filter((e) => e.type === 'task.done').length === 2);
      const types = log.map((e) => e.type);
      expect(types.slice(0, 4)).toEqual(['runtime.frozen', 'task.queued', 'task.queued', 'runtime.unfrozen']);
      expect(types.slice(4).sort()).toEqual(['task.done', 'task.done', 'task.started', 'task.started']);
    });

    it('keeps schedules: create, get, list, pause, resume, delete; a tick submits a task', async () => {
      const rt = await backend.open({ agents: [echoAgent] });
      const created = await rt.schedules.create({ id: 'nightly', cron: '0 3 * * *', tz: 'Europe/Berlin', task: { agent: 'echo', input: { from: 'cron' } } });
      expect(created).toMatchObject({ id: 'nightly', cron: '0 3 * * *', tz: 'Europe/Berlin', overlap: 'skip', paused: false, fired: 0, skipped: 0, task: { agent: 'echo', input: { from: 'cron' } } });
      expect(created.nextRunAt).toBeGreaterThan(created.createdAt);
      expect(rt.schedules.get('nightly')).toEqual(created);
      expect(rt.schedules.list()).toEqual([created]);
      expect(await rejection(rt.schedules.create({ id: 'nightly', cron: '0 4 * * *', task: { agent: 'echo' } }))).toMatchObject({ code: 'INVALID_INPUT' });
      expect(await rt.schedules.pause('nightly')).toMatchObject({ id: 'nightly', paused: true });
      expect(rt.schedules.get('nightly').paused).toBe(true);
      const resumed = await rt.schedules.resume('nightly');
      expect(resumed).toMatchObject({ paused: false });
      expect(resumed.nextRunAt).toBeGreaterThan(resumed.updatedAt);
      await rt.schedules.delete('nightly');
      expect(rt.schedules.list()).toEqual([]);
      expect(thrown(() => rt.schedules.get('nightly'))).toMatchObject({ code: 'NOT_FOUND' });
      for (const call of [() => rt.schedules.delete('nightly'), () => rt.schedules.pause('nightly'), () => rt.schedules.resume('nightly')]) {
        expect(await rejection(call())).toMatchObject({ code: 'NOT_FOUND' });
      }

      const fired = heard(rt, (e) => e.type === 'schedule.fired' && e.data.scheduleId === 'tick' && e.taskId !== undefined);
      await rt.schedules.create({ id: 'tick', cron: '* * * * * *', task: { agent: 'echo', input: 'tick', labels: { kind: 'cron' } }, overlap: 'allow' });
      const tick = (await fired) as RuntimeEvent<'schedule.fired'>;
      expect(await rt.wait(tick.taskId!)).toMatchObject({ state: 'done', output: 'tick', labels: { kind: 'cron' }, idempotencyKey: `schedule:tick:${tick.data.tickIso}` });
      await rt.schedules.delete('tick');
      expect(rt.schedules.list()).toEqual([]);
    });

    it('rejects bad input on every entry point with the same code on both stores, storing nothing', async () => {
      const rt = await backend.open({ agents: [echoAgent] });
      const done = await rt.wait((await rt.submit({ agent: 'echo', input: 'kept' })).id);
      for (const [label, call, code, message] of badInput(rt, done.id)) {
        let error: unknown;
        try {
          const out = call();
          if (out && typeof (out as AsyncGenerator).next === 'function') await (out as AsyncGenerator).next();
          else await out;
        } catch (caught) {
          error = caught;
        }
        expect(error, label).toBeInstanceOf(TroupeError);
        expect(error, label).toMatchObject({ code, retryable: false, ...(message === undefined ? {} : { message: expect.stringContaining(message) }) });
      }
      expect((await rt.list()).tasks).toEqual([done]);
      expect(rt.agents.list().map((a) => a.name)).toEqual(['echo']);
      expect(rt.schedules.list()).toEqual([]);
      expect(await rt.get(done.id)).toEqual(done);
    });

    badOptions(backend);

    it('close() rejects pending waits and then every call with CLOSED; a second close() is the same promise', async () => {
      const rt = await backend.open({ agents: [echoAgent] });
      const done = await rt.wait((await rt.submit({ agent: 'echo' })).id);
      const parked = await rt.submit({ agent: 'echo', delayMs: 600_000 });
      const pending = rejection(rt.wait(parked.id));
      const following = readLines(rt, parked.id, { follow: true });
      await rt.schedules.create({ id: 'nightly', cron: '0 3 * * *', task: { agent: 'echo' } });
      const closing = rt.close();
      expect(rt.close()).toBe(closing);
      await closing;
      expect(rt.state).toBe('closed');
      expect(await pending).toMatchObject({ code: 'CLOSED' });
      // A follow ends as its runtime closes.
      expect(await following).toEqual([]);
      const calls: Array<[string, () => Promise<unknown>]> = [
        ['submit', () => rt.submit({ agent: 'echo' })],
        ['submitMany', () => rt.submitMany([])],
        ['get', () => rt.get(done.id)],
        ['list', () => rt.list()],
        ['wait', () => rt.wait(done.id)],
        ['cancel', () => rt.cancel(parked.id)],
        ['retry', () => rt.retry(done.id)],
        ['freeze', () => rt.freeze()],
        ['unfreeze', () => rt.unfreeze()],
        ['schedules.create', () => rt.schedules.create({ id: 'other', cron: '0 3 * * *', task: { agent: 'echo' } })],
        ['schedules.pause', () => rt.schedules.pause('nightly')],
        ['schedules.resume', () => rt.schedules.resume('nightly')],
        ['schedules.delete', () => rt.schedules.delete('nightly')],
      ];
      for (const [label, call] of calls) expect(await rejection(call()), label).toMatchObject({ code: 'CLOSED', message: expect.stringContaining(`${label}: the runtime is closed`) });
      const syncCalls: Array<[string, () => unknown]> = [
        ['events', () => rt.events()],
        ['logs', () => rt.logs(done.id)],
        ['poke', () => rt.poke()],
        ['agents.register', () => rt.agents.register(builtinAgent('sleep'))],
        ['schedules.get', () => rt.schedules.get('nightly')],
        ['schedules.list', () => rt.schedules.list()],
      ];
      for (const [label, call] of syncCalls) expect(thrown(call), label).toMatchObject({ code: 'CLOSED', message: expect.stringContaining(`${label}: the runtime is closed`) });
      await rt.close();
    });

    it('close() rejects bad options without caching the rejection, and a later close() closes', async () => {
      const rt = await backend.open({ agents: [echoAgent] });
      expect(await rejection(rt.close({ timeoutMs: -1 }))).toMatchObject({ code: 'INVALID_OPTIONS', message: 'close: timeoutMs must be a non-negative integer' });
      expect(await rejection(rt.close({ timeoutMs: 10, forse: true } as never))).toMatchObject({ code: 'INVALID_OPTIONS' });
      expect(rt.state).toBe('running');
      expect((await rt.wait((await rt.submit({ agent: 'echo' })).id)).state).toBe('done');
      const closing = rt.close();
      expect(rt.close({ force: true })).toBe(closing);
      await closing;
      expect(rt.state).toBe('closed');
      expect(rt.close()).toBe(closing);
    });

    it('closes at the end of an `await using` block', async () => {
      let kept: Runtime | undefined;
      let pending: Promise<{ code?: string }> | undefined;
      {
        await using rt = await backend.open({ agents: [echoAgent] });
        kept = rt;
        const parked = await rt.submit({ agent: 'echo', delayMs: 600_000 });
        pending = rejection(rt.wait(parked.id));
        expect(rt.state).toBe('running');
      }
      expect(kept.state).toBe('closed');
      expect(await pending).toMatchObject({ code: 'CLOSED' });
    });
  });
}
