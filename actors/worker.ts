/**
 * The Piscina entry: runs inside every worker thread. When Piscina starts the thread, it opens one
 * long-lived channel to the host (its end travels in a hello through `parentPort`) and serves it:
 * the host sends the attempts whose start is durable as one message per turn, and the thread sends
 * back what its attempts did (outcomes, log lines, progress, heartbeats, calls) coalesced into one
 * message per turn, in order. Agent modules load once per thread. Outcomes are wire-safe
 * {@link WireResult}s: an attempt never throws to the host. No Piscina task is ever posted: a task
 * kept open would hold the host's event loop for good (Piscina refs a busy thread's port).
 */
import { MessageChannel, isMainThread, parentPort, threadId } from 'node:worker_threads';
import { expose } from 'comlink/dist/esm/comlink.mjs';
import { AgentError, agentFunctionOf, isAgentError, type AgentContext, type AgentFunction, type JoinedTask, type SpawnedTask, type WaitForInputOptions } from './agent.js';
import { ThreadChannel } from './channel.js';
import { clearLongTimeout, setLongTimeout, type LongTimeout } from './long-timeout.js';
import {
  describeUnserializable,
  type AbortReason,
  type AgentCall,
  type AgentResult,
  type HostReply,
  type AttemptRequest,
  type LogLevel,
  type ThreadHello,
  type WireError,
  type WireLogLine,
  type WireResult,
  type WorkerControl,
  type WorkerMessage,
} from './wire.js';

const PROGRESS_INTERVAL_MS = 100;
const HEARTBEAT_INTERVAL_MS = 1_000;
const STACK_LIMIT = 2_000;

interface LiveAttempt {
  readonly request: AttemptRequest;
  readonly controller: AbortController;
  lines: WireLogLine[];
  flushQueued: boolean;
  lastProgressAt: number;
  progressTimer: NodeJS.Timeout | undefined;
  pendingProgress: { value: number; message?: string } | undefined;
  lastHeartbeatAt: number;
  ended: boolean;
  /** Calls in flight that wait on the host (input, join): while any is, the attempt holds no slot. */
  waiting: number;
}

const live = new Map<string, LiveAttempt>();
/** Agent calls waiting for the host's reply, by call id. */
const calls = new Map<number, { attempt: LiveAttempt; resolve: (value: unknown) => void; reject: (error: Error) => void; waits: boolean }>();
let nextCallId = 1;
const modules = new Map<string, Promise<AgentFunction>>();
let channel: ThreadChannel | undefined;
/** Messages for the host, sent as one batch at the end of the turn. */
let outbox: WorkerMessage[] = [];
let flushing = false;
/** Attempts the host sent that wait for one of this thread's slots, and how many hold one now. */
const queued: AttemptRequest[] = [];
let running = 0;
let slots = 1;

/** Starts queued attempts while slots are free; each start is told to the host (its lease starts). */
function pump(): void {
  while (running < slots && queued.length > 0) {
    const request = queued.shift()!;
    running++;
    send({ t: 'begin', attemptId: request.attemptId, token: request.token, at: Date.now() });
    void runAttempt(request);
  }
}

/** Renews the leases of this thread's live attempts while its event loop runs. */
let heartbeats: { timer: NodeJS.Timeout; everyMs: number } | undefined;

/**
 * Aborts that arrived before their attempt: the abort travels on the thread channel and the task
 * on Piscina's port, so a cancel right after dispatch can overtake the task. Every thread hears the
 * broadcast, so the map is bounded; the oldest entries go first.
 */
const earlyAborts = new Map<string, { token: number; reason: AbortReason }>();
const EARLY_ABORTS_LIMIT = 1_024;

const control: WorkerControl = {
  abort(attemptId: string, token: number, reason: AbortReason): boolean {
    const attempt = live.get(attemptId);
    if (!attempt && abortQueued(attemptId, token, reason)) return true;
    if (!attempt) {
      earlyAborts.set(attemptId, { token, reason });
      if (earlyAborts.size > EARLY_ABORTS_LIMIT) earlyAborts.delete(earlyAborts.keys().next().value!);
      return false;
    }
    if (attempt.request.token !== token) return false;
    attempt.controller.abort(new Error(`attempt ${reason}`, { cause: reason }));
    return true;
  },
};

/** An attempt still queued on this thread is aborted before it ran: it ends at once. */
function abortQueued(attemptId: string, token: number, reason: AbortReason): boolean {
  const at = queued.findIndex((r) => r.attemptId === attemptId && r.token === token);
  if (at < 0) return false;
  queued.splice(at, 1);
  send({ t: 'end', attemptId, token, result: { ok: false, error: { code: 'ABORTED', message: `attempt ${reason} before it ran`, retryable: true, fault: 'infrastructure' } } });
  return true;
}

