/**
 * Test helpers: temp data dirs, fixture agent URLs and a runtime factory with quiet defaults.
 * Integration tests import the built package (`troupe`), like an installed user would.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { afterAll, afterEach, inject } from 'vitest';
import { createRuntime, type Runtime, type RuntimeOptions } from 'troupe';
import { followEvents, type StoredEvent } from '../src/store/postgres/events.js';
import { joinCluster, type ClusterNode } from '../src/store/postgres/nodes.js';
import { dropAll, scratchDatabase } from './postgres.js';
import type { PgServer } from './postgres-setup.js';

/** Names of the fixture agents in test/fixtures/agents. */
export type FixtureAgent = 'aborted' | 'blocker' | 'crash' | 'hang' | 'progress' | 'broken' | 'chatty' | 'polite' | 'weird' | 'record' | 'overlap' | 'interactive' | 'stray' | 'traced' | 'stamp' | 'result' | 'logging' | 'reporter' | 'workspace' | 'gate' | 'hostile' | 'opaque';

/** The built module URL of a fixture agent. */
export function fixtureAgent(name: FixtureAgent): URL {
  return new URL(`../dist/test/fixtures/agents/${name}.agent.js`, import.meta.url);
}

/** A fresh temp dir, removed by the returned cleanup. */
export function tempDir(prefix = 'troupe-test-'): { path: string; cleanup: () => void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return { path, cleanup: () => rmSync(path, { recursive: true, force: true }) };
}

/**
 * Resolves once the clock is past the millisecond `at`: `rt.prune()` takes tasks settled before
 * now, and one settled in the very millisecond of the call is not.
 */
export async function pastMs(at: number): Promise<void> {
  while (Date.now() <= at) await new Promise((resolve) => setTimeout(resolve, 1));
}

/** Starts a runtime on a temp dir with small, quiet defaults; `stop()` closes it and removes the dir. */
export async function startRuntime(options: RuntimeOptions = {}): Promise<{ rt: Runtime; dataDir: string; stop: () => Promise<void> }> {
  const dir = options.dataDir ? undefined : tempDir();
  const dataDir = options.dataDir ?? dir!.path;
  const rt = await createRuntime({ threads: 2, slotsPerThread: 2, logger: false, cancelGraceMs: 500, ...options, dataDir }).catch((error: unknown) => {
    dir?.cleanup();
    throw error;
  });
  return {
    rt,
    dataDir,
    stop: async () => {
      await rt.close({ timeoutMs: 2_000 });
      dir?.cleanup();
    },
  };
}

/** The largest number of overlapping `+`/`-` intervals an overlap agent recorded (only `ids`' tasks, if given). */
export function maxOverlap(file: string, ids?: ReadonlySet<string>): number {
  const marks = readFileSync(file, 'utf8')
    .trim()
    .split('\n')
    .map((line) => line.split(' '))
    .filter(([, , id]) => !ids || ids.has(id!))
    .map(([sign, at]) => ({ delta: sign === '+' ? 1 : -1, at: Number(at) }))
    .sort((a, b) => a.at - b.at || a.delta - b.delta);
  let now = 0;
  let max = 0;
  for (const mark of marks) {
    now += mark.delta;
    max = Math.max(max, now);
  }
  return max;
}

/** Call at a test file's top level: returns a maker of temp dirs that are removed after each test. */
export function scratchDirs(): () => string {
  const dirs: Array<{ cleanup: () => void }> = [];
  afterEach(() => {
    for (const dir of dirs.splice(0)) dir.cleanup();
  });
  return () => {
    const dir = tempDir();
    dirs.push(dir);
    return dir.path;
  };
}

/** Call at a test file's top level: returns a runtime factory whose runtimes are closed after each test. */
export function runtimes(): (options?: RuntimeOptions) => Promise<Runtime> {
  const stops: Array<() => Promise<void>> = [];
  afterEach(async () => {
    for (const stop of stops.splice(0)) await stop();
  });
  return async (options = {}) => {
    const started = await startRuntime(options);
    stops.push(started.stop);
    return started.rt;
  };
}

/**
 * Resolves once the task has started (a submit that finds a free slot commits queued and started
 * together, so the `task.started` event may already be out when `submit()` resolves).
 */
export async function started(rt: Runtime, taskId: string): Promise<void> {
  let off: (() => void) | undefined;
  const seen = new Promise<void>((resolve) => {
    off = rt.on('task.started', (e: { taskId?: string }) => {
      if (e.taskId === taskId) resolve();
    });
  });
  try {
    if ((await rt.get(taskId)).state !== 'queued') return;
    await seen;
  } finally {
    off?.();
  }
}

/** What tests read of a data dir: the store's reads, as a restart would see them. */
export interface DataDir {
  read: {
    tasks: Reads<Record<string, any>>;
    schedules: Reads<Record<string, any>>;
    events: Reads<Record<string, any>>;
    attempts: Reads<Record<string, any>>;
    active: Reads<true>;
  };
  close(clean: boolean): Promise<void>;
  /** The settled counts the store keeps, per agent and state. */
  countSettled(): Array<[string, string, number]>;
}

