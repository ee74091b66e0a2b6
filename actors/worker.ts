/**
 * The Piscina entry: runs inside every worker thread. When Piscina starts the thread, it opens one
 * long-lived channel to the host (its end travels in a hello through `parentPort`) and serves it:
 * the host sends the attempts whose start is durable as one batch per turn, and the thread sends
 * back what its attempts did (begins, outcomes, log lines, progress, heartbeats) as one batch per
 * turn, in order. Agent calls (input, spawn, join) go to the host over comlink on the same channel,
 * and the host's aborts come the same way. Agent modules load once per thread. Outcomes are
 * wire-safe: an attempt never throws to the host. No Piscina task is ever posted: a task kept open
 * would hold the host's event loop for good (Piscina refs a busy thread's port).
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { MessageChannel, isMainThread, parentPort, threadId, type MessagePort } from 'node:worker_threads';
import { expose, wrap, type Remote } from 'comlink/dist/esm/comlink.mjs';
import { AgentError, type AgentFunction } from './agent.js';
import { AttemptContext, WorkerAttempt, type ThreadSide } from './attempt.js';
import { ThreadChannel } from './channel.js';
import { loadError, settle, toWireError } from './results.js';
import { postEach } from './salvage.js';
import { importAgent } from './typescript.js';
import { inTraceContext, settleTraceContext, traceContextSettled } from './trace-context.js';
import { describeUnserializableCall, messageOf, Report, START_STRIDE, TRACE_STRIDE, type AbortReason, type AgentCall, type HostApi, type StartBatch, type ThreadHello, type WireResult, type WorkerBatch, type WorkerControl } from './wire.js';

/** Running attempts by id. */
const live = new Map<string, WorkerAttempt>();
/**
 * The attempt whose agent code is running: set around each agent call, and carried by Node into
 * every timer, promise and callback that code creates, so an error nobody caught is charged to
 * the attempt that caused it, not to the thread and every attempt beside it.
 */
const owner = new AsyncLocalStorage<WorkerAttempt | undefined>();
/** Agents the host told this thread of, by number, and their modules once loaded. */
const agents = new Map<number, { name: string; module: string }>();
const modules = new Map<string, AgentFunction | Promise<AgentFunction>>();
let channel: ThreadChannel | undefined;
let host: Remote<HostApi> | undefined;
/** Reports for the host, sent as one batch at the end of the turn. */
let outbox: WorkerBatch = [];
let flushing = false;
/** Attempts with lines or progress to report at the end of the turn. */
const toFlush = new Set<WorkerAttempt>();
/** Attempts the host sent that wait for one of this thread's slots, and how many hold one now. */
const queued: WorkerAttempt[] = [];
let running = 0;
let slots = 1;
let heartbeatMs = 1_000;
/** Renews the leases of this thread's live attempts while its event loop runs, every `heartbeatsEvery` ms. */
let heartbeats: NodeJS.Timeout | undefined;
let heartbeatsEvery = 0;
/** Attempts begun this turn: their BEGIN goes with the turn's batch unless they end first. */
let begun: WorkerAttempt[] = [];

/**
 * Aborts that arrived before their attempt (replayed to a thread that said hello late). Every
 * thread hears the broadcast, so the map is bounded; the oldest entries go first.
 */
const earlyAborts = new Map<string, { token: number; reason: AbortReason }>();
const EARLY_ABORTS_LIMIT = 1_024;

const control: WorkerControl = {
  abort(attemptId: string, token: number, reason: AbortReason): boolean {
    const attempt = live.get(attemptId);
    if (attempt) {
      if (attempt.token !== token) return false;
      attempt.abort(reason);
      return true;
    }
    // Still queued here: it ends at once, without running.
    const at = queued.findIndex((a) => a.attemptId === attemptId && a.token === token);
    if (at >= 0) {
      const [dropped] = queued.splice(at, 1);
      dropped!.beginPending = false;
      report(dropped!, Report.DROPPED, reason);
      return true;
    }
    earlyAborts.set(attemptId, { token, reason });
    if (earlyAborts.size > EARLY_ABORTS_LIMIT) earlyAborts.delete(earlyAborts.keys().next().value!);
    return false;
  },
};