// A worker entry is a program, not a library: opening the channel when the thread starts is its job.
if (!isMainThread && parentPort) {
  const { port1, port2 } = new MessageChannel();
  channel = new ThreadChannel(port1);
  expose(control, channel.rpc as never);
  channel.onEvent((message) => {
    if (message.t === 'start') {
      slots = message.slots;
      for (const request of message.requests) queued.push(request);
      pump();
    }
    else if (message.t === 'reply') answer(message);
  });
  parentPort.postMessage({ troupe: 'hello', threadId, port: port2 } satisfies ThreadHello, [port2]);
}

/** Piscina needs a handler; no task is ever posted to it (see the module comment). */
export default function unused(): never {
  throw new Error('troupe worker threads take attempts through their channel, not Piscina tasks');
}

/** Runs one attempt and posts its outcome; never throws. */
async function runAttempt(request: AttemptRequest): Promise<void> {
  const attempt: LiveAttempt = {
    request,
    controller: new AbortController(),
    lines: [],
    flushQueued: false,
    lastProgressAt: 0,
    progressTimer: undefined,
    pendingProgress: undefined,
    lastHeartbeatAt: 0,
    ended: false,
    waiting: 0,
  };
  live.set(request.attemptId, attempt);
  const early = earlyAborts.get(request.attemptId);
  if (early) {
    earlyAborts.delete(request.attemptId);
    if (early.token === request.token) attempt.controller.abort(new Error(`attempt ${early.reason}`, { cause: early.reason }));
  }
  armHeartbeats(request.heartbeatMs);
  let result: WireResult;
  try {
    let agent: AgentFunction | undefined;
    try {
      agent = await loadAgent(request.module);
    } catch (error) {
      result = { ok: false, error: loadError(request, error) };
    }
    if (agent) result = toResult(await agent(request.input, contextFor(attempt)));
  } catch (error) {
    result = { ok: false, error: toWireError(error) };
  }
  finish(attempt, result!);
}

function finish(attempt: LiveAttempt, result: WireResult): void {
  attempt.ended = true;
  if (attempt.waiting === 0) running--;
  for (const [id, pending] of calls) if (pending.attempt === attempt) calls.delete(id);
  attempt.waiting = 0;
  live.delete(attempt.request.attemptId);
  if (live.size === 0 && heartbeats) {
    clearInterval(heartbeats.timer);
    heartbeats = undefined;
  }
  if (attempt.progressTimer) clearTimeout(attempt.progressTimer);
  flushProgress(attempt);
  flushLines(attempt);
  const { attemptId, token } = attempt.request;
  send({ t: 'end', attemptId, token, result });
  pump();
}

/**
 * One interval per thread heartbeats every live attempt. An agent that blocks the thread stops
 * the interval too, so its lease runs out: that is how the host tells "busy" from "stuck".
 */
function armHeartbeats(everyMs: number): void {
  if (heartbeats && heartbeats.everyMs <= everyMs) return;
  if (heartbeats) clearInterval(heartbeats.timer);
  const timer = setInterval(() => {
    const at = Date.now();
    for (const attempt of live.values()) {
      attempt.lastHeartbeatAt = at;
      send({ t: 'heartbeat', attemptId: attempt.request.attemptId, token: attempt.request.token, at });
    }
  }, everyMs);
  timer.unref();
  heartbeats = { timer, everyMs };
}

function loadAgent(module: string): Promise<AgentFunction> {
  let loading = modules.get(module);
  if (!loading) {
    loading = import(module).then((namespace: Record<string, unknown>) => {
      const fn = agentFunctionOf(namespace.default);
      if (!fn) throw new Error(`${module} has no default export made with defineAgent() or a function`);
      return fn;
    });
    // A failed import is retried by the next attempt rather than cached forever.
    loading.catch(() => modules.delete(module));
    modules.set(module, loading);
  }
  return loading;
}

