/**
 * Helpers of the tests of the runtime on PostgreSQL: runtimes made with the built package's
 * `createRuntime({ store: { postgres } })` (their threads load the built worker and agents), each
 * closed after its test. Call at a test file's top level after `scratchPools()`, so the runtimes
 * close before their databases are dropped.
 */
import { execFile, spawn, type ChildProcess, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterEach } from 'vitest';
import { createRuntime, type Runtime, type RuntimeOptions } from 'troupe';

/** A factory of runtimes on the database at a URL, closed (force) after each test. */
export function pgRuntimes(): (url: string, options?: Omit<RuntimeOptions, 'store'>) => Promise<Runtime> {
  const runtimes: Runtime[] = [];
  afterEach(async () => {
    for (const rt of runtimes.splice(0)) await rt.close({ timeoutMs: 1_000, force: true }).catch(() => undefined);
  });
  return async (url, options = {}) => {
    const rt = await createRuntime({ threads: 1, slotsPerThread: 2, logger: false, ...options, store: { postgres: url } });
    runtimes.push(rt);
    return rt;
  };
}

/** The error `fn` throws (fails if it throws nothing). */
export function thrown(fn: () => unknown): { code?: string; message: string } {
  try {
    fn();
  } catch (error) {
    return error as { code?: string; message: string };
  }
  throw new Error('expected a throw');
}

/** A JSON line a user's script printed. */
export type ScriptLine = Record<string, unknown>;

/** The repository's root: the scripts run there, as a user's would in their app. */
const ROOT = fileURLToPath(new URL('..', import.meta.url));

/**
 * Runs a user's plain script (`node script ...args`, no test runner around it, TROUPE_STORE unset)
 * and resolves once it exits, with its exit code (null when it was killed: it did not exit on its
 * own within `timeoutMs`), every JSON line it printed and its stderr; `onLine` hears each line as
 * it comes, with the child.
 */
export function runScript(script: string, args: string[], timeoutMs: number, onLine: (line: ScriptLine, child: ChildProcess) => void = () => undefined): Promise<{ code: number | null; lines: ScriptLine[]; stderr: string }> {
  return new Promise((resolve) => {
    const lines: ScriptLine[] = [];
    let buffered = '';
    const child = execFile(process.execPath, [script, ...args], { cwd: ROOT, timeout: timeoutMs, env: { ...process.env, TROUPE_STORE: '' } }, (error, _stdout, stderr) => {
      resolve({ code: error ? (typeof error.code === 'number' ? error.code : null) : 0, lines, stderr });
    });
    child.stdout!.on('data', (chunk: Buffer) => {
      buffered += chunk.toString();
      for (let at = buffered.indexOf('\n'); at >= 0; at = buffered.indexOf('\n')) {
        const text = buffered.slice(0, at);
        buffered = buffered.slice(at + 1);
        if (!text.startsWith('{')) continue;
        const line = JSON.parse(text) as ScriptLine;
        lines.push(line);
        onLine(line, child);
      }
    });
  });
}

/** A child process of a crash test, its stderr so far, and a wait for one of its output lines. */
export interface CrashChild {
  child: ChildProcessWithoutNullStreams;
  stderr(): string;
  /** Resolves once the child has printed the line `text` (at once if it has already). */
  line(text: string): Promise<void>;
}

/** Starts `node script ...args` for a crash test (see {@link CrashChild}). */
export function startCrashChild(script: string, args: string[]): CrashChild {
  const child = spawn(process.execPath, [script, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
  const lines: string[] = [];
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const waiters: Array<[string, () => void]> = [];
  createInterface({ input: child.stdout }).on('line', (line) => {
    lines.push(line);
    for (const [text, resolve] of waiters) if (text === line) resolve();
  });
  return {
    child,
    stderr: () => stderr,
    line: (text: string) => (lines.includes(text) ? Promise.resolve() : new Promise<void>((resolve) => waiters.push([text, resolve]))),
  };
}
