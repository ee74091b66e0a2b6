/**
 * The contract of the built-in shell agent, `builtinAgent('shell')` (contract.ts's suite, run by
 * contract-lmdb.test.ts and contract-postgres.test.ts): it runs a command, through a shell or not,
 * in the task's workspace (a scratch dir given as a path), streams stdout at info and stderr at
 * warn into the task's logs, reports a non-zero exit as a failure with the last stderr line, passes
 * env through and sets the TROUPE_* variables, fails at once on reserved env, a missing command, bad
 * input and a missing workspace; and a cancel, a timeout or close() kills its whole process tree.
 * The tests share one runtime, each waiting for its own tasks by id, but close()'s, which closes
 * its own.
 */
import { existsSync, readFileSync, realpathSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as pause } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { builtinAgent, type Runtime } from 'troupe';
import { scratchDirs } from '../helpers.js';
import { readLines, sharedRuntime, type ContractBackend } from './contract.js';

/** No fast-failure backoff: the bad-input test fails many tasks in a row. */
const shell = builtinAgent('shell', { backoff: false });
const node = process.execPath;

/** A shell that backgrounds a grandchild and records both pids, then waits. */
const TREE = 'sleep 300 & echo $! > child.pid; echo $$ > leader.pid; wait';

/** Output lines of one stream, as [level, message]. */
async function streamed(rt: Runtime, id: string, stream: 'stdout' | 'stderr'): Promise<Array<[string, string]>> {
  return (await readLines(rt, id)).filter((l) => l.fields?.stream === stream).map((l) => [l.level, l.message]);
}

/** Bounded poll: the file appears once the command has started. */
async function readWhenWritten(file: string): Promise<number> {
  for (let i = 0; i < 250 && !existsSync(file); i++) await pause(20);
  for (let i = 0; i < 50 && !/^\d+\n$/.test(readFileSync(file, 'utf8')); i++) await pause(20);
  return Number(readFileSync(file, 'utf8'));
}

/** ESRCH, or a zombie: an orphan exits at once but is only reaped if PID 1 reaps (not in every container). */
function gone(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'ESRCH';
  }
  try {
    return readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.startsWith('Z');
  } catch {
    return true;
  }
}

/** The kernel finishes a SIGTERM/SIGKILL asynchronously: poll briefly. */
async function expectGone(pid: number): Promise<void> {
  for (let i = 0; i < 100 && !gone(pid); i++) await pause(20);
  expect(gone(pid), `process ${pid} is still running`).toBe(true);
}

