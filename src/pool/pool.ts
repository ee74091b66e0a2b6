/**
 * The agent pool: Piscina threads are the agent slots. Each thread opens one long-lived channel to
 * the host when it starts (posted through `parentPort`, re-emitted by Piscina as `'message'`); the
 * host wraps the thread's control API with comlink and receives its fire-and-forget messages.
 *
 * Piscina never gives an abortable task a thread it must share, so aborts go through the channel
 * (cooperative), and a thread that does not answer within the grace period is terminated (hard).
 */
import { Piscina } from 'piscina';
import { wrap, releaseProxy, type Remote } from 'comlink/dist/esm/comlink.mjs';
import type { Worker } from 'node:worker_threads';
import { ThreadChannel } from '../../actors/channel.js';
import { clearLongTimeout, setLongTimeout, type LongTimeout } from '../../actors/long-timeout.js';
import { isThreadHello, type AbortReason, type AttemptRequest, type HostReply, type WireResult, type WorkerControl, type WorkerMessage } from '../../actors/wire.js';

/** The small interface the runtime needs from a pool; tests may fake it. */
export interface AgentPool {
  /** Runs one attempt; rejects with {@link ThreadCrashError} if the thread dies under it. */
  run(request: AttemptRequest): Promise<WireResult>;
  /**
   * Aborts an attempt through every thread's channel. Resolves with the thread that had it and the
   * ids of threads that did not answer within `answerWithinMs` (blocked threads).
   */
  abort(attemptId: string, token: number, reason: AbortReason, answerWithinMs: number): Promise<AbortOutcome>;
  /** Terminates threads by id (hard preemption); Piscina replaces them. */
  terminate(threadIds: readonly number[]): Promise<void>;
  /** Receives the fire-and-forget messages of every thread, with the id of the thread that sent it. */
  onMessage(handler: (message: WorkerMessage, threadId: number) => void): void;
  /** Answers an agent call on the thread that made it (dropped if that thread is gone). */
  reply(threadId: number, reply: HostReply): void;
  readonly threads: number;
  destroy(): Promise<void>;
}

/** What {@link AgentPool.abort} found. */
export interface AbortOutcome {
  /** The thread that was running the attempt, if one answered that it was. */
  foundIn: number | undefined;
  /** Threads that did not answer in time: blocked, possibly by this attempt. */
  unresponsive: number[];
}

/** The thread running an attempt died (exit, uncaught error, terminate). An infrastructure fault. */
export class ThreadCrashError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ThreadCrashError';
  }
}

/** Options of {@link createPiscinaPool}. */
export interface PiscinaPoolOptions {
  threads: number;
  slotsPerThread: number;
  /** Worker entry; defaults to the built actors/worker-entry.cjs next to this package (it imports worker.js). */
  workerUrl?: URL;
  onError?: (error: Error) => void;
}

/** Parked attempts one thread can hold beyond its slots. */
const PARKED_HEADROOM = 256;

/** How long, and how many, aborts are replayed to a thread that registers late. */
const RECENT_ABORT_MS = 60_000;
const RECENT_ABORTS_LIMIT = 256;

interface ThreadEntry {
  channel: ThreadChannel;
  control: Remote<WorkerControl>;
}

/** Creates the Piscina-backed pool. */
export function createPiscinaPool(options: PiscinaPoolOptions): AgentPool {
  const workerUrl = options.workerUrl ?? new URL('../../actors/worker-entry.cjs', import.meta.url);
  const piscina = new Piscina({
    filename: workerUrl.href,
    minThreads: options.threads,
    maxThreads: options.threads,
    // Headroom for attempts parked on the host (waiting for an input or a join): they give their
    // slot back, but their Piscina task stays open. The dispatcher keeps running ones to the slots.
    concurrentTasksPerWorker: options.slotsPerThread + PARKED_HEADROOM,
    idleTimeout: Number.MAX_SAFE_INTEGER,
  });
  const threads = new Map<number, ThreadEntry>();
  let onMessage: (message: WorkerMessage, threadId: number) => void = () => undefined;

  /**
   * Aborts sent lately. Piscina may hand a thread its task before the host has seen that thread's
   * hello, so an abort broadcast then would miss it: a thread that registers late gets these too
   * (the worker remembers an abort that comes before its attempt).
   */
  const recentAborts: Array<{ attemptId: string; token: number; reason: AbortReason; at: number }> = [];

  piscina.on('message', (message: unknown) => {
    if (!isThreadHello(message)) return;
    const channel = new ThreadChannel(message.port);
    const threadId = message.threadId;
    channel.onEvent((m) => onMessage(m as WorkerMessage, threadId));
    const control = wrap<WorkerControl>(channel.rpc as never);
    threads.set(message.threadId, { channel, control });
    const since = Date.now() - RECENT_ABORT_MS;
    for (const abort of recentAborts) if (abort.at >= since) control.abort(abort.attemptId, abort.token, abort.reason).catch(() => false);
  });
  piscina.on('workerDestroy', () => {
    const alive = new Set(piscina.threads.map((w: Worker) => w.threadId));
    for (const [id, entry] of threads) {
      if (alive.has(id)) continue;
      threads.delete(id);
      entry.control[releaseProxy]();
      entry.channel.close();
    }
  });
  // Piscina emits 'error' for a worker that fails with no task attached; unhandled it would crash the host.
  piscina.on('error', (error: Error) => options.onError?.(error));

  return {
    threads: options.threads,
    run(request) {
      return piscina.run(request).catch((error: unknown) => {
        throw new ThreadCrashError(`worker thread died during attempt ${request.attemptId}: ${(error as Error)?.message ?? String(error)}`, { cause: error });
      }) as Promise<WireResult>;
    },
    async abort(attemptId, token, reason, answerWithinMs) {
      recentAborts.push({ attemptId, token, reason, at: Date.now() });
      if (recentAborts.length > RECENT_ABORTS_LIMIT) recentAborts.splice(0, recentAborts.length - RECENT_ABORTS_LIMIT);
      const unresponsive: number[] = [];
      let foundIn: number | undefined;
      await Promise.all(
        [...threads].map(async ([threadId, entry]) => {
          let timer: LongTimeout | undefined;
          const answer = await Promise.race([
            entry.control.abort(attemptId, token, reason).catch(() => false),
            new Promise<'late'>((resolve) => (timer = setLongTimeout(() => resolve('late'), answerWithinMs, { unref: true }))),
          ]);
          clearLongTimeout(timer);
          if (answer === 'late') unresponsive.push(threadId);
          else if (answer) foundIn = threadId;
        }),
      );
      return { foundIn, unresponsive };
    },
    async terminate(threadIds) {
      const wanted = new Set(threadIds);
      await Promise.all(piscina.threads.filter((w: Worker) => wanted.has(w.threadId)).map((w: Worker) => w.terminate()));
    },
    onMessage(handler) {
      onMessage = handler;
    },
    reply(threadId, reply) {
      threads.get(threadId)?.channel.post(reply);
    },
    async destroy() {
      for (const entry of threads.values()) {
        entry.control[releaseProxy]();
        entry.channel.close();
      }
      threads.clear();
      await piscina.destroy();
    },
  };
}
