/**
 * troupe/testing's in-thread agents: one "thread" served in the host's own thread, over the same
 * channel a worker thread serves (actors/worker.ts `serveInThread`), so attempts, contexts, inputs,
 * spawns, joins, logs and progress behave as on a worker thread. Agents given as functions run
 * there; agents registered by module are imported there. A stuck agent cannot be preempted (there
 * is no thread to terminate), and an error it leaves uncaught is the host process's.
 */
import type { ThreadHello } from '../../actors/wire.js';
import type { AgentFunction } from '../../actors/agent.js';
import { createChannelPool, type AgentPool, type PiscinaPoolOptions, type ThreadSource } from './pool.js';

/** What the worker module exports for a thread served in place. */
interface InThreadWorker {
  serveInThread(agents: ReadonlyMap<string, AgentFunction>): ThreadHello;
  closeInThread(): void;
}

/** Each in-thread pool gets a module instance of the worker of its own: a thread's state is that module's. */
let instances = 0;

/** A pool of one thread served in this one; `agents` maps module strings to the functions they stand for. */
export function createInThreadPool(options: PiscinaPoolOptions, agents: ReadonlyMap<string, AgentFunction>): AgentPool {
  const worker = import(`../../actors/worker.js?in-thread=${++instances}`) as Promise<InThreadWorker>;
  let closed = false;
  const source: ThreadSource = {
    onHello(listener) {
      worker
        .then((w) => {
          if (!closed) listener(w.serveInThread(agents));
        })
        // Nothing will run: say why rather than leave attempts waiting for a thread in silence.
        .catch((error: unknown) => options.onError?.(error instanceof Error ? error : new Error(String(error))));
    },
    // The host's own thread is not ended: a stuck agent keeps its attempt until close.
    terminate: async () => undefined,
    loading: (ready) => !closed && !ready.has(0),
    async destroy() {
      closed = true;
      (await worker).closeInThread();
    },
  };
  return createChannelPool({ ...options, threads: 1 }, source);
}
