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
import { expose, wrap, releaseProxy, type Remote } from 'comlink/dist/esm/comlink.mjs';
import { ThreadChannel } from '../../actors/channel.js';
import { clearLongTimeout, setLongTimeout, type LongTimeout } from '../../actors/long-timeout.js';
import {
  isThreadHello,
  Report,
  REPORT_STRIDE,
  START_STRIDE,
  type AbortReason,
  type AgentCall,
  type AttemptRequest,
  type CallAnswer,
  type HostApi,
  type StartBatch,
  type ThreadHello,
  type WireLogLine,
  type WireResult,
  type WorkerBatch,
  type WorkerControl,
} from '../../actors/wire.js';
import { arrayForBatch } from '../allocation.js';
import { ChurnSet } from '../collections.js';

/** The small interface the runtime needs from a pool; tests may fake it. */
export interface AgentPool {
  /** Hands an attempt whose start is durable to the thread with the fewest; all handed out in one turn go as one batch per thread. */
  send(request: AttemptRequest): void;
  /** Where the threads' reports and calls go (set once, before the first send). */
  connect(host: PoolHost): void;
  /**
   * Aborts an attempt through every thread's channel. Resolves with the thread that had it and the
   * ids of threads that did not answer within `answerWithinMs` (blocked threads).
   */
  abort(attemptId: string, token: number, reason: AbortReason, answerWithinMs: number): Promise<AbortOutcome>;
  /** Terminates threads by id (hard preemption); Piscina replaces them. */
  terminate(threadIds: readonly number[]): Promise<void>;
  readonly threads: number;
  destroy(): Promise<void>;
}

/**
 * What the threads tell the host, one call per report, in the order each thread sent them. Every
 * report names its attempt and fencing token; a report of an attempt that is no longer current is
 * the host's to reject.
 */
export interface PoolHost {
  /** A thread took the attempt from its queue and runs it now. */
  began(attemptId: string, token: number, at: number): void;
  /** The attempt ended: its outcome. `ran` is false for one aborted while still queued on its thread. */
  ended(attemptId: string, token: number, result: WireResult, ran: boolean): void;
  log(attemptId: string, token: number, lines: WireLogLine[]): void;
  progress(attemptId: string, token: number, value: number, message: string | undefined, at: number): void;
  heartbeat(attemptId: string, token: number, at: number): void;
  /** An agent's uncaught error that failed no attempt (see Report.STRAY); `attemptId` is '' when unknown. */
  stray(attemptId: string, message: string): void;
  /** This attempt's code is ending its thread with `code` (see Report.EXIT); {@link PoolHost.threadExit} follows. */
  exiting(attemptId: string, token: number, code: number): void;
  /** An agent's call; the answer goes back to its thread. */
  call(attemptId: string, token: number, call: AgentCall): Promise<CallAnswer>;
  /** A thread died (exit, uncaught error, terminate) under these attempts, which had not ended: an infrastructure fault. */
  threadExit(attemptIds: readonly string[], reason: string): void;
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
  /** How often a thread heartbeats each running attempt. */
  heartbeatMs: number;
  /** Worker entry; defaults to the built actors/worker-entry.cjs next to this package (it imports worker.js). */
  workerUrl?: URL;
  onError?: (error: Error) => void;
}

/** A successful result with no output, shared (results are never mutated). */
const NO_OUTPUT: WireResult = { ok: true, result: { kind: 'success' } };

