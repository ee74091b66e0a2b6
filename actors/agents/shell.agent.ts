/**
 * Built-in `shell` agent: runs one command in the task's workspace (`ctx.workspace`, else the
 * process's cwd) and streams its output to the task log.
 *
 * Input: `{ command, args?, env?, shell?, killGraceMs? }` (see {@link ShellInput}). Anything else
 * fails the task at once with code `INVALID_INPUT`; a missing workspace directory with
 * `WORKSPACE_NOT_FOUND`.
 *
 * Environment: the host's environment with `PWD` set to the workspace, then `input.env`, then the
 * reserved `TROUPE_TASK_ID`, `TROUPE_RUN_ID`, `TROUPE_ATTEMPT_ID`, `TROUPE_ATTEMPT` and (when the
 * task has a workspace) `TROUPE_WORKSPACE`. A `TROUPE_*` key in `input.env` fails the task with code `RESERVED_ENV`.
 *
 * Output: every stdout line is logged at info and every stderr line at warn, with
 * `{ stream: 'stdout' | 'stderr' }`. Exit 0 returns success with `{ exitCode: 0, stdoutTail,
 * stderrTail }` (the last {@link TAIL_LINES} lines of each). A non-zero exit, or death by a signal
 * we did not send, returns `{ kind: 'fail' }` (summary `exit <code>: <last stderr line>`) with
 * `{ exitCode, signal, stdoutTail, stderrTail }`: a reported failure, not retried. A command that
 * cannot be started fails with code `COMMAND_NOT_FOUND`.
 *
 * Cancellation: the command is spawned detached, as the leader of its own process group, so that
 * when `ctx.signal` aborts (cancel, timeout, shutdown) the whole tree it started can be signalled
 * at once: SIGTERM to the group, then SIGKILL to whatever is left of it after `killGraceMs`. The
 * agent waits for that, then throws a retryable `ABORTED` error; the host decides the outcome.
 * Keep `killGraceMs` below the runtime's `cancelGraceMs`: a thread terminated past that grace
 * cannot send the SIGKILL.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { statSync } from 'node:fs';
import type { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { AgentError, defineAgent, type AgentContext, type AgentResult } from '../agent.js';

/** Input of the shell agent. */
export interface ShellInput {
  /** The program to run, looked up on PATH; with `shell: true`, a `/bin/sh` script. */
  command: string;
  /** Arguments; with `shell: true`, the script's `$1`, `$2`, … @default [] */
  args?: string[];
  /** Extra environment variables, over the host's. `TROUPE_*` names are reserved. */
  env?: Record<string, string>;
  /** Run `command` through `/bin/sh -c`. @default false */
  shell?: boolean;
  /** Time between SIGTERM and SIGKILL to the process group on abort. @default 2000 */
  killGraceMs?: number;
}

/** Output of the shell agent, on success and (with `signal`) on a reported failure. */
export interface ShellOutput {
  exitCode: number | null;
  signal?: NodeJS.Signals | null;
  stdoutTail: string[];
  stderrTail: string[];
}

/** Lines of each stream kept for the result. */
export const TAIL_LINES = 50;
/** A longer line without a newline is logged in pieces of this many characters. */
const MAX_LINE_CHARS = 16_384;
/** After the command exits, how long its pipes may stay open (held by a background child) before we stop reading. */
const DRAIN_MS = 200;
/** How often an aborting agent checks whether the process group is gone. */
const GROUP_POLL_MS = 20;
const DEFAULT_KILL_GRACE_MS = 2_000;
const KNOWN = new Set(['command', 'args', 'env', 'shell', 'killGraceMs']);