interface Reads<V> {
  get(key: unknown): V | undefined;
  range(): Iterable<{ key: any; value: V }>;
  keys(): Iterable<any>;
}

/** What a finished `troupe` command printed, and its exit code. */
export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs the built `troupe` binary with `args` to completion (in `cwd`, default this process's). Its
 * environment is this process's without NO_COLOR and FORCE_COLOR, so output does not depend on the
 * shell the tests run in, plus `env`.
 */
export function runCli(args: readonly string[], options: { cwd?: string; env?: Record<string, string> } = {}): Promise<CliResult> {
  const env = { ...process.env, NO_COLOR: undefined, FORCE_COLOR: undefined, ...options.env };
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI_PATH, ...args], { cwd: options.cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** The built `troupe` binary. */
export const CLI_PATH = fileURLToPath(new URL('../dist/src/cli/index.js', import.meta.url));

/** The built agents dir of the CLI tests (test/fixtures/cli: ask, greet, hold). */
export const CLI_AGENTS = fileURLToPath(new URL('../dist/test/fixtures/cli', import.meta.url));

/** A long-running child (`troupe`, or any {@link followChild} follows) whose stdout lines can be awaited. */
export interface RunningCli {
  child: ChildProcess;
  lines: string[];
  stderr: () => string;
  /** Resolves with the first line (seen so far or later) matching `test`. */
  line(test: RegExp): Promise<string>;
  exit: Promise<number | null>;
}

/** Starts `troupe ...args` (environment as {@link runCli}'s) and follows its output. */
export function startCli(args: readonly string[], options: { env?: Record<string, string> } = {}): RunningCli {
  const env = { ...process.env, NO_COLOR: undefined, FORCE_COLOR: undefined, ...options.env };
  return followChild(spawn(process.execPath, [CLI_PATH, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] }));
}

/** Follows a child spawned with piped stdout and stderr: its lines, its stderr, its exit. */
export function followChild(child: ChildProcess): RunningCli {
  const lines: string[] = [];
  const waiters: Array<{ test: RegExp; resolve: (line: string) => void }> = [];
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  createInterface({ input: child.stdout! }).on('line', (line) => {
    lines.push(line);
    for (const waiter of waiters.splice(0)) {
      if (waiter.test.test(line)) waiter.resolve(line);
      else waiters.push(waiter);
    }
  });
  const exit = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  return {
    child,
    lines,
    stderr: () => stderr,
    exit,
    line: (test) =>
      new Promise((resolve, reject) => {
        const seen = lines.find((l) => test.test(l));
        if (seen !== undefined) return resolve(seen);
        waiters.push({ test, resolve });
        void exit.then((code) => reject(new Error(`exited ${code} before a line matched ${test}; stdout:\n${lines.join('\n')}\nstderr:\n${stderr}`)));
      }),
  };
}

/** Starts `troupe run ...args` and waits for its running line (`--json`: the running event). */
export async function serveCli(args: readonly string[], options: { json?: boolean; env?: Record<string, string> } = {}): Promise<RunningCli & { running: string }> {
  const run = startCli(['run', ...args, ...(options.json ? ['--json'] : [])], options);
  return { ...run, running: await run.line(options.json ? /^\{"event":"running"/ : /^troupe running:/) };
}

/** Sends SIGTERM to a `troupe` child and resolves with its exit code. */
export function stopCli(run: RunningCli): Promise<number | null> {
  run.child.kill('SIGTERM');
  return run.exit;
}

/** Opens a data dir no runtime holds through the built store (it replays its log first). */
export async function openDataDir(dataDir: string): Promise<DataDir> {
  const { openStore } = (await import(new URL('../dist/src/store/lmdb/store.js', import.meta.url).href)) as { openStore: (o: { dataDir: string }) => Promise<DataDir> };
  return openStore({ dataDir });
}

/**
 * A child process that opens a runtime on `dataDir` (from the built package) and holds it until
 * killed. Resolves once the runtime is open.
 */
export async function holdInChild(dataDir: string): Promise<ChildProcess> {
  const holder = spawn(process.execPath, ['--input-type=module', '-e', `
    import { createRuntime } from ${JSON.stringify(fileURLToPath(new URL('../dist/src/index.js', import.meta.url)))};
    await createRuntime({ dataDir: ${JSON.stringify(dataDir)}, logger: false, threads: 1 });
    console.log('ready');
    setInterval(() => {}, 1000);
  `], { stdio: ['ignore', 'pipe', 'inherit'] });
  await once(holder.stdout!, 'data');
  return holder;
}

/** What `promise` rejected with; fails the test if it resolved. */
export async function rejection(promise: Promise<unknown>): Promise<{ code?: string; message: string }> {
  try {
    await promise;
  } catch (error) {
    return error as { code?: string; message: string };
  }
  throw new Error('expected a rejection');
}

/**
 * The ```ts blocks of a markdown file, in order, with the line each starts on; a block indented
 * under a list item comes back with that indentation taken off.
 */
export function readmeBlocks(path: string): Array<{ line: number; code: string }> {
  const lines = readFileSync(path, 'utf8').split('\n');
  const blocks: Array<{ line: number; code: string }> = [];
  for (let i = 0; i < lines.length; i++) {
    const open = /^(\s*)```ts$/.exec(lines[i]!);
    if (!open) continue;
    const indent = open[1]!.length;
    const start = i + 1;
    while (++i < lines.length && lines[i]!.trim() !== '```');
    blocks.push({ line: start + 1, code: lines.slice(start, i).map((l) => l.slice(indent)).join('\n') });
  }
  return blocks;
}

/**
 * This test file's PostgreSQL server: its worker's (test/postgres-setup.ts says why each worker
 * has its own). `VITEST_POOL_ID` numbers the workers from 1.
 */
export function pgServer(): PgServer {
  const servers = inject('pgServers');
  const server = servers[Number(process.env.VITEST_POOL_ID ?? 1) - 1];
  // Two workers on one server would make the event-log tests flaky, not fail: refuse it here.
  if (server === undefined) throw new Error(`no PostgreSQL server for vitest worker ${process.env.VITEST_POOL_ID} (${servers.length} started: test/postgres-setup.ts)`);
  return server;
}

/** A fresh database on this file's server ({@link pgServer}): a copy of the run's migrated template, or empty with `migrated: false`. */
export function scratchOnServer(migrated = true): ReturnType<typeof scratchDatabase> {
  const { url, template } = pgServer();
  return scratchDatabase(url, migrated ? template : undefined);
}

/**
 * Call at a test file's top level: returns a factory of pools on fresh databases of the tests'
 * PostgreSQL (test/postgres.ts): copies of the run's migrated template, or empty with
 * `migrated: false`. Each pool ends after its test; the databases go after the file's last test,
 * several at once (a drop waits for a checkpoint, which drops at the same time share).
 */
export function scratchPools(): (options?: { max?: number; migrated?: boolean }) => Promise<{ url: string; pool: pg.Pool }> {
  const cleanups: Array<() => Promise<void>> = [];
  const drops: Array<() => Promise<void>> = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });
  afterAll(() => dropAll(drops.splice(0)));
  return async ({ max = 10, migrated = true } = {}) => {
    const db = await scratchOnServer(migrated);
    drops.push(db.drop);
    const pool = new pg.Pool({ connectionString: db.url, max });
    // An idle client the server ends (the database dropped, a cluster stopped) is not a test failure.
    pool.on('error', () => undefined);
    cleanups.push(() => pool.end());
    return { url: db.url, pool };
  };
}

