/**
 * How a command reaches a data dir: the control socket of a running `troupe run` first; when none
 * answers, the data dir opened in this process with no agents registered, so nothing dispatches.
 * That open is LMDB's only: a runtime on PostgreSQL keeps nothing in the data dir, and a command
 * does not join the cluster as a node of its own. The runtime is imported lazily: a command served
 * over the socket never loads it.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { CliError, EXIT, noDataDir, notRunning } from './cli-error.js';
import { connectAnswering, socketPathOf, type Backend } from './control.js';
import type { MethodTable } from './methods.js';
import type { Runtime } from '../api/runtime.js';
import type { AgentPool } from '../pool/pool.js';

/** How long a direct open retries a locked data dir before reporting NOT_ANSWERING. */
const LOCK_RETRY_MS = 1_000;

/** Throws NO_DATA_DIR (exit 2) unless `dataDir` (absolute) holds a Troupe store. */
export function assertDataDir(dataDir: string): void {
  if (!hasStore(dataDir)) throw noDataDir(dataDir);
}

function hasStore(dataDir: string): boolean {
  return existsSync(join(dataDir, 'data.mdb'));
}

/**
 * Opens a backend for `dataDir` (absolute). With `live`, only a running runtime will do: when none
 * answers this throws NOT_RUNNING, whether or not the dir holds a store (a runtime would have made
 * one), instead of opening the dir.
 */
export async function openBackend(dataDir: string, options: { live: boolean }): Promise<Backend> {
  const socket = socketPathOf(dataDir);
  try {
    return await connectAnswering(socket);
  } catch (error) {
    // Nothing listens there: no socket file (or no dir: ENOTDIR for a file), or a dead runtime's.
    // Refused on purpose (a socket that is not this user's: exit 1), or a runtime that does not answer.
    if (error instanceof CliError) throw error;
    const code = (error as NodeJS.ErrnoException).code;
    if (code !== 'ENOENT' && code !== 'ENOTDIR' && code !== 'ECONNREFUSED') {
      throw new CliError('CONTROL_FAILED', `cannot connect to ${socket}: ${(error as Error).message}`, EXIT.NO_RUNTIME);
    }
  }
  if (options.live) throw notRunning(dataDir);
  // With TROUPE_STORE set, the runtimes of this dir run on PostgreSQL: say that one must run,
  // not that the dir holds no store (it never will).
  if (process.env.TROUPE_STORE && !hasStore(dataDir)) throw notRunning(dataDir, { postgres: true });
  assertDataDir(dataDir);
  // LMDB's runtime whatever TROUPE_STORE says: this opens the store the data dir holds.
  const [{ createLmdbRuntime }, { runtimeMethods }] = await Promise.all([import('../create-runtime.js'), import('./methods.js')]);
  // Another command may hold the dir for a moment, or `troupe run` may be between taking the dir and
  // listening: retry briefly before deciding that a runtime holds it without answering.
  const deadline = Date.now() + LOCK_RETRY_MS;
  for (let delay = 25; ; delay = Math.min(delay * 2, 200)) {
    try {
      const rt = await createLmdbRuntime({ dataDir, logger: false, threads: 1, slotsPerThread: 1, createPool: idlePool });
      return new DirectBackend(rt, runtimeMethods(rt));
    } catch (error) {
      if ((error as { code?: unknown }).code !== 'DATA_DIR_LOCKED') throw error;
      if (Date.now() + delay > deadline) {
        throw new CliError('NOT_ANSWERING', `a runtime holds ${dataDir} but does not answer on ${socket}`, EXIT.NO_RUNTIME);
      }
    }
    await new Promise((resolve) => setTimeout(resolve, delay));
    const live = await connectAnswering(socket).catch((error: unknown) => {
      if (error instanceof CliError) throw error;
      return undefined;
    });
    if (live) return live;
  }
}

/**
 * The methods of a runtime opened in this process. Results go through JSON, as over the socket,
 * so every command prints the same either way.
 */
class DirectBackend implements Backend {
  readonly mode = 'direct' as const;
  readonly #rt: Runtime;
  readonly #methods: MethodTable;
  readonly #abort = new AbortController();

  constructor(rt: Runtime, methods: MethodTable) {
    this.#rt = rt;
    this.#methods = methods;
  }

  async call(method: string, params: Record<string, unknown> = {}): Promise<unknown> {
    const unary = this.#methods.unary[method];
    if (!unary) throw new CliError('INVALID_INPUT', `unknown method ${JSON.stringify(method)}`);
    return roundTrip(await unary(params, this.#abort.signal));
  }

  async *stream(method: string, params: Record<string, unknown>, signal?: AbortSignal): AsyncGenerator<unknown> {
    const stream = this.#methods.streams[method];
    if (!stream) throw new CliError('INVALID_INPUT', `unknown method ${JSON.stringify(method)}`);
    const combined = signal ? AbortSignal.any([signal, this.#abort.signal]) : this.#abort.signal;
    for await (const item of stream(params, combined)) {
      if (combined.aborted) return;
      yield roundTrip(item);
    }
  }

  async close(): Promise<void> {
    this.#abort.abort();
    await this.#rt.close({ timeoutMs: 5_000 });
  }
}

/**
 * The pool of a directly opened dir: no threads. No agent is registered there, so nothing is ever
 * dispatched to it; starting real worker threads would only slow every command down.
 */
function idlePool(): AgentPool {
  return {
    threads: 1,
    send: () => {
      throw new Error('no agent runs in a data dir opened directly');
    },
    abort: async () => ({ foundIn: undefined, unresponsive: [] }),
    terminate: async () => undefined,
    connect: () => undefined,
    destroy: async () => undefined,
  };
}

function roundTrip(value: unknown): unknown {
  return value === undefined ? null : JSON.parse(JSON.stringify(value));
}
