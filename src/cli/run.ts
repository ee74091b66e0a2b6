/**
 * `troupe run`: starts a runtime on a data dir, registers every `<name>.agent.js` (or `.mjs`, `.cjs`,
 * `.ts`, `.mts`, `.cts`) in the agents dir as agent `<name>`, names each `*.agent.*` file it skips
 * and why, serves the control socket, and closes gracefully on SIGINT or SIGTERM.
 */
import { readdirSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { pino, type Logger } from 'pino';
import { findLooseModes, looseModeWarning, makePrivateDir } from '../store/private-files.js';
import { createRuntime } from '../create-runtime.js';
import { AGENT_NAME, type AgentRegistration } from '../agents/registry.js';
import { CliError, EXIT, usageError } from './cli-error.js';
import { assertDataDir } from './connect.js';
import { connectAnswering, preparePrivateDir, socketPathOf } from './control.js';
import { runtimeMethods } from './methods.js';
import { removeStaleSocket, startControlServer } from './server.js';

/** Options of {@link runServe}. */
export interface RunOptions {
  /** Absolute data dir; created if missing. */
  dataDir: string;
  /** Absolute agents dir (none: no agents, as `troupe dashboard` on a data dir). */
  agentsDir: string | undefined;
  /** A PostgreSQL connection string (`--store`, or TROUPE_STORE as the command line read it): the runtime runs there, and the data dir holds only the control socket. Undefined: LMDB in the data dir. */
  store?: string | undefined;
  /** Serve the dashboard too. */
  dashboard?: { port: number; host?: string; token?: string } | undefined;
  threads?: number;
  slotsPerThread?: number;
  /** pino level of the runtime's own log, written to stderr. */
  logLevel: string;
  json: boolean;
  /** How long running attempts may finish on shutdown. */
  closeTimeoutMs: number;
}

/** Agent module extensions, in the order a name given by two files is kept: built JavaScript first. */
const AGENT_EXTENSIONS = ['js', 'mjs', 'cjs', 'ts', 'mts', 'cts'];
const AGENT_FILE = /^(.*)\.agent\.(.+)$/;

/** The agents found in an agents dir, and each `*.agent.*` file that is not one, with why. */
export interface AgentsDir {
  agents: AgentRegistration[];
  skipped: Array<{ file: string; reason: string }>;
}

/**
 * Agent registrations for every `<name>.agent.{js,mjs,cjs,ts,mts,cts}` directly inside `dir`, sorted
 * by name. TypeScript agents run without a build step (the worker threads load them with tsx).
 */
export function agentsIn(dir: string): AgentsDir {
  let names: string[];
  try {
    if (!statSync(dir).isDirectory()) throw usageError(`--agents ${dir} is not a directory`);
    names = readdirSync(dir);
  } catch (error) {
    if (error instanceof CliError) throw error;
    throw usageError(`--agents ${dir}: ${(error as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such directory' : (error as Error).message}`);
  }
  const kept = new Map<string, { file: string; rank: number }>();
  const skipped: AgentsDir['skipped'] = [];
  for (const file of names.sort()) {
    const match = AGENT_FILE.exec(file);
    if (!match) continue;
    const name = match[1]!;
    const extension = match[2]!;
    const reason = notAnAgentModule(name, extension) ?? (statSync(join(dir, file), { throwIfNoEntry: false })?.isFile() ? undefined : 'not a file');
    if (reason) {
      skipped.push({ file, reason });
      continue;
    }
    const rank = AGENT_EXTENSIONS.indexOf(extension);
    const other = kept.get(name);
    if (other && other.rank <= rank) {
      skipped.push({ file, reason: `agent ${name} is already given by ${other.file}, which is kept` });
      continue;
    }
    if (other) skipped.push({ file: other.file, reason: `agent ${name} is also given by ${file}, which is kept` });
    kept.set(name, { file, rank });
  }
  const agents = [...kept].map(([name, { file }]) => ({ name, module: pathToFileURL(join(dir, file)) })).sort((a, b) => a.name.localeCompare(b.name));
  return { agents, skipped };
}

/** Why `<name>.agent.<extension>` is no agent module, if it is not. */
function notAnAgentModule(name: string, extension: string): string | undefined {
  if (/^d\.[cm]?ts$/.test(extension)) return 'a type declaration, not an agent module';
  if (/(^|\.)map$/.test(extension)) return 'a source map, not an agent module';
  if (!AGENT_EXTENSIONS.includes(extension)) return 'not a .js, .mjs, .cjs, .ts, .mts or .cts module';
  if (!AGENT_NAME.test(name)) return `${JSON.stringify(name)} is not a valid agent name (letters, digits, '.', '_', '-', starting with a letter or digit; up to 64 characters)`;
  return undefined;
}

/** Runs until SIGINT or SIGTERM; resolves with the exit code once closed. */
export async function runServe(options: RunOptions): Promise<number> {
  if (options.logLevel !== 'silent' && !(options.logLevel in pino.levels.values)) {
    throw usageError(`--log-level must be one of silent, ${Object.keys(pino.levels.values).join(', ')}`);
  }
  const { agents, skipped } = options.agentsDir === undefined ? { agents: [], skipped: [] } : agentsIn(options.agentsDir);
  const logger = pino({ name: 'troupe', level: options.logLevel }, pino.destination({ dest: 2, sync: true }));
  const socket = socketPathOf(options.dataDir);
  // On PostgreSQL nothing creates the data dir: it holds only the socket. A socket dir that will
  // not do, or a runtime already serving there (no store lock refuses it), fails here, before the
  // runtime joins the cluster (and could claim tasks).
  const onPostgres = options.store !== undefined;
  try {
    // A socket outside the data dir (its path would be too long) goes in a directory as private as the data dir.
    if (dirname(socket) !== options.dataDir) preparePrivateDir(dirname(socket));
    else if (onPostgres) prepareDataDir(options.dataDir, logger);
    if (onPostgres) await removeStaleSocket(socket);
  } catch (error) {
    throw new CliError('CONTROL_FAILED', (error as Error).message, EXIT.FAILED);
  }
  // TROUPE_STORE was read (and checked) into options.store by the command line already.
  const rt = await createRuntime({ dataDir: options.dataDir, threads: options.threads, slotsPerThread: options.slotsPerThread, logger, agents, dashboard: options.dashboard ?? false, store: onPostgres ? { postgres: options.store! } : undefined });
  let server;
  try {
    server = await startControlServer(runtimeMethods(rt, { dataDir: options.dataDir, socket }, { freshCounts: onPostgres }), socket);
  } catch (error) {
    await rt.close({ timeoutMs: 0 });
    throw new CliError('CONTROL_FAILED', (error as Error).message, EXIT.FAILED);
  }
  // Listen before announcing: a supervisor may signal as soon as it reads the running line, and
  // until a listener is on, the signal kills the process without a clean close.
  const stopped = new Promise<NodeJS.Signals>((resolve) => {
    process.once('SIGINT', () => resolve('SIGINT'));
    process.once('SIGTERM', () => resolve('SIGTERM'));
  });
  // Named once the runtime runs: a start that fails says only why it failed.
  for (const { file, reason } of skipped) {
    if (options.json) process.stdout.write(`${JSON.stringify({ event: 'skipped', file, reason })}\n`);
    else process.stderr.write(`troupe: skipped ${file}: ${reason}\n`);
  }
  const names = agents.map((a) => a.name);
  if (options.json) process.stdout.write(`${JSON.stringify({ event: 'running', pid: process.pid, agents: names, dataDir: options.dataDir, socket, ...(onPostgres ? { store: 'postgres' } : {}) })}\n`);
  else process.stdout.write(`troupe running: ${names.length} agents, ${onPostgres ? 'on PostgreSQL' : `data dir ${options.dataDir}`}, socket ${socket}\n`);
  const url = rt.dashboard();
  if (url !== undefined) process.stdout.write(options.json ? `${JSON.stringify({ event: 'dashboard', url })}\n` : `troupe dashboard: ${url}\n`);

  const signal = await stopped;
  // A second signal while draining means "now": skip the rest of the grace period.
  const force = () => {
    process.stderr.write('troupe: second signal, exiting without waiting for running attempts\n');
    void server.close().finally(() => process.exit(EXIT.FAILED));
  };
  process.once('SIGINT', force);
  process.once('SIGTERM', force);
  if (!options.json) process.stderr.write(`troupe: ${signal}, closing (running attempts get ${options.closeTimeoutMs} ms)\n`);
  server.stopAccepting();
  let failure: unknown;
  try {
    await rt.close({ timeoutMs: options.closeTimeoutMs });
  } catch (error) {
    failure = error;
  }
  await server.close();
  if (failure !== undefined) throw failure;
  if (options.json) process.stdout.write(`${JSON.stringify({ event: 'closed', signal })}\n`);
  else process.stdout.write('troupe stopped\n');
  return EXIT.OK;
}

/**
 * The data dir of a runtime on PostgreSQL, which holds only its socket, made as LMDB's runtime
 * makes its own: with any missing parents, `0700`; one that exists keeps its mode (it may be the
 * user's choice), and a mode that lets group or others in is warned about, not refused.
 */
function prepareDataDir(dataDir: string, logger: Logger): void {
  makePrivateDir(dataDir);
  for (const found of findLooseModes(dataDir)) logger.warn(found, looseModeWarning(found));
}

/**
 * `troupe dashboard`: the dashboard of the runtime running in the data dir (its URL, when it
 * serves one), or, with none running, a runtime of no agents on the dir that serves it until
 * SIGINT or SIGTERM: tasks can be seen, cancelled, retried and answered, and run once `troupe run`
 * takes the dir again. With `store` (TROUPE_STORE), that runtime runs on PostgreSQL (a node of the
 * cluster with no agents); without, the dir must hold a store already (NO_DATA_DIR): a new empty
 * one would show nothing, and a dir a runtime on PostgreSQL used holds none.
 */
export async function serveDashboardCommand(options: Pick<RunOptions, 'dataDir' | 'store' | 'json' | 'closeTimeoutMs'> & { dashboard: NonNullable<RunOptions['dashboard']>; /** --port or --host was given. */ given: boolean }): Promise<number> {
  const socket = socketPathOf(options.dataDir);
  const running = await connectAnswering(socket).catch((error: unknown) => {
    if ((error as { code?: unknown }).code === 'NOT_ANSWERING') throw error;
    return undefined;
  });
  if (running) {
    try {
      const url = (await running.call('dashboard', {})) as string | null;
      if (url === null) throw new CliError('NO_DASHBOARD', `the runtime running in ${options.dataDir} serves no dashboard: start it with \`troupe run --dashboard\``, EXIT.FAILED);
      if (options.given && !options.json) process.stderr.write('troupe: a runtime is running there: --port and --host apply only when this command serves the dashboard itself\n');
      process.stdout.write(options.json ? `${JSON.stringify({ event: 'dashboard', url })}\n` : `troupe dashboard: ${url}\n`);
      return EXIT.OK;
    } finally {
      await running.close();
    }
  }
  const { given: _given, ...serve } = options;
  if (serve.store === undefined) assertDataDir(options.dataDir);
  // No agents: one thread, which nothing is ever dispatched to, will do.
  return runServe({ ...serve, agentsDir: undefined, threads: 1, logLevel: 'warn' });
}