export default defineAgent(async (raw: unknown, ctx): Promise<AgentResult> => {
  const input = parseInput(raw);
  const cwd = ctx.workspace ?? process.cwd();
  if (!isDirectory(cwd)) throw new AgentError(`workspace ${cwd} is not a directory`, { retryable: false, code: 'WORKSPACE_NOT_FOUND' });
  const env = environmentFor(input.env, cwd, ctx);
  if (ctx.signal.aborted) throw aborted(ctx.signal);

  const [file, argv]: [string, string[]] = input.shell ? ['/bin/sh', ['-c', input.command, 'sh', ...input.args]] : [input.command, input.args];
  const child = spawn(file, argv, { cwd, env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = exitOf(child);
  const stdout = readLines(child.stdout!, (line) => ctx.log.info(line, { stream: 'stdout' }));
  const stderr = readLines(child.stderr!, (line) => ctx.log.warn(line, { stream: 'stderr' }));
  if (child.pid !== undefined) ctx.log.debug(`started ${input.command}`, { pid: child.pid, cwd });

  let killing: Promise<void> | undefined;
  const onAbort = () => {
    if (child.pid === undefined) return;
    ctx.log.warn(`aborting: ${reasonOf(ctx.signal)}; SIGTERM to process group ${child.pid}`);
    killing = killGroup(child.pid, input.killGraceMs, exited, ctx);
  };
  ctx.signal.addEventListener('abort', onAbort, { once: true });
  let exit: Exit;
  try {
    exit = await exited;
    await killing;
  } catch (error) {
    throw spawnFailure(error, input.command);
  } finally {
    ctx.signal.removeEventListener('abort', onAbort);
    await drain([stdout, stderr]);
  }
  if (killing) throw aborted(ctx.signal);

  const tails = { stdoutTail: stdout.tail, stderrTail: stderr.tail };
  if (exit.code === 0) return { kind: 'success', summary: 'exit 0', output: { exitCode: 0, ...tails } satisfies ShellOutput };
  const lastError = stderr.tail.at(-1);
  const how = exit.code === null ? `signal ${exit.signal}` : `exit ${exit.code}`;
  const output: ShellOutput = { exitCode: exit.code, signal: exit.signal, ...tails };
  return { kind: 'fail', summary: lastError ? `${how}: ${lastError}` : how, output };
});

function parseInput(raw: unknown): Required<ShellInput> {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw invalid('input must be an object { command, args?, env?, shell?, killGraceMs? }');
  for (const key of Object.keys(raw)) if (!KNOWN.has(key)) throw invalid(`input.${key} is not a shell option`);
  const { command, args = [], env = {}, shell = false, killGraceMs = DEFAULT_KILL_GRACE_MS } = raw as ShellInput;
  if (typeof command !== 'string' || command.length === 0) throw invalid('input.command must be a non-empty string');
  if (!Array.isArray(args) || args.some((a) => typeof a !== 'string')) throw invalid('input.args must be an array of strings');
  if (typeof env !== 'object' || env === null || Array.isArray(env)) throw invalid('input.env must be an object of strings');
  for (const [key, value] of Object.entries(env)) {
    if (typeof value !== 'string') throw invalid(`input.env.${key} must be a string`);
    if (key.startsWith('TROUPE_')) throw new AgentError(`input.env.${key}: TROUPE_* variables are reserved`, { retryable: false, code: 'RESERVED_ENV' });
  }
  if (typeof shell !== 'boolean') throw invalid('input.shell must be a boolean');
  if (!Number.isSafeInteger(killGraceMs) || killGraceMs < 0) throw invalid('input.killGraceMs must be a non-negative integer');
  return { command, args, env, shell, killGraceMs };
}

function environmentFor(extra: Record<string, string>, cwd: string, ctx: AgentContext): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    // The host's PWD names the host's directory; shells and tools trust it over getcwd().
    PWD: cwd,
    ...extra,
    TROUPE_TASK_ID: ctx.taskId,
    TROUPE_RUN_ID: ctx.runId,
    TROUPE_ATTEMPT_ID: ctx.attemptId,
    TROUPE_ATTEMPT: String(ctx.attempt),
  };
  // An inherited value (the host itself running under a shell task) would name the wrong directory.
  if (ctx.workspace === undefined) delete env.TROUPE_WORKSPACE;
  else env.TROUPE_WORKSPACE = ctx.workspace;
  return env;
}

interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** Settles when the leader exits, or rejects when it could not be started. */
function exitOf(child: ChildProcess): Promise<Exit> {
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code, signal) => resolve({ code, signal }));
  });
}

/** SIGTERM to the group; SIGKILL to what is left of it after `graceMs`; resolves once the leader has exited. */
async function killGroup(pgid: number, graceMs: number, exited: Promise<Exit>, ctx: AgentContext): Promise<void> {
  signalGroup(pgid, 'SIGTERM');
  const deadline = Date.now() + graceMs;
  // Polled because a group has no exit event; orphans that nobody reaps keep it alive until the deadline.
  while (groupAlive(pgid) && Date.now() < deadline) await sleep(GROUP_POLL_MS);
  if (groupAlive(pgid)) {
    ctx.log.warn(`process group ${pgid} outlived ${graceMs} ms; SIGKILL`);
    signalGroup(pgid, 'SIGKILL');
  }
  await exited.catch(() => undefined);
}

function signalGroup(pgid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pgid, signal);
  } catch {
    // ESRCH: the group is already gone.
  }
}

function groupAlive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

interface LineReader {
  readonly tail: string[];
  readonly closed: Promise<void>;
  /** Stops reading and emits a last line that had no newline. */
  finish(): void;
}

function readLines(stream: Readable, emit: (line: string) => void): LineReader {
  const tail: string[] = [];
  let partial = '';
  const push = (line: string) => {
    const clean = line.endsWith('\r') ? line.slice(0, -1) : line;
    emit(clean);
    tail.push(clean);
    if (tail.length > TAIL_LINES) tail.shift();
  };
  stream.setEncoding('utf8');
  stream.on('data', (chunk: string) => {
    const lines = (partial + chunk).split('\n');
    partial = lines.pop()!;
    for (const line of lines) push(line);
    while (partial.length >= MAX_LINE_CHARS) {
      push(partial.slice(0, MAX_LINE_CHARS));
      partial = partial.slice(MAX_LINE_CHARS);
    }
  });
  const closed = new Promise<void>((resolve) => {
    stream.once('close', resolve);
    stream.once('error', () => resolve());
  });
  return {
    tail,
    closed,
    finish() {
      stream.destroy();
      if (partial.length > 0) push(partial);
      partial = '';
    },
  };
}

/** Waits a little for the pipes to reach EOF (a background child may hold them), then stops reading. */
async function drain(readers: LineReader[]): Promise<void> {
  const giveUp = new AbortController();
  await Promise.race([Promise.all(readers.map((r) => r.closed)), sleep(DRAIN_MS, undefined, { signal: giveUp.signal }).catch(() => undefined)]);
  giveUp.abort();
  for (const reader of readers) reader.finish();
}

function spawnFailure(error: unknown, command: string): AgentError {
  const code = (error as NodeJS.ErrnoException).code;
  if (code === 'ENOENT' || code === 'EACCES') return new AgentError(`command not found: ${command}`, { retryable: false, code: 'COMMAND_NOT_FOUND', cause: error });
  return new AgentError(`could not start ${command}: ${(error as Error).message}`, { retryable: true, code: 'SPAWN_FAILED', cause: error });
}

function reasonOf(signal: AbortSignal): string {
  const reason: unknown = signal.reason;
  if (reason instanceof Error) return typeof reason.cause === 'string' ? reason.cause : reason.message;
  return typeof reason === 'string' ? reason : 'aborted';
}

function aborted(signal: AbortSignal): AgentError {
  return new AgentError(`shell command aborted: ${reasonOf(signal)}`, { retryable: true, code: 'ABORTED' });
}

function invalid(message: string): AgentError {
  return new AgentError(message, { retryable: false, code: 'INVALID_INPUT' });
}

function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}