function contextFor(attempt: LiveAttempt): AgentContext {
  const { request } = attempt;
  const write = (level: LogLevel) => (message: string, fields?: Record<string, unknown>) => {
    if (attempt.ended) return;
    const line: WireLogLine = fields === undefined ? [level, String(message), Date.now()] : [level, String(message), Date.now(), safeFields(fields)];
    attempt.lines.push(line);
    queueFlush(attempt);
  };
  return {
    taskId: request.taskId,
    runId: request.runId,
    attemptId: request.attemptId,
    attempt: request.attempt,
    workspace: request.workspace,
    followUp: request.followUp,
    signal: attempt.controller.signal,
    log: { debug: write('debug'), info: write('info'), warn: write('warn'), error: write('error') },
    progress(value: number, message?: string) {
      if (attempt.ended || !Number.isFinite(value)) return;
      attempt.pendingProgress = { value: Math.min(1, Math.max(0, value)), message };
      const wait = attempt.lastProgressAt + PROGRESS_INTERVAL_MS - Date.now();
      if (wait <= 0) queueFlush(attempt);
      else attempt.progressTimer ??= setTimeout(() => {
        attempt.progressTimer = undefined;
        flushProgress(attempt);
      }, wait);
    },
    ...interactions(attempt),
    heartbeat() {
      const now = Date.now();
      if (attempt.ended || now - attempt.lastHeartbeatAt < Math.min(HEARTBEAT_INTERVAL_MS, request.heartbeatMs)) return;
      attempt.lastHeartbeatAt = now;
      send({ t: 'heartbeat', attemptId: request.attemptId, token: request.token, at: now });
    },
  };
}

/** Sends an agent call to the host; resolves with its reply. Log lines written before it go first. */
function callHost(attempt: LiveAttempt, call: AgentCall): { callId: number; reply: Promise<unknown> } {
  const callId = nextCallId++;
  const reply = new Promise<unknown>((resolve, reject) => {
    if (attempt.ended) return reject(new AgentError('the attempt has ended', { retryable: false, code: 'ATTEMPT_ENDED' }));
    calls.set(callId, { attempt, resolve, reject, waits: call.method === 'input' || call.method === 'join' });
    // Waiting on the host, the attempt gives its slot to the next queued one until the reply.
    if (call.method === 'input' || call.method === 'join') {
      if (attempt.waiting++ === 0) {
        running--;
        pump();
      }
    }
    flushLines(attempt);
    const { attemptId, token } = attempt.request;
    send({ t: 'call', attemptId, token, callId, call });
  });
  return { callId, reply };
}

function answer(reply: HostReply): void {
  const pending = calls.get(reply.callId);
  if (!pending) return;
  calls.delete(reply.callId);
  resumed(pending);
  if (reply.ok) pending.resolve(reply.value);
  else pending.reject(new AgentError(reply.error.message, { retryable: false, code: reply.error.code }));
}

/** A call that waited on the host got its reply: the attempt runs again (it may briefly exceed the slots). */
function resumed(pending: { attempt: LiveAttempt; waits: boolean }): void {
  if (!pending.waits || pending.attempt.ended) return;
  if (--pending.attempt.waiting === 0) running++;
}

/** Rejects when `signal` aborts, so an agent blocked on the host still sees cancellation. */
function abortable<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(new AgentError(`aborted: ${String((signal.reason as Error)?.message ?? signal.reason)}`, { code: 'ABORTED' }));
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(new AgentError(`aborted: ${String((signal.reason as Error)?.message ?? signal.reason)}`, { code: 'ABORTED' }));
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (error: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(error as Error);
      },
    );
  });
}

function interactions(attempt: LiveAttempt): Pick<AgentContext, 'waitForInput' | 'inputs' | 'spawn' | 'join'> {
  const { signal } = attempt.controller;
  let spawned = 0;
  const waitForInput = async (options: WaitForInputOptions = {}): Promise<unknown> => {
    const { callId, reply } = callHost(attempt, options.prompt === undefined ? { method: 'input' } : { method: 'input', prompt: options.prompt });
    const { timeoutMs } = options;
    if (timeoutMs === undefined) return abortable(reply, signal);
    let timer: LongTimeout | undefined;
    const timedOut = new Promise<never>((_, reject) => {
      timer = setLongTimeout(() => {
        // Ask the host to stop waiting; if an input was already on its way, it still wins.
        callHost(attempt, { method: 'unwait', inputCallId: callId }).reply.then(
          (value) => value === 'unwaited' && reject(new AgentError(`no input within ${timeoutMs} ms`, { code: 'INPUT_TIMEOUT' })),
          () => undefined,
        );
      }, timeoutMs);
    });
    try {
      return await abortable(Promise.race([reply, timedOut]), signal);
    } finally {
      clearLongTimeout(timer);
    }
  };
  return {
    waitForInput,
    async *inputs() {
      while (!signal.aborted) {
        try {
          yield await waitForInput();
        } catch (error) {
          if (signal.aborted) return;
          throw error;
        }
      }
    },
    async spawn(spec) {
      spawned++;
      const key = typeof spec?.idempotencyKey === 'string' ? spec.idempotencyKey : `#${spawned}`;
      return abortable(callHost(attempt, { method: 'spawn', spec: spec as Record<string, unknown>, key }).reply, signal) as Promise<SpawnedTask>;
    },
    async join(ids) {
      return abortable(callHost(attempt, { method: 'join', ids: [...ids] }).reply, signal) as Promise<JoinedTask[]>;
    },
  };
}

