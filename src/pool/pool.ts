/**
 * The agent pool: Piscina threads are the agent slots. Each thread opens one long-lived channel to
 * the host when it starts (actors/worker.ts), and serves it: the host sends a thread the attempts it
 * hands it in one turn as one message, and the thread sends back what its attempts did in one turn
 * as one message, in order, so an attempt's log lines always arrive before its outcome. Piscina
 * still owns the threads: it spawns them and replaces one that dies. A dead thread's channel
 * closes, which tells the pool which attempts died with it.
 *
 * Aborts go through the channel (cooperative, comlink); a thread that does not answer within the
 * grace period is terminated (hard).
 */
import type { Worker } from 'node:worker_threads';
import { Piscina } from 'piscina';
import { wrap, releaseProxy, type Remote } from 'comlink/dist/esm/comlink.mjs';
import { ThreadChannel } from '../../actors/channel.js';
import { clearLongTimeout, setLongTimeout, type LongTimeout } from '../../actors/long-timeout.js';
import { isThreadHello, type AbortReason, type AttemptRequest, type HostReply, type WorkerControl, type WorkerMessage } from '../../actors/wire.js';

/** The small interface the runtime needs from a pool; tests may fake it. */
export interface AgentPool {
  /** Hands an attempt to the thread with the fewest; all handed out in one turn go as one message per thread. */
  send(request: AttemptRequest): void;
  /** Receives what each thread sent in one turn, in order, with the thread's id. */
  onMessages(handler: (messages: readonly WorkerMessage[], threadId: number) => void): void;
  /** A thread died (exit, uncaught error, terminate) under these attempts, which had not ended: an infrastructure fault. */
  onThreadExit(handler: (attemptIds: readonly string[], reason: string) => void): void;
  /**
   * Aborts an attempt through every thread's channel. Resolves with the thread that had it and the
   * ids of threads that did not answer within `answerWithinMs` (blocked threads).
   */
  abort(attemptId: string, token: number, reason: AbortReason, answerWithinMs: number): Promise<AbortOutcome>;
  /** Terminates threads by id (hard preemption); Piscina replaces them. */
  terminate(threadIds: readonly number[]): Promise<void>;
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

/** Options of {@link createPiscinaPool}. */
export interface PiscinaPoolOptions {
  threads: number;
  slotsPerThread: number;
  /** Worker entry; defaults to the built actors/worker-entry.cjs next to this package (it imports worker.js). */
  workerUrl?: URL;
  onError?: (error: Error) => void;
}

/** How long, and how many, aborts are replayed to a thread that becomes ready late. */
const RECENT_ABORT_MS = 60_000;
const RECENT_ABORTS_LIMIT = 256;
/** How long destroy() waits for threads still loading (that have not said hello). */
const LOAD_WAIT_MS = 2_000;

/** The host's end of one thread's channel. */
interface Link {
  readonly channel: ThreadChannel;
  readonly control: Remote<WorkerControl>;
  readonly threadId: number;
  /** Attempts handed to this thread that have not ended. */
  readonly attempts: Set<string>;
  /** Attempts to send at the end of this turn. */
  outbox: AttemptRequest[];
  alive: boolean;
}

/** Creates the Piscina-backed pool. */
export function createPiscinaPool(options: PiscinaPoolOptions): AgentPool {
  const workerUrl = options.workerUrl ?? new URL('../../actors/worker-entry.cjs', import.meta.url);
  const piscina = new Piscina({
    filename: workerUrl.href,
    minThreads: options.threads,
    maxThreads: options.threads,
    // No Piscina task is ever posted (attempts go through the channels); threads never idle out.
    idleTimeout: Number.MAX_SAFE_INTEGER,
    // With atomics an idle Piscina thread blocks in Atomics.wait for its next task, so its event
    // loop, and with it the channel, would stall.
    atomics: 'disabled',
  });
  const links = new Set<Link>();
  let onMessages: (messages: readonly WorkerMessage[], threadId: number) => void = () => undefined;
  let onThreadExit: (attemptIds: readonly string[], reason: string) => void = () => undefined;
  let flushQueued = false;
  let destroyed = false;

  /** Aborts sent lately, replayed to a thread that says hello later (it may get a waiting attempt). */
  const recentAborts: Array<{ attemptId: string; token: number; reason: AbortReason; at: number }> = [];

  /** Attempts handed out before any thread said hello: sent once one does. */
  let waiting: AttemptRequest[] = [];

  piscina.on('message', (message: unknown) => {
    if (!isThreadHello(message)) return;
    const channel = new ThreadChannel(message.port);
    const link: Link = { channel, control: wrap<WorkerControl>(channel.rpc as never), threadId: message.threadId, attempts: new Set(), outbox: [], alive: true };
    links.add(link);
    channel.onEvent((traffic) => {
      if (traffic.t !== 'batch') return;
      for (const m of traffic.messages) if (m.t === 'end') link.attempts.delete(m.attemptId);
      onMessages(traffic.messages, link.threadId);
    });
    // A thread that dies (exit, uncaught error, terminate) closes its end of the channel.
    channel.onClose(() => lose(link, 'worker thread died'));
    const since = Date.now() - RECENT_ABORT_MS;
    for (const abort of recentAborts) if (abort.at >= since) link.control.abort(abort.attemptId, abort.token, abort.reason).catch(() => false);
    if (waiting.length > 0) {
      const queued = waiting;
      waiting = [];
      for (const request of queued) send(request);
    }
  });

  /** A thread is gone: its unfinished attempts died with it (Piscina starts a replacement, which says hello). */
  function lose(link: Link, reason: string): void {
    if (!link.alive) return;
    link.alive = false;
    links.delete(link);
    link.control[releaseProxy]();
    link.channel.close();
    const lost = [...link.attempts];
    link.attempts.clear();
    link.outbox = [];
    if (lost.length > 0 && !destroyed) onThreadExit(lost, reason);
  }

  function send(request: AttemptRequest): void {
    let best: Link | undefined;
    for (const link of links) if (!best || link.attempts.size < best.attempts.size) best = link;
    if (!best) {
      waiting.push(request);
      return;
    }
    best.attempts.add(request.attemptId);
    best.outbox.push(request);
    if (!flushQueued) {
      flushQueued = true;
      setImmediate(flush);
    }
  }

  function flush(): void {
    flushQueued = false;
    for (const link of links) {
      if (link.outbox.length === 0) continue;
      link.channel.post({ t: 'start', requests: link.outbox, slots: options.slotsPerThread });
      link.outbox = [];
    }
  }

  // Piscina emits 'error' for a worker that fails with no task attached; unhandled it would crash the host.
  piscina.on('error', (error: Error) => options.onError?.(error));

  return {
    threads: options.threads,
    send,
    onMessages(handler) {
      onMessages = handler;
    },
    onThreadExit(handler) {
      onThreadExit = handler;
    },
    async abort(attemptId, token, reason, answerWithinMs) {
      // An attempt no thread has yet (none said hello) is simply not sent: it ends aborted.
      const held = waiting.findIndex((r) => r.attemptId === attemptId && r.token === token);
      if (held >= 0) {
        waiting.splice(held, 1);
        const end: WorkerMessage = { t: 'end', attemptId, token, result: { ok: false, error: { code: 'ABORTED', message: `attempt ${reason} before it ran`, retryable: true, fault: 'infrastructure' } } };
        queueMicrotask(() => onMessages([end], -1));
        return { foundIn: undefined, unresponsive: [] };
      }
      // Starts still in an outbox go first: an abort must never overtake its attempt's start.
      flush();
      recentAborts.push({ attemptId, token, reason, at: Date.now() });
      if (recentAborts.length > RECENT_ABORTS_LIMIT) recentAborts.splice(0, recentAborts.length - RECENT_ABORTS_LIMIT);
      const unresponsive: number[] = [];
      let foundIn: number | undefined;
      await Promise.all(
        [...links].map(async (link) => {
          let timer: LongTimeout | undefined;
          const answer = await Promise.race([
            link.control.abort(attemptId, token, reason).catch(() => false),
            new Promise<'late'>((resolve) => (timer = setLongTimeout(() => resolve('late'), answerWithinMs, { unref: true }))),
          ]);
          clearLongTimeout(timer);
          if (answer === 'late') unresponsive.push(link.threadId);
          else if (answer) foundIn = link.threadId;
        }),
      );
      // The thread it was handed to, even if that thread did not say it has it (it may be stuck).
      if (foundIn === undefined) for (const link of links) if (link.attempts.has(attemptId)) foundIn = link.threadId;
      return { foundIn, unresponsive };
    },
    async terminate(threadIds) {
      const wanted = new Set(threadIds);
      await Promise.all(piscina.threads.filter((w: Worker) => wanted.has(w.threadId)).map((w: Worker) => w.terminate()));
    },
    reply(threadId, reply) {
      for (const link of links) if (link.threadId === threadId) link.channel.post(reply);
    },
    async destroy() {
      destroyed = true;
      // Node 20 aborts the process when a thread is terminated while it loads an ES module; let
      // threads that have not said `ready` finish loading first (bounded).
      const until = Date.now() + LOAD_WAIT_MS;
      const loading = () => piscina.threads.some((w: Worker) => ![...links].some((l) => l.threadId === w.threadId));
      while (loading() && Date.now() < until) await new Promise((resolve) => setTimeout(resolve, 10));
      for (const link of [...links]) {
        link.alive = false;
        link.control[releaseProxy]();
        link.channel.close();
      }
      links.clear();
      await piscina.destroy();
    },
  };
}