/** Registers the shell agent's contract tests against `backend` under `name`. */
export function shellContract(name: string, backend: ContractBackend): void {
  describe(`the shell agent on ${name}`, () => {
    const rt = sharedRuntime(backend, { cancelGraceMs: 2_000, agents: [shell] });
    const scratch = scratchDirs();

    it('runs in the workspace and streams stdout at info and stderr at warn', async () => {
      const workspace = scratch();
      const script = "pwd; echo 'to stderr' >&2; printf 'crlf\\r\\n'; printf 'no newline'";
      const task = await rt().wait((await rt().submit({ agent: 'shell', workspace, input: { command: script, shell: true } })).id);
      const here = realpathSync(workspace);
      expect(task).toMatchObject({ state: 'done', result: { kind: 'success', summary: 'exit 0' } });
      expect(task.output).toEqual({ exitCode: 0, stdoutTail: [here, 'crlf', 'no newline'], stderrTail: ['to stderr'] });
      expect(await streamed(rt(), task.id, 'stdout')).toEqual([['info', here], ['info', 'crlf'], ['info', 'no newline']]);
      expect(await streamed(rt(), task.id, 'stderr')).toEqual([['warn', 'to stderr']]);

      // Without a shell: the program and its arguments, unquoted.
      const direct = await rt().wait((await rt().submit({ agent: 'shell', workspace, input: { command: node, args: ['-e', 'console.log(process.cwd(), process.argv[1])', 'a b'] } })).id);
      expect(direct.output).toMatchObject({ exitCode: 0, stdoutTail: [`${here} a b`] });
    });

    it('reports a non-zero exit as a failure with the last stderr line', async () => {
      const input = { command: 'echo partial work; echo "tests red" >&2; exit 3', shell: true };
      const task = await rt().wait((await rt().submit({ agent: 'shell', workspace: scratch(), input })).id);
      expect(task).toMatchObject({ state: 'failed', attempts: 1, result: { kind: 'fail', summary: 'exit 3: tests red' }, error: { code: 'AGENT_FAILED' } });
      expect(task.output).toEqual({ exitCode: 3, signal: null, stdoutTail: ['partial work'], stderrTail: ['tests red'] });
    });

    it('passes env through and sets the TROUPE_* variables', async () => {
      const workspace = scratch();
      const script = 'const e = process.env; console.log([e.GREETING, e.TROUPE_TASK_ID, e.TROUPE_ATTEMPT, e.TROUPE_WORKSPACE].join("|"))';
      const task = await rt().wait((await rt().submit({ agent: 'shell', workspace, input: { command: node, args: ['-e', script], env: { GREETING: 'hi' } } })).id);
      expect(task.output).toMatchObject({ stdoutTail: [`hi|${task.id}|1|${workspace}`] });
    });

    it('fails at once on reserved env, a missing command, bad input and a missing workspace', async () => {
      const workspace = scratch();
      const run = async (input: unknown) => rt().wait((await rt().submit({ agent: 'shell', workspace, input })).id);
      const reserved = await run({ command: 'true', env: { TROUPE_TASK_ID: 'forged' } });
      expect(reserved).toMatchObject({ state: 'failed', attempts: 1, error: { code: 'RESERVED_ENV', retryable: false } });
      expect(reserved.error!.message).toContain('TROUPE_TASK_ID');
      const missing = await run({ command: 'troupe-no-such-command' });
      expect(missing).toMatchObject({ state: 'failed', attempts: 1, error: { code: 'COMMAND_NOT_FOUND', message: 'command not found: troupe-no-such-command' } });
      for (const input of [null, { command: '' }, { command: 'true', args: [1] }, { command: 'true', env: { A: 1 } }, { command: 'true', sheel: true }]) {
        expect(await run(input), JSON.stringify(input)).toMatchObject({ state: 'failed', attempts: 1, error: { code: 'INVALID_INPUT' } });
      }
      const nowhere = await rt().wait((await rt().submit({ agent: 'shell', workspace: join(workspace, 'absent'), input: { command: 'true' } })).id);
      expect(nowhere).toMatchObject({ state: 'failed', attempts: 1, error: { code: 'WORKSPACE_NOT_FOUND' } });
    });

    it('kills the whole process tree on cancel', async () => {
      const workspace = scratch();
      const task = await rt().submit({ agent: 'shell', workspace, input: { command: TREE, shell: true, killGraceMs: 300 } });
      const child = await readWhenWritten(join(workspace, 'child.pid'));
      const leader = await readWhenWritten(join(workspace, 'leader.pid'));
      expect(await rt().cancel(task.id, 'user stop')).toMatchObject({ state: 'cancelled', attempts: 1 });
      await expectGone(child);
      await expectGone(leader);
      const warnings = (await readLines(rt(), task.id)).filter((l) => l.level === 'warn').map((l) => l.message);
      expect(warnings[0]).toContain('aborting: cancelled');
    });

    it('kills the whole process tree on timeout', async () => {
      const workspace = scratch();
      const spec = { agent: 'shell', workspace, timeoutMs: 500, retry: { maxAttempts: 1 }, input: { command: TREE, shell: true, killGraceMs: 300 } };
      const task = await rt().wait((await rt().submit(spec)).id);
      expect(task).toMatchObject({ state: 'dropped', attempts: 1, reason: 'retry_exhausted' });
      expect(task.error!.message).toContain('TIMEOUT');
      await expectGone(await readWhenWritten(join(workspace, 'child.pid')));
      await expectGone(await readWhenWritten(join(workspace, 'leader.pid')));
    });

    it('close() lets the agent kill a tree that ignores SIGTERM before the threads go', async () => {
      const own = await backend.open({ threads: 1, cancelGraceMs: 2_000, agents: [shell] });
      const workspace = scratch();
      await own.submit({ agent: 'shell', workspace, input: { command: `trap '' TERM; ${TREE}`, shell: true, killGraceMs: 300 } });
      const child = await readWhenWritten(join(workspace, 'child.pid'));
      const leader = await readWhenWritten(join(workspace, 'leader.pid'));
      await own.close({ timeoutMs: 0 });
      await expectGone(child);
      await expectGone(leader);
    });
  });
}