/** A follower of a scratch cluster's event log (see {@link scratchClusters}). */
export interface LogFollower {
  /** Every event delivered so far, in delivery order. */
  readonly events: StoredEvent[];
  /** Resolves once `test` holds for the events delivered; rejects if following failed. */
  until(test: (events: readonly StoredEvent[]) => boolean): Promise<void>;
  /** Stops following; resolves once stopped. */
  stop(): Promise<void>;
}

/** A fresh migrated database with what the cluster tests do on it; its nodes, pools and followers go after the test, the database after the file. */
export interface ScratchCluster {
  url: string;
  pool: pg.Pool;
  /** Joins a node (its connection ends after the test). */
  join(): Promise<ClusterNode>;
  /** Another pool on the database, as another machine would have. */
  otherPool(max?: number): pg.Pool;
  /** Follows the event log from its start with followEvents. */
  follow(): LogFollower;
}

/** Call at a test file's top level: a factory of {@link ScratchCluster}s. */
export function scratchClusters(): (options?: { max?: number }) => Promise<ScratchCluster> {
  const pools = scratchPools();
  const cleanups: Array<() => Promise<void>> = [];
  // Registered after scratchPools' hook, so it runs before the database is dropped.
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });
  return async ({ max = 10 } = {}) => {
    const { url, pool } = await pools({ max });
    return {
      url,
      pool,
      async join() {
        const node = await joinCluster(url, () => undefined);
        cleanups.push(() => node.leave());
        return node;
      },
      otherPool(otherMax = 4) {
        const other = new pg.Pool({ connectionString: url, max: otherMax });
        other.on('error', () => undefined);
        cleanups.push(() => other.end());
        return other;
      },
      follow() {
        const events: StoredEvent[] = [];
        const waiters: Array<{ test: (events: readonly StoredEvent[]) => boolean; resolve: () => void }> = [];
        const stop = new AbortController();
        let failed: ((error: unknown) => void) | undefined;
        const problem = new Promise<never>((_, reject) => (failed = reject));
        problem.catch(() => undefined);
        const following = followEvents(pool, url, { signal: stop.signal, pollMs: 200 }, (batch) => {
          events.push(...batch);
          for (const w of waiters.splice(0)) (w.test(events) ? w.resolve() : waiters.push(w));
        }).catch((error: unknown) => failed!(error));
        const end = async () => {
          stop.abort();
          await following;
        };
        cleanups.push(end);
        return {
          events,
          until: (test) => Promise.race([problem, new Promise<void>((resolve) => (test(events) ? resolve() : waiters.push({ test, resolve })))]),
          stop: end,
        };
      },
    };
  };
}
