/**
 * The contract of faults (contract.ts's suite, run by contract-lmdb.test.ts and
 * contract-postgres.test.ts): agents that cannot load, return what cannot be stored, throw what is
 * no error, end their thread, hang past a cancel or a timeout; listeners that throw; options a call
 * does not know. Each runs the same on both stores. The tests of a block share one runtime (one
 * store: see `sharedRuntime`), each waiting for its own tasks by id.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { builtinAgent, type AgentRegistration, type RuntimeEvent } from 'troupe';
import { fixtureAgent, rejection, started, tempDir } from '../helpers.js';
import { thrown } from '../pg-runtime.js';
import { nextEvent, sharedRuntime, type ContractBackend } from './contract.js';

/** These agents fail on purpose, many times in a row: the fast-failure pause would hold them. */
const noPause = { backoff: false as const };

/** Registers the fault contract's tests against `backend` under `name`. */
export function faultsContract(name: string, backend: ContractBackend): void {
  describe(`agents that fail on ${name}`, () => {
    // Module files that cannot load as agents, written before the runtime registers them.
    const dir = tempDir();
    afterAll(() => dir.cleanup());
    const syntax = join(dir.path, 'syntax.agent.mjs');
    writeFileSync(syntax, 'export default (input) => { return input +;\n');
    const empty = join(dir.path, 'empty.agent.mjs');
    writeFileSync(empty, 'export const notAnAgent = 1;\n');
    const agents: AgentRegistration[] = [
      builtinAgent('echo'),
      { name: 'weird', module: fixtureAgent('weird'), retry: { maxAttempts: 3, backoff: 'fixed', delayMs: 1 }, ...noPause },
      { name: 'broken', module: fixtureAgent('broken'), ...noPause },
      { name: 'syntax', module: syntax, ...noPause },
      { name: 'empty', module: empty, ...noPause },
      { name: 'crash', module: fixtureAgent('crash'), retry: { maxAttempts: 2, backoff: 'fixed', delayMs: 1 }, ...noPause },
      { name: 'stray', module: fixtureAgent('stray'), retry: { maxAttempts: 3, backoff: 'fixed', delayMs: 1 }, ...noPause },
      { name: 'hang', module: fixtureAgent('hang'), retry: { maxAttempts: 1 }, ...noPause },
      { name: 'polite', module: fixtureAgent('polite'), timeoutMs: 80, retry: { maxAttempts: 2, backoff: 'fixed', delayMs: 1 }, ...noPause },
    ];
    // One thread, so a thread that ends or is terminated takes every attempt on it along.
    const rt = sharedRuntime(backend, { threads: 1, slotsPerThread: 4, cancelGraceMs: 100, agents });

    /** The one thread serves again: an echo task runs to done. */
    async function echoes(input: string): Promise<void> {
      expect(await rt().wait((await rt().submit({ agent: 'echo', input })).id)).toMatchObject({ state: 'done', output: input });
    }

    it('fails an attempt whose result cannot be stored with INVALID_RESULT, and retries a throw that is no error with its text', async () => {
      const [fn, fork, plain, lone] = await rt().submitMany([
        { agent: 'weird', input: { mode: 'function' } },
        { agent: 'weird', input: { mode: 'badfork' } },
        { agent: 'weird', input: { mode: 'throwstring' } },
        { agent: 'weird', input: { mode: 'lonesurrogate' } },
      ]);
      const unstorable = await rt().wait(fn!.id);
      expect(unstorable).toMatchObject({ state: 'failed', attempts: 1, error: { code: 'INVALID_RESULT', retryable: false } });
      expect(unstorable.error!.message).toContain('result.output.handler is a function');
      // Not Unicode text: neither store keeps it as it is, so neither takes it.
      const notText = await rt().wait(lone!.id);
      expect(notText).toMatchObject({ state: 'failed', attempts: 1, error: { code: 'INVALID_RESULT' } });
      expect(notText.error!.message).toContain('result.output.text holds a lone UTF-16 surrogate');
      expect(await rt().wait(fork!.id)).toMatchObject({ state: 'failed', attempts: 1, error: { code: 'INVALID_RESULT' } });
      const thrownString = await rt().wait(plain!.id);
      expect(thrownString).toMatchObject({ state: 'dropped', attempts: 3, error: { code: 'RETRY_EXHAUSTED' } });
      expect(thrownString.error!.message).toContain('non-error thrown: "a plain string"');
    });

    it('fails a task with AGENT_LOAD_FAILED when its module throws at import, does not parse, or has no agent export', async () => {
      const [broken, bad, none] = await rt().submitMany([{ agent: 'broken' }, { agent: 'syntax' }, { agent: 'empty' }]);
      const load = { state: 'failed', attempts: 1, error: { code: 'AGENT_LOAD_FAILED', retryable: false } };
      expect(await rt().wait(broken!.id)).toMatchObject({ ...load, error: { ...load.error, message: expect.stringContaining('broken agent: cannot initialise') } });
      expect(await rt().wait(bad!.id)).toMatchObject({ ...load, error: { ...load.error, message: expect.stringMatching(/SyntaxError|Unexpected token/) } });
      expect(await rt().wait(none!.id)).toMatchObject({ ...load, error: { ...load.error, message: expect.stringContaining('has no default export') } });
      await echoes('after load failures');
    });

    it("fails an attempt with a stray error while it runs as the agent's error and no other; one after it ended, or a thrown value that cannot be read, costs nobody else an attempt", async () => {
      const slow = { agent: 'stray', input: { mode: 'slow' } };
      const modes = ['timer-after', 'reject-after', 'input-after', 'timer-during', 'proxy'];
      const tasks = await rt().submitMany([slow, slow, slow, ...modes.map((mode) => ({ agent: 'stray', input: { mode } }))]);
      const [neighbours, culprits] = [tasks.slice(0, 3), tasks.slice(3)];
      const settled = await Promise.all(culprits.map((t) => rt().wait(t.id)));
      const [timerAfter, rejectAfter, inputAfter, timerDuring, proxy] = settled;
      for (const after of [timerAfter, rejectAfter, inputAfter]) expect(after).toMatchObject({ state: 'done', attempts: 1, output: 'returned' });
      const agentError = { state: 'dropped', attempts: 3, error: { code: 'RETRY_EXHAUSTED', fault: 'agent' } };
      expect(timerDuring).toMatchObject({ ...agentError, error: { ...agentError.error, message: expect.stringContaining('an uncaught exception in the agent: timer while running') } });
      expect(proxy).toMatchObject({ ...agentError, error: { ...agentError.error, message: expect.stringContaining('the agent threw a value that could not be read') } });
      for (const n of await Promise.all(neighbours.map((t) => rt().wait(t.id)))) expect(n).toMatchObject({ state: 'done', attempts: 1, output: 'ok' });
      // The stray timer of timer-after throws 50 ms after its attempt: let it land, then the thread must still serve.
      await new Promise((resolve) => setTimeout(resolve, 100));
      await echoes('after stray errors');
    });

    it('charges an agent that ends its thread as an infrastructure fault; the attempts beside it are requeued uncharged; a new thread serves', async () => {
      const neighbours = await rt().submitMany([1, 2, 3].map(() => ({ agent: 'stray', input: { mode: 'slow' } })));
      await Promise.all(neighbours.map((t) => started(rt(), t.id)));
      const culprit = await rt().wait((await rt().submit({ agent: 'crash', input: { afterMs: 50 } })).id);
      expect(culprit).toMatchObject({ state: 'dropped', attempts: 2, reason: 'retry_exhausted', error: { code: 'RETRY_EXHAUSTED', fault: 'infrastructure' } });
      expect(culprit.error!.message).toContain('THREAD_CRASHED');
      expect(culprit.error!.message).toContain('the agent ended its thread (process.exit(7))');
      for (const n of await Promise.all(neighbours.map((t) => rt().wait(t.id)))) expect(n).toMatchObject({ state: 'done', attempts: 1, output: 'ok' });
      await echoes('after a crash');
    });

    it('terminates the thread of an attempt that ignores the abort past cancelGraceMs, and a new thread serves', async () => {
      for (const mode of ['async', 'block'] as const) {
        const task = await rt().submit({ agent: 'hang', input: { mode } });
        await started(rt(), task.id);
        expect(await rt().cancel(task.id)).toMatchObject({ state: 'cancelled', attempts: 1 });
        await echoes(mode);
      }
    });

    it('ends an attempt past timeoutMs as a retryable TIMEOUT, then drops the task; a task\'s own timeoutMs terminates a blocked thread', async () => {
      const polite = await rt().submit({ agent: 'polite', input: {} });
      const retrying = nextEvent(rt(), 'task.retrying', polite.id);
      expect(await rt().wait(polite.id)).toMatchObject({ state: 'dropped', attempts: 2, reason: 'retry_exhausted', error: { message: expect.stringContaining('TIMEOUT') } });
      expect((await retrying).data).toMatchObject({ exit: 'timeout', error: { code: 'TIMEOUT', retryable: true } });
      // The agent gives no timeout: the task's own ends the attempt, whose thread spins.
      const blocked = await rt().wait((await rt().submit({ agent: 'hang', input: { mode: 'block' }, timeoutMs: 100 })).id);
      expect(blocked).toMatchObject({ state: 'dropped', attempts: 1, timeoutMs: 100, error: { message: expect.stringContaining('TIMEOUT') } });
      await echoes('after a timeout');
    });
  });

  describe(`callers that fail on ${name}`, () => {
    const lines: Array<Record<string, unknown>> = [];
    const stream = new Writable({
      write(chunk: Buffer, _encoding, done) {
        lines.push(JSON.parse(chunk.toString()) as Record<string, unknown>);
        done();
      },
    });
    const rt = sharedRuntime(backend, { logger: pino({ level: 'error' }, stream), agents: [builtinAgent('echo')] });

    it('listeners that throw or reject are logged and counted, and neither fail a submit, nor stop its task, nor starve the other listeners', async () => {
      const offs = [
        ...(['task.queued', 'task.started', 'task.done'] as const).map((type) =>
          rt().on(type, () => {
            throw new Error(`listener of ${type} broke`);
          }),
        ),
        rt().on('task.done', async () => {
          await Promise.resolve();
          throw new Error('async listener');
        }),
      ];
      const seen: RuntimeEvent[] = [];
      // On PostgreSQL a wait can resolve from its task's row before the follower has passed the
      // settling events on to listeners: the last task.done is awaited as the listener hears it.
      let heard!: () => void;
      const allDone = new Promise<void>((resolve) => (heard = resolve));
      offs.push(
        rt().on('*', (e) => {
          seen.push(e);
          if (seen.filter((s) => s.type === 'task.done').length === 3) heard();
        }),
      );
      const tasks = await rt().submitMany([1, 2, 3].map((input) => ({ agent: 'echo', input })));
      for (const task of tasks) expect(await rt().wait(task.id)).toMatchObject({ state: 'done' });
      await allDone;
      // The rejections are handled a microtask after the publish: let them land.
      await new Promise((resolve) => setImmediate(resolve));
      for (const off of offs) off();
      const ids = tasks.map((t) => t.id).sort();
      for (const type of ['task.queued', 'task.started', 'task.done']) expect(seen.filter((e) => e.type === type).map((e) => e.taskId).sort(), type).toEqual(ids);
      // Three tasks, each heard by three listeners that throw and (on task.done) one that rejects.
      expect((await rt().metrics()).listenerErrors).toBe(12);
      expect(await rt().metrics({ format: 'prometheus' })).toContain('troupe_listener_errors_total 12');
      expect(lines.filter((l) => l.msg === 'an event listener threw')).toHaveLength(12);
      expect(rt().state).toBe('running');
    });

    it('options a call does not know are INVALID_OPTIONS naming the option: list, events, on and metrics', async () => {
      const cases: Array<[() => unknown, string]> = [
        [() => rt().list({ bogus: 1 } as never), 'list: bogus is not one of its options'],
        [() => rt().list({ State: 'done' } as never), 'list: State is not one of its options'],
        [() => rt().events({ bogus: 1 } as never).next(), 'events: bogus is not one of its options'],
        [() => rt().events({ types: ['task.bogus'] as never }).next(), 'events: types: "task.bogus" is not an event type'],
        [() => rt().on('task.bogus' as never, () => undefined), 'on: "task.bogus" is not an event type'],
        [() => rt().metrics({ bogus: 1 } as never), 'metrics: bogus is not one of its options'],
        [() => rt().metrics({ format: 'xml' } as never), "metrics: format must be 'prometheus' or 'snapshot'"],
      ];
      for (const [call, message] of cases) {
        let error: { code?: string; message: string } | undefined;
        try {
          await call();
        } catch (caught) {
          error = caught as { code?: string; message: string };
        }
        expect(error?.code, message).toBe('INVALID_OPTIONS');
        expect(error?.message).toContain(message);
      }
      expect(thrown(() => rt().on('task.done', 'not a function' as never))).toMatchObject({ code: 'INVALID_INPUT' });
      // A stream's bad options fail its first next(), before anything is replayed.
      expect(await rejection(rt().events({ taskId: 'x'.repeat(5_000) }).next())).toMatchObject({ code: 'INVALID_INPUT' });
      expect(await rejection(rt().list({ after: 'x'.repeat(5_000) }))).toMatchObject({ code: 'INVALID_INPUT' });
    });
  });
}