const thread: ThreadSide = {
  report,
  call: callHost,
  flushSoon(attempt) {
    if (attempt.flushQueued) return;
    attempt.flushQueued = true;
    toFlush.add(attempt);
    queueOutbox();
  },
  get heartbeatMs() {
    return heartbeatMs;
  },
};

// A worker entry is a program, not a library: opening the channel when the thread starts is its job.
if (!isMainThread && parentPort) {
  const port = open();
  // An agent's stray error (a timer that throws, a promise nobody awaits) must not take the thread
  // and its neighbours' attempts down with it.
  process.on('uncaughtException', (error) => stray(error, 'an uncaught exception'));
  process.on('unhandledRejection', (reason) => stray(reason, 'an unhandled promise rejection'));
  // An agent that ends the thread (process.exit) takes its neighbours down too: name it, if it
  // still runs, so they are requeued as interrupted rather than charged a crashed attempt. What
  // the turn holds goes either way: an attempt that ended in it is not to be run again.
  process.on('exit', (code) => {
    const culprit = owner.getStore();
    if (culprit && !culprit.ended) report(culprit, Report.EXIT, code);
    flushOutbox();
  });
  parentPort.postMessage({ troupe: 'hello', threadId, port } satisfies ThreadHello, [port]);
}

/** Opens this thread's channel and serves it; returns the host's end. */
function open(): MessagePort {
  const { port1, port2 } = new MessageChannel();
  channel = new ThreadChannel(port1);
  expose(control, channel.rpc('a') as never);
  host = wrap<HostApi>(channel.rpc('h') as never);
  channel.onBatch((batch) => accept(batch as StartBatch));
  return port2;
}

/** Agents given as functions, by module string, for a thread served in the host's own thread (see {@link serveInThread}). */
let inThreadAgents: ReadonlyMap<string, AgentFunction> | undefined;

/**
 * Serves a "thread" in the calling thread: troupe/testing's in-thread agents. Each call must be on
 * a module instance of its own (import this file with a distinct query): a thread's state is this
 * module's. `agents` resolves modules to functions before any import; other modules import as in a
 * thread. No process-wide handler is installed: an agent's stray error is the host process's.
 */
export function serveInThread(agents: ReadonlyMap<string, AgentFunction>): ThreadHello {
  if (channel) throw new Error('this module instance already serves a thread');
  inThreadAgents = agents;
  return { troupe: 'hello', threadId: 0, port: open() };
}

/** Closes the channel of a thread served by {@link serveInThread}. */
export function closeInThread(): void {
  channel?.close();
  if (heartbeats) clearInterval(heartbeats);
  // What the test's agents captured goes with them (this module instance stays loaded).
  inThreadAgents = undefined;
  modules.clear();
  agents.clear();
  live.clear();
  queued.length = 0;
  earlyAborts.clear();
}

/**
 * An error no agent code caught. It fails the attempt whose code caused it, if that attempt still
 * runs (an agent fault, retried per its policy); otherwise (its attempt has ended, or nothing says
 * whose it is) the host logs it. Either way the thread carries on.
 */
function stray(error: unknown, what: string): void {
  const wire = toWireError(error);
  const attempt = owner.getStore();
  if (attempt && !attempt.ended) {
    end(attempt, Report.END, { ok: false, error: { ...wire, message: `${what} in the agent: ${wire.message}` } } satisfies WireResult);
    return;
  }
  const whose = attempt ? `attempt ${attempt.attemptId} (it had already ended)` : 'an agent on this thread (no attempt could be told)';
  const message = `${what} from ${whose}: ${wire.message}`;
  if (attempt) report(attempt, Report.STRAY, message);
  else {
    outbox.push(Report.STRAY, '', 0, message);
    queueOutbox();
  }
}

/** Piscina needs a handler; no task is ever posted to it (see the module comment). */
export default function unused(): never {
  throw new Error('troupe worker threads take attempts through their channel, not Piscina tasks');
}