function queueFlush(attempt: LiveAttempt): void {
  if (attempt.flushQueued) return;
  attempt.flushQueued = true;
  setImmediate(() => {
    attempt.flushQueued = false;
    flushLines(attempt);
    if (!attempt.progressTimer) flushProgress(attempt);
  });
}

function flushLines(attempt: LiveAttempt): void {
  if (attempt.lines.length === 0) return;
  const lines = attempt.lines;
  attempt.lines = [];
  send({ t: 'log', attemptId: attempt.request.attemptId, token: attempt.request.token, lines });
}

function flushProgress(attempt: LiveAttempt): void {
  const progress = attempt.pendingProgress;
  if (!progress) return;
  attempt.pendingProgress = undefined;
  attempt.lastProgressAt = Date.now();
  const { attemptId, token } = attempt.request;
  send({ t: 'progress', attemptId, token, value: progress.value, message: progress.message, at: attempt.lastProgressAt });
}

/** Queues a message for the host; the turn's messages go as one batch, in order. */
function send(message: WorkerMessage): void {
  outbox.push(message);
  if (flushing) return;
  flushing = true;
  setImmediate(flushOutbox);
}

function flushOutbox(): void {
  flushing = false;
  const messages = outbox;
  outbox = [];
  channel?.post({ t: 'batch', messages });
}

function safeFields(fields: Record<string, unknown>): Record<string, unknown> {
  if (describeUnserializable(fields) === undefined) return fields;
  try {
    return JSON.parse(JSON.stringify(fields)) as Record<string, unknown>;
  } catch {
    return { unserializable: String(fields) };
  }
}

const RESULT_KINDS = new Set(['success', 'fork', 'fail', 'sleep']);

function toResult(value: unknown): WireResult {
  let result: AgentResult;
  if (typeof value === 'object' && value !== null && RESULT_KINDS.has((value as { kind?: unknown }).kind as string)) {
    const shapeProblem = checkResultShape(value as AgentResult);
    if (shapeProblem) return invalidResult(shapeProblem);
    result = value as AgentResult;
  } else {
    result = value === undefined ? { kind: 'success' } : { kind: 'success', output: value };
  }
  const problem = describeUnserializable(result, 'result');
  if (problem) return invalidResult(problem);
  return { ok: true, result };
}

function checkResultShape(result: AgentResult): string | undefined {
  const optionalString = (name: 'summary' | 'branch' | 'rev') => {
    const v = (result as Record<string, unknown>)[name];
    return v === undefined || typeof v === 'string' ? undefined : `result.${name} must be a string`;
  };
  if (result.kind === 'fork' && (typeof result.branch !== 'string' || typeof result.rev !== 'string')) {
    return "a { kind: 'fork' } result needs string branch and rev";
  }
  if (result.kind === 'sleep' && !(Number.isInteger(result.wakeAfterMs) && result.wakeAfterMs >= 0)) {
    return "a { kind: 'sleep' } result needs wakeAfterMs, a non-negative integer";
  }
  return optionalString('summary') ?? optionalString('branch') ?? optionalString('rev');
}

function invalidResult(message: string): WireResult {
  return { ok: false, error: { code: 'INVALID_RESULT', message, retryable: false, fault: 'agent' } };
}

function loadError(request: AttemptRequest, error: unknown): WireError {
  const message = error instanceof Error ? error.message : String(error);
  return { code: 'AGENT_LOAD_FAILED', message: `agent ${request.agent} failed to load: ${message}`, retryable: false, fault: 'agent', stack: stackOf(error) };
}

function toWireError(error: unknown): WireError {
  if (isAgentError(error)) {
    return { code: error.code, message: error.message, retryable: error.retryable, fault: 'agent', stack: stackOf(error) };
  }
  if (error instanceof Error) {
    return { code: 'AGENT_ERROR', message: error.message || error.name, retryable: true, fault: 'agent', stack: stackOf(error) };
  }
  let message: string;
  try {
    message = `non-error thrown: ${JSON.stringify(error)}`;
  } catch {
    message = `non-error thrown: ${String(error)}`;
  }
  return { code: 'AGENT_ERROR', message, retryable: true, fault: 'agent' };
}

function stackOf(error: unknown): string | undefined {
  return error instanceof Error && typeof error.stack === 'string' ? error.stack.slice(0, STACK_LIMIT) : undefined;
}