/** Hands each report of a thread's batch to the host. */
export function deliver(host: PoolHost, batch: WorkerBatch, ended: (attemptId: string) => void): void {
  for (let i = 0; i < batch.length; i += REPORT_STRIDE) {
    const attemptId = batch[i + 1] as string;
    const token = batch[i + 2] as number;
    const payload = batch[i + 3];
    switch (batch[i]) {
      case Report.BEGIN:
        host.began(attemptId, token, payload as number);
        break;
      case Report.OUTPUT:
        ended(attemptId);
        host.ended(attemptId, token, payload === undefined ? NO_OUTPUT : { ok: true, result: { kind: 'success', output: payload } }, true);
        break;
      case Report.END:
        ended(attemptId);
        host.ended(attemptId, token, payload as WireResult, true);
        break;
      case Report.DROPPED:
        ended(attemptId);
        host.ended(attemptId, token, droppedResult(payload as AbortReason), false);
        break;
      case Report.LOG:
        host.log(attemptId, token, payload as WireLogLine[]);
        break;
      case Report.PROGRESS: {
        const [value, message, at] = payload as [number, string | undefined, number];
        host.progress(attemptId, token, value, message, at);
        break;
      }
      case Report.STRAY:
        host.stray(attemptId, payload as string);
        break;
      case Report.EXIT:
        host.exiting(attemptId, token, payload as number);
        break;
      case Report.HEARTBEAT:
        host.heartbeat(attemptId, token, payload as number);
        break;
    }
  }
}

/** The outcome of an attempt aborted before it ran. */
export function droppedResult(reason: AbortReason): WireResult {
  return { ok: false, error: { code: 'ABORTED', message: `attempt ${reason} before it ran`, retryable: true, fault: 'infrastructure' } };
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
  readonly attempts: ChurnSet<string>;
  /** Agents this thread has been told of (by their number). */
  readonly agents: Set<number>;
  /** The batch to send at the end of this turn. */
  outbox: StartBatch | undefined;
  alive: boolean;
}

/**
 * Where a pool's threads come from: each says hello once it serves its channel. Piscina's threads
 * (below), or troupe/testing's one "thread" served in the host's own (src/pool/in-thread.ts).
 */
export interface ThreadSource {
  onHello(listener: (hello: ThreadHello) => void): void;
  /** Ends these threads (hard preemption); the source replaces them. */
  terminate(threadIds: ReadonlySet<number>): Promise<void>;
  /** Whether a thread started that has not said hello among `ready`. */
  loading(ready: ReadonlySet<number>): boolean;
  destroy(): Promise<void>;
}

/** Creates the Piscina-backed pool. */
export function createPiscinaPool(options: PiscinaPoolOptions): AgentPool {
  return createChannelPool(options, piscinaThreads(options));
}

/** Piscina's threads, kept at `threads` (a dead one is replaced, and its replacement says hello). */
function piscinaThreads(options: PiscinaPoolOptions): ThreadSource {
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
  // Piscina emits 'error' for a worker that fails with no task attached; unhandled it would crash the host.
  piscina.on('error', (error: Error) => options.onError?.(error));
  return {
    onHello: (listener) => piscina.on('message', (message: unknown) => isThreadHello(message) && listener(message)),
    async terminate(threadIds) {
      await Promise.all(piscina.threads.filter((w: Worker) => threadIds.has(w.threadId)).map((w: Worker) => w.terminate()));
    },
    loading: (ready) => piscina.threads.some((w: Worker) => !ready.has(w.threadId)),
    destroy: () => piscina.destroy(),
  };
}