/** A batch of starts: queue them, then run as many as there are free slots. */
function accept(batch: StartBatch): void {
  slots = batch.slots;
  heartbeatMs = batch.heartbeatMs;
  if (batch.agents) for (const [index, name, module] of batch.agents) agents.set(index, { name, module });
  const s = batch.starts;
  const first = queued.length;
  for (let i = 0; i < s.length; i += START_STRIDE) {
    queued.push(new WorkerAttempt(s[i] as number, s[i + 1] as string, s[i + 2] as number, s[i + 3] as number, s[i + 4] as number, s[i + 5], s[i + 6] as string | undefined, s[i + 7]));
  }
  const traces = batch.traces;
  if (traces) {
    for (let i = 0; i < traces.length; i += TRACE_STRIDE) {
      const attempt = queued[first + (traces[i] as number)]!;
      attempt.traceparent = traces[i + 1] as string;
      attempt.tracestate = traces[i + 2] as string | undefined;
    }
  }
  pump();
}

/** Set while {@link pump} runs: an attempt that ends within it (a synchronous agent) does not pump again. */
let pumping = false;

/**
 * Starts queued attempts while slots are free. Not reentrant: a synchronous agent ends (and pumps)
 * within begin(); nested, a batch of thousands overflowed the stack. The outer loop goes on instead.
 */
function pump(): void {
  if (pumping) return;
  pumping = true;
  try {
    while (running < slots && queued.length > 0) {
      running++;
      begin(queued.shift()!);
    }
  } finally {
    pumping = false;
  }
}

/** Runs one attempt; its outcome is reported when it ends. A synchronous agent ends in this call. */
function begin(attempt: WorkerAttempt): void {
  live.set(attempt.attemptId, attempt);
  const early = earlyAborts.get(attempt.attemptId);
  if (early) {
    earlyAborts.delete(attempt.attemptId);
    if (early.token === attempt.token) attempt.abort(early.reason);
  }
  if (!heartbeats || heartbeatsEvery !== heartbeatMs) armHeartbeats();
  begun.push(attempt);
  queueOutbox();
  const { name, module } = agents.get(attempt.agent)!;
  const loaded = modules.get(module);
  if (typeof loaded === 'function') return call(attempt, loaded);
  (loaded ?? load(module)).then(
    (fn) => call(attempt, fn),
    (error: unknown) => end(attempt, Report.END, { ok: false, error: loadError(name, module, error) } satisfies WireResult),
  );
}

function call(attempt: WorkerAttempt, fn: AgentFunction): void {
  const { traceparent } = attempt;
  // A traced attempt waits for the thread's first look for @opentelemetry/api (once per thread).
  if (traceparent !== undefined && !traceContextSettled()) return void settleTraceContext().then(() => call(attempt, fn));
  let value: unknown;
  const run = () => fn(attempt.input, new AttemptContext(attempt, thread));
  try {
    value = owner.run(attempt, traceparent === undefined ? run : () => inTraceContext(traceparent, attempt.tracestate, run));
  } catch (error) {
    return end(attempt, Report.END, { ok: false, error: toWireError(error) } satisfies WireResult);
  }
  settle(value, attempt, end);
}

function end(attempt: WorkerAttempt, kind: number, payload: unknown): void {
  if (attempt.ended) return;
  if (attempt.progressTimer) {
    clearTimeout(attempt.progressTimer);
    attempt.progressTimer = undefined;
  }
  flushAttempt(attempt);
  attempt.ended = true;
  if (attempt.waiting === 0) running--;
  attempt.waiting = 0;
  live.delete(attempt.attemptId);
  // An attempt that ends in the turn it began needs no BEGIN: its end says both.
  attempt.beginPending = false;
  report(attempt, kind, payload);
  pump();
}

function load(module: string): Promise<AgentFunction> {
  const given = inThreadAgents?.get(module);
  if (given) {
    modules.set(module, given);
    return Promise.resolve(given);
  }
  const loading = importAgent(module).then((fn) => {
    modules.set(module, fn);
    return fn;
  });
  // A failed import is retried by the next attempt rather than cached forever.
  loading.catch(() => modules.delete(module));
  modules.set(module, loading);
  return loading;
}

/**
 * One interval per thread heartbeats every live attempt. An agent that blocks the thread stops
 * the interval too, so its lease runs out: that is how the host tells "busy" from "stuck". It
 * stays armed while attempts come and go, and stops at a tick that finds none: re-arming it for
 * every busy spell showed in the thread's profile when attempts end within a turn.
 */
