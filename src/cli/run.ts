/**
 * `troupe run`: starts a runtime on a data dir, registers every `<name>.agent.js` in the agents dir
 * as agent `<name>`, serves the control socket, and closes gracefully on SIGINT or SIGTERM.
 */
import { readdirSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { pino } from 'pino';
import { createRuntime } from '../create-runtime.js';
import type { AgentRegistration } from '../agents/registry.js';
import { CliError, EXIT, usageError } from './cli-error.js';
import { preparePrivateDir, socketPathOf } from './control.js';
import { runtimeMethods } from './methods.js';
import { startControlServer } from './server.js';

/** Options of {@link runServe}. */
export interface RunOptions {
  /** Absolute data dir; created if missing. */
  dataDir: string;
  /** Absolute agents dir. */
  agentsDir: string;
  threads?: number;
  slotsPerThread?: number;
  /** pino level of the runtime's own log, written to stderr. */
  logLevel: string;
  json: boolean;
  /** How long running attempts may finish on shutdown. */
  closeTimeoutMs: number;
}

const AGENT_FILE = /^(.+)\.agent\.js$/;

/** Agent registrations for every `*.agent.js` directly inside `dir`, sorted by name. */
export function agentsIn(dir: string): AgentRegistration[] {
  let names: string[];
  try {
    if (!statSync(dir).isDirectory()) throw usageError(`--agents ${dir} is not a directory`);
    names = readdirSync(dir);
  } catch (error) {
    if (error instanceof CliError) throw error;
    throw usageError(`--agents ${dir}: ${(error as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such directory' : (error as Error).message}`);
  }
  return names
    .map((file) => AGENT_FILE.exec(file))
    .filter((match): match is RegExpExecArray => match !== null)
    .map((match) => ({ name: match[1]!, module: pathToFileURL(join(dir, match[0])) }))
    .sort((a, b) => a.name.localeCompare(b.name));
}

/** Runs until SIGINT or SIGTERM; resolves with the exit code once closed. */
export async function runServe(options: RunOptions): Promise<number> {
  if (options.logLevel !== 'silent' && !(options.logLevel in pino.levels.values)) {
    throw usageError(`--log-level must be one of silent, ${Object.keys(pino.levels.values).join(', ')}`);
  }
  const agents = agentsIn(options.agentsDir);
  const logger = pino({ name: 'troupe', level: options.logLevel }, pino.destination({ dest: 2, sync: true }));
  const rt = await createRuntime({ dataDir: options.dataDir, threads: options.threads, slotsPerThread: options.slotsPerThread, logger, agents });
  const socket = socketPathOf(options.dataDir);
  let server;
  try {
    // A socket outside the data dir (its path would be too long) goes in a directory as private as the data dir.
    if (dirname(socket) !== options.dataDir) preparePrivateDir(dirname(socket));
    server = await startControlServer(runtimeMethods(rt, { dataDir: options.dataDir, socket }), socket);
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
  const names = agents.map((a) => a.name);
  if (options.json) process.stdout.write(`${JSON.stringify({ event: 'running', pid: process.pid, agents: names, dataDir: options.dataDir, socket })}\n`);
  else process.stdout.write(`troupe running: ${names.length} agents, data dir ${options.dataDir}, socket ${socket}\n`);

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
