import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { builtinAgent, type Runtime, type RuntimeEvent } from 'troupe';
import { fixtureAgent, runtimes, tempDir } from '../helpers.js';

const runtime = runtimes();

// These tests fail agents on purpose, many times in a row: the agent backoff would pause them.
const fast = { retry: { maxAttempts: 3, delayMs: 0 }, backoff: false as const };

describe('agent failures', () => {
  it('retries a throwing agent per policy, then drops it with retry_exhausted', async () => {
    const rt = await runtime({ agents: [builtinAgent('fail', fast)] });
    const events: RuntimeEvent[] = [];
    rt.on('*', (e) => events.push(e));
    const task = await rt.wait((await rt.submit({ agent: 'fail', input: { message: 'boom' } })).id);
    expect(task).toMatchObject({ state: 'dropped', reason: 'retry_exhausted', attempts: 3, error: { code: 'RETRY_EXHAUSTED', fault: 'agent', retryable: false } });
    expect(task.error!.message).toContain('AGENT_ERROR: boom');
    const types = events.filter((e) => e.taskId === task.id).map((e) => e.type);
    expect(types).toEqual(['task.queued', 'task.started', 'task.retrying', 'task.started', 'task.retrying', 'task.started', 'task.dropped']);
  });

  it('recovers when a later attempt succeeds', async () => {
    const rt = await runtime({ agents: [builtinAgent('fail', fast)] });
    const task = await rt.wait((await rt.submit({ agent: 'fail', input: { succeedOnAttempt: 2 } })).id);
    expect(task).toMatchObject({ state: 'done', attempts: 2, output: { recoveredOnAttempt: 2 } });
    expect(task.error).toBeUndefined();
  });

  it('fails at once on AgentError({retryable: false}) and on a {kind: "fail"} result', async () => {
    const rt = await runtime({ agents: [builtinAgent('fail', fast)] });
    const fatal = await rt.wait((await rt.submit({ agent: 'fail', input: { mode: 'fatal', message: 'bad input' } })).id);
    expect(fatal).toMatchObject({ state: 'failed', attempts: 1, error: { code: 'FATAL', message: 'bad input', retryable: false, fault: 'agent' } });
    const reported = await rt.wait((await rt.submit({ agent: 'fail', input: { mode: 'result', message: 'tests red' } })).id);
    expect(reported).toMatchObject({ state: 'failed', attempts: 1, result: { kind: 'fail', summary: 'tests red' }, error: { code: 'AGENT_FAILED', message: 'tests red' } });
  });

  it('turns unstorable results and non-error throws into clear errors', async () => {
    const rt = await runtime({ agents: [{ name: 'weird', module: fixtureAgent('weird'), ...fast }] });
    const fn = await rt.wait((await rt.submit({ agent: 'weird', input: { mode: 'function' } })).id);
    expect(fn).toMatchObject({ state: 'failed', error: { code: 'INVALID_RESULT', retryable: false } });
    expect(fn.error!.message).toContain('result.output.handler is a function');
    const fork = await rt.wait((await rt.submit({ agent: 'weird', input: { mode: 'badfork' } })).id);
    expect(fork).toMatchObject({ state: 'failed', error: { code: 'INVALID_RESULT' } });
    const thrown = await rt.wait((await rt.submit({ agent: 'weird', input: { mode: 'throwstring' } })).id);
    expect(thrown).toMatchObject({ state: 'dropped', attempts: 3, error: { code: 'RETRY_EXHAUSTED' } });
    expect(thrown.error!.message).toContain('non-error thrown: "a plain string"');
  });

  it('fails the task with AGENT_LOAD_FAILED when the module throws at import', async () => {
    const rt = await runtime({ agents: [{ name: 'broken', module: fixtureAgent('broken'), ...fast }] });
    const task = await rt.wait((await rt.submit({ agent: 'broken' })).id);
    expect(task).toMatchObject({ state: 'failed', attempts: 1, error: { code: 'AGENT_LOAD_FAILED', retryable: false } });
    expect(task.error!.message).toContain('broken agent: cannot initialise');
  });

  it('fails with AGENT_LOAD_FAILED on a syntax error or a module without an agent export', async () => {
    const dir = tempDir();
    try {
      const syntax = join(dir.path, 'syntax.agent.mjs');
      writeFileSync(syntax, 'export default (input) => { return input +;\n');
      const empty = join(dir.path, 'empty.agent.mjs');
      writeFileSync(empty, 'export const notAnAgent = 1;\n');
      const rt = await runtime({ agents: [{ name: 'syntax', module: syntax }, { name: 'empty', module: empty }] });
      const a = await rt.wait((await rt.submit({ agent: 'syntax' })).id);
      expect(a).toMatchObject({ state: 'failed', error: { code: 'AGENT_LOAD_FAILED' } });
      expect(a.error!.message).toMatch(/SyntaxError|Unexpected token/);
      const b = await rt.wait((await rt.submit({ agent: 'empty' })).id);
      expect(b).toMatchObject({ state: 'failed', error: { code: 'AGENT_LOAD_FAILED' } });
      expect(b.error!.message).toContain('has no default export');
    } finally {
      dir.cleanup();
    }
  });

  it('fails an attempt whose thread crashes as an infrastructure fault and retries it on a new thread', async () => {
    const rt = await runtime({ threads: 1, slotsPerThread: 1, agents: [{ name: 'crash', module: fixtureAgent('crash'), retry: { maxAttempts: 2, delayMs: 0 } }, builtinAgent('echo')] });
    const task = await rt.wait((await rt.submit({ agent: 'crash' })).id);
    expect(task).toMatchObject({ state: 'dropped', attempts: 2, reason: 'retry_exhausted', error: { fault: 'infrastructure' } });
    expect(task.error!.message).toContain('THREAD_CRASHED');
    // The pool replaced the dead thread: other work still runs.
    expect((await rt.wait((await rt.submit({ agent: 'echo', input: 'after' })).id)).state).toBe('done');
  });

  it('a thread crash does not count against an instance the way agent failures do', async () => {
    const rt = await runtime({ failedAttemptThreshold: 2, agents: [{ name: 'crash', module: fixtureAgent('crash'), retry: { maxAttempts: 3, delayMs: 0 } }, builtinAgent('fail', { retry: { maxAttempts: 2, delayMs: 0 } })] });
    const crash = await rt.wait((await rt.submit({ agent: 'crash' })).id);
    expect(crash.state).toBe('dropped');
    expect(rt.instances().find((i) => i.key === crash.instanceKey)).toMatchObject({ status: 'idle', consecutiveFailures: 0 });
    const degraded = new Promise<RuntimeEvent>((resolve) => rt.on('instance.degraded', resolve));
    const fail = await rt.wait((await rt.submit({ agent: 'fail' })).id);
    expect(fail.state).toBe('dropped');
    expect((await degraded).data).toMatchObject({ instanceKey: fail.instanceKey, consecutiveFailures: 2 });
    expect(rt.instances().find((i) => i.key === fail.instanceKey)).toMatchObject({ status: 'degraded' });
    // A degraded instance takes no work until it is reset.
    const next = await rt.submit({ agent: 'fail', input: { succeedOnAttempt: 1 } });
    await expect(rt.wait(next.id, { timeoutMs: 300 })).rejects.toMatchObject({ code: 'WAIT_TIMEOUT' });
    await rt.resetInstance(fail.instanceKey);
    expect(await rt.wait(next.id)).toMatchObject({ state: 'done' });
  });
});

describe('user retry', () => {
  it('starts a new run of a failed task, and refuses to retry a done one', async () => {
    const rt = await runtime({ agents: [builtinAgent('fail', fast), builtinAgent('echo')] });
    const failed = await rt.wait((await rt.submit({ agent: 'fail', input: { mode: 'fatal' } })).id);
    expect(failed.state).toBe('failed');
    const retried = await rt.retry(failed.id);
    expect(retried).toMatchObject({ state: 'queued', runs: 2, attempts: 0 });
    expect(retried.error).toBeUndefined();
    const again = await rt.wait(failed.id);
    expect(again).toMatchObject({ state: 'failed', runs: 2, attempts: 1 });
    const done = await rt.wait((await rt.submit({ agent: 'echo' })).id);
    await expect(rt.retry(done.id)).rejects.toMatchObject({ name: 'TroupeError', code: 'ILLEGAL_TRANSITION' });
    await expect(rt.retry('nope')).rejects.toMatchObject({ code: 'NOT_FOUND' });
    expect(rt.stats().tasks).toMatchObject({ failed: 1, done: 1 });
  });
});