function armHeartbeats(): void {
  if (heartbeats) clearInterval(heartbeats);
  heartbeatsEvery = heartbeatMs;
  // The thread's own timer belongs to no attempt, even when armed from an agent's continuation.
  // Not owner.exit(): that turns Node's async hooks off and on again.
  heartbeats = owner.run(undefined, () => setInterval(beat, heartbeatMs));
  heartbeats.unref();
}

function beat(): void {
  if (live.size === 0) {
    clearInterval(heartbeats);
    heartbeats = undefined;
    return;
  }
  const at = Date.now();
  for (const attempt of live.values()) {
    attempt.lastHeartbeatAt = at;
    report(attempt, Report.HEARTBEAT, at);
  }
}

/** Sends an agent call to the host: its lines and the turn's reports go first. */
function callHost(attempt: WorkerAttempt, call: AgentCall): Promise<unknown> {
  if (attempt.ended) return Promise.reject(new AgentError('the attempt has ended', { retryable: false, code: 'ATTEMPT_ENDED' }));
  // What cannot be copied would fail the post with a DataCloneError: say why, before anything moves.
  const problem = describeUnserializableCall(call);
  if (problem) return Promise.reject(new AgentError(`${problem}: only plain data goes to the host`, { retryable: false, code: 'INVALID_INPUT' }));
  const waits = call.method === 'input' || call.method === 'join';
  // Waiting on the host, the attempt gives its slot to the next queued one until the answer.
  if (waits && attempt.waiting++ === 0) {
    running--;
    pump();
  }
  flushAttempt(attempt);
  flushOutbox();
  // Answered, or failed: the attempt runs again (it may briefly exceed the slots).
  const resumed = () => {
    if (waits && !attempt.ended && --attempt.waiting === 0) running++;
  };
  return host!.call(attempt.attemptId, attempt.token, call).then(
    (answer) => {
      resumed();
      if (answer.ok) return answer.value;
      throw new AgentError(answer.error.message, { retryable: false, code: answer.error.code });
    },
    (error: unknown) => {
      resumed();
      throw new AgentError(`the call to the host failed: ${messageOf(error)}`, { retryable: false, code: 'AGENT_CALL_FAILED' });
    },
  );
}

/** Queues a report; the turn's reports go as one batch, in order, after the BEGIN of their attempt. */
function report(attempt: WorkerAttempt, kind: number, payload: unknown): void {
  if (attempt.beginPending) {
    attempt.beginPending = false;
    outbox.push(Report.BEGIN, attempt.attemptId, attempt.token, Date.now());
  }
  outbox.push(kind, attempt.attemptId, attempt.token, payload);
  queueOutbox();
}

/** Reports an attempt's pending lines and (unless throttled) its progress. */
function flushAttempt(attempt: WorkerAttempt): void {
  attempt.flushQueued = false;
  toFlush.delete(attempt);
  if (attempt.lines.length > 0) {
    const lines = attempt.lines;
    attempt.lines = [];
    report(attempt, Report.LOG, lines);
  }
  const progress = attempt.pendingProgress;
  if (progress && !attempt.progressTimer) {
    attempt.pendingProgress = undefined;
    attempt.lastProgressAt = Date.now();
    report(attempt, Report.PROGRESS, [progress.value, progress.message, attempt.lastProgressAt]);
  }
}

function queueOutbox(): void {
  if (flushing) return;
  flushing = true;
  // Outside any attempt's context. Not owner.exit(): that turns Node's async hooks off and on
  // again on every call, which showed in the thread's profile once per turn.
  owner.run(undefined, () => setImmediate(flushOutbox));
}

function flushOutbox(): void {
  flushing = false;
  for (const attempt of toFlush) flushAttempt(attempt);
  // Attempts that began this turn and still run: their BEGIN goes now.
  const at = Date.now();
  for (const attempt of begun) {
    if (!attempt.beginPending) continue;
    attempt.beginPending = false;
    outbox.push(Report.BEGIN, attempt.attemptId, attempt.token, at);
  }
  begun = [];
  if (outbox.length === 0) return;
  const batch = outbox;
  outbox = [];
  const to = channel;
  if (!to) return;
  try {
    to.post(batch);
  } catch {
    // A payload the agent changed after handing it over cannot be copied: see salvage.ts.
    postEach((reports) => to.post(reports), batch);
  }
}