/** A pool over the channels of the threads `source` gives. */
export function createChannelPool(options: Pick<PiscinaPoolOptions, 'threads' | 'slotsPerThread' | 'heartbeatMs'>, source: ThreadSource): AgentPool {
  const links = new Set<Link>();
  let host: PoolHost | undefined;
  let flushQueued = false;
  let destroyed = false;
  /** Agents by `name\0module`: the number every thread knows each by. */
  const agentIndex = new Map<string, number>();

  /** Aborts sent lately, replayed to a thread that says hello later (it may get a waiting attempt). */
  const recentAborts: Array<{ attemptId: string; token: number; reason: AbortReason; at: number }> = [];

  /** Attempts handed out before any thread said hello: sent once one does. */
  let waiting: AttemptRequest[] = [];

  source.onHello((message) => {
    const channel = new ThreadChannel(message.port);
    const link: Link = { channel, control: wrap<WorkerControl>(channel.rpc('a') as never), threadId: message.threadId, attempts: new ChurnSet<string>(), agents: new Set(), outbox: undefined, alive: true };
    links.add(link);
    const ended = (attemptId: string) => link.attempts.delete(attemptId);
    channel.onBatch((batch) => host && deliver(host, batch as WorkerBatch, ended));
    const api: HostApi = {
      call: (attemptId: string, token: number, call: AgentCall): Promise<CallAnswer> =>
        host ? host.call(attemptId, token, call) : Promise.resolve({ ok: false, error: { code: 'CLOSED', message: 'the runtime is closing' } }),
    };
    expose(api, channel.rpc('h') as never);
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
    link.outbox = undefined;
    if (lost.length > 0 && !destroyed) host?.threadExit(lost, reason);
  }

  function send(request: AttemptRequest): void {
    let best: Link | undefined;
    for (const link of links) if (!best || link.attempts.size < best.attempts.size) best = link;
    if (!best) {
      waiting.push(request);
      return;
    }
    best.attempts.add(request.attemptId);
    const batch = (best.outbox ??= new Outbox(options.slotsPerThread, options.heartbeatMs));
    const agent = agentNumber(request.agent, request.module);
    if (!best.agents.has(agent)) {
      best.agents.add(agent);
      (batch.agents ??= []).push([agent, request.agent, request.module]);
    }
    if (request.traceparent !== undefined) (batch.traces ??= []).push(batch.starts.length / START_STRIDE, request.traceparent, request.tracestate);
    batch.starts.push(agent, request.taskId, request.run, request.attempt, request.token, request.input, request.workspace, request.followUp);
    if (!flushQueued) {
      flushQueued = true;
      setImmediate(flush);
    }
  }

  /** The number every thread knows an agent by (the last one asked is remembered: runs of one agent are the rule). */
  let last: { name: string; module: string; index: number } | undefined;
  function agentNumber(name: string, module: string): number {
    if (last !== undefined && last.name === name && last.module === module) return last.index;
    const key = `${name}\u0000${module}`;
    let index = agentIndex.get(key);
    if (index === undefined) agentIndex.set(key, (index = agentIndex.size));
    last = { name, module, index };
    return index;
  }

  function flush(): void {
    flushQueued = false;
    for (const link of links) {
      if (!link.outbox) continue;
      link.channel.post(link.outbox);
      link.outbox = undefined;
    }
  }

  return {
    threads: options.threads,
    send,
    connect(to) {
      host = to;
    },
    async abort(attemptId, token, reason, answerWithinMs) {
      // An attempt no thread has yet (none said hello) is simply not sent: it ends aborted.
      const held = waiting.findIndex((r) => r.attemptId === attemptId && r.token === token);
      if (held >= 0) {
        waiting.splice(held, 1);
        queueMicrotask(() => host?.ended(attemptId, token, droppedResult(reason), false));
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
    terminate: (threadIds) => source.terminate(new Set(threadIds)),
    async destroy() {
      destroyed = true;
      // Node 20 aborts the process when a thread is terminated while it loads an ES module; let
      // threads that have not said `ready` finish loading first (bounded).
      const until = Date.now() + LOAD_WAIT_MS;
      const loading = () => source.loading(new Set([...links].map((l) => l.threadId)));
      while (loading() && Date.now() < until) await new Promise((resolve) => setTimeout(resolve, 10));
      for (const link of [...links]) {
        link.alive = false;
        link.control[releaseProxy]();
        link.channel.close();
      }
      links.clear();
      await source.destroy();
    },
  };
}

/**
 * A thread's starts of one turn, until they are posted: made by a constructor, its array by
 * {@link arrayForBatch}, as the store's batch is (src/allocation.ts). It holds every started
 * attempt's input until the end of the turn, and the literal it replaced was an allocation site V8
 * could pretenure. Posting clones its own fields; `agents` and `traces` exist only once set.
 */
class Outbox implements StartBatch {
  readonly t = 'start';
  readonly slots: number;
  readonly heartbeatMs: number;
  readonly starts = arrayForBatch<unknown>();
  declare agents?: StartBatch['agents'];
  declare traces?: unknown[];

  constructor(slots: number, heartbeatMs: number) {
    this.slots = slots;
    this.heartbeatMs = heartbeatMs;
  }
}
