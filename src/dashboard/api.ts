/**
 * The dashboard's JSON API and event streams, over the runtime's public methods only: what the
 * page shows is what `rt.stats()`, `rt.list()`, `rt.get()`, `rt.events()` and `rt.logs()` say, and
 * every action is the public call (`rt.cancel()`, `rt.retry()`, `rt.sendInput()`, `rt.freeze()`, …).
 *
 *   GET  /api/overview                 stats, agents, the store, and starts/settles and latency per 10 s over 10 minutes
 *   GET  /api/tasks?state&agent&label=NAME=VALUE&q&after&limit     a page, in submit order
 *   GET  /api/tasks/:id                the task, its parent and its first children
 *   GET  /api/tasks/:id/logs           SSE: its log lines, then live until it settles
 *   GET  /api/events?after&taskId&types   SSE: committed events from `after` (or Last-Event-ID), then live
 *   GET  /api/changes                  SSE: every 250 ms at most, the tasks whose state changed and to what
 *                                      (coalesced: what a live list needs, at a cost per event of a map entry)
 *   GET  /api/instances | /api/agents | /api/schedules   (instances: [] on a store that has none)
 *   POST /api/tasks/:id/cancel {reason?} | /retry | /input {message}
 *   POST /api/freeze {reason?} | /api/unfreeze | /api/agents/:name/resume | /api/schedules/:id/pause | /resume
 *
 * On PostgreSQL the runtime is one of a cluster (see {@link DashboardStore}): what the store has no
 * backing for is absent from the answers (no instances, no children), and an action it refuses
 * answers its code (UNSUPPORTED_STORE), as any other refused action does.
 */
import { once } from 'node:events';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { fromCursor } from '../events/event-bus.js';
import { unheldAbort } from '../keep-alive.js';
import type { EventType, RuntimeEvent } from '../api/events.js';
import { EVENT_TYPES } from '../api/events.js';
import type { ListOptions, Task, TaskPage } from '../api/tasks.js';
import type { TaskState } from '../../machines/states.js';
import { TASK_STATES } from '../../machines/states.js';
import type { Runtime } from '../api/runtime.js';

/** What the dashboard uses of a runtime. */
export type DashboardRuntime = Pick<Runtime, 'stats' | 'list' | 'get' | 'events' | 'logs' | 'cancel' | 'retry' | 'sendInput' | 'freeze' | 'unfreeze' | 'resumeAgent' | 'instances' | 'on' | 'agents' | 'schedules' | 'metrics'>;

/** What the dashboard must know of the runtime's store that the runtime's public methods do not say. */
export interface DashboardStore {
  /**
   * `lmdb`: every figure is the runtime's own. `postgres`: the runtime is one of a cluster: the tasks
   * and queues are the cluster's, the slots, attempts and chart this runtime's (the page says which).
   */
  readonly kind: 'lmdb' | 'postgres';
  /** The `after` of `rt.events()` for a cursor from the query or Last-Event-ID; INVALID_INPUT for one the store never gives. */
  eventsAfter(cursor: string): string | number;
}

/** The LMDB runtime's store: its cursors are padded seqs. */
export const LMDB_DASHBOARD: DashboardStore = {
  kind: 'lmdb',
  eventsAfter: (cursor) => (fromCursor(cursor), cursor),
};

/** An answer with an HTTP status of its own. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** Buckets of the overview's chart. */
const BUCKET_MS = 10_000;
const BUCKETS = 60;
/** How many tasks a text search scans for one page. */
const SEARCH_SCAN = 2_000;
/** Bytes a stream client may leave unread before the feed cuts it off. */
const MAX_UNREAD = 4 * 1024 * 1024;
/**
 * How long a stream waits for its client to read what it was sent before cutting it off: the
 * events the stream has not sent yet wait in memory meanwhile (an EventSource connects again and
 * resumes from its Last-Event-ID).
 */
export const STALL_MS = 30_000;
/** Comment lines that keep an idle event stream (and proxies in between) open. */
const PING_MS = 15_000;

interface Bucket {
  at: number;
  /** Attempts started, and ended by how, in the bucket. */
  started: number;
  done: number;
  failed: number;
  /** Mean submit → start of the attempts started in the bucket, ms (null: none started). */
  queuedMs: number | null;
}

/** How often the changes feed sends what changed. */
const CHANGES_MS = 250;
/** Most task states one message of the feed names; beyond, it says `overflow` and the page reloads its rows. */
const CHANGES_MAX = 500;
/** The state each event leaves its task in. */
const STATE_AFTER: Partial<Record<EventType, TaskState>> = {
  'task.queued': 'queued',
  'task.retrying': 'queued',
  'task.started': 'running',
  'task.waiting': 'waiting',
  'task.sleeping': 'sleeping',
  'task.needs_attention': 'needs_attention',
  'task.done': 'done',
  'task.failed': 'failed',
  'task.dropped': 'dropped',
  'task.cancelled': 'cancelled',
};
/** Exits that count as done in the chart; every other end counts as failed (retried or not). */
const DONE_EXITS = new Set(['success', 'fork']);

/** The API of one dashboard (see the module comment). */
export function dashboardApi(rt: DashboardRuntime, store: DashboardStore = LMDB_DASHBOARD) {
  // The chart samples the runtime's own counters every bucket: nothing is added per event for it.
  const buckets: Bucket[] = [];
  // The counters start at 0 when the runtime opens (the dashboard opens with it): the first bucket
  // holds what happened since.
  let sampled = { started: 0, done: 0, ended: 0, queuedSum: 0 };
  const sample = async () => {
    const m = await rt.metrics();
    const ended = Object.values(m.attemptsByExit).reduce((a, b) => a + b, 0);
    const done = Object.entries(m.attemptsByExit).reduce((a, [exit, n]) => a + (DONE_EXITS.has(exit) ? n : 0), 0);
    const now = { started: m.latency.submitToStart.count, done, ended, queuedSum: m.latency.submitToStart.sum };
    const started = now.started - sampled.started;
    buckets.push({ at: m.at, started, done: now.done - sampled.done, failed: now.ended - sampled.ended - (now.done - sampled.done), queuedMs: started > 0 ? ((now.queuedSum - sampled.queuedSum) * 1000) / started : null });
    if (buckets.length > BUCKETS) buckets.shift();
    sampled = now;
  };
  const sampler = setInterval(() => void sample().catch(() => undefined), BUCKET_MS);
  sampler.unref();
  const streams = new Set<AbortController>();

  // The changes feed listens only while someone reads it.
  const feeds = new Set<ServerResponse>();
  let changed = new Map<string, TaskState>();
  let submitted = 0;
  let unlisten: (() => void) | undefined;
  let flusher: NodeJS.Timeout | undefined;
  const onEvent = (ev: RuntimeEvent) => {
    const state = STATE_AFTER[ev.type];
    if (state === undefined || ev.taskId === undefined) return;
    changed.set(ev.taskId, state);
    if (ev.type === 'task.queued' && ev.data.run === 1 && ev.data.reason === undefined) submitted++;
  };
  const flush = () => {
    if (changed.size === 0) return;
    const overflow = changed.size > CHANGES_MAX;
    const message = JSON.stringify({ tasks: overflow ? {} : Object.fromEntries(changed), overflow, submitted });
    changed = new Map();
    submitted = 0;
    for (const res of feeds) {
      // A client that does not read gets cut off rather than buffered without bound.
      if (res.writableLength > MAX_UNREAD) res.destroy();
      else res.write(`data: ${message}\n\n`);
    }
  };

  async function route(method: string, path: string, params: URLSearchParams, body: unknown, req: IncomingMessage, res: ServerResponse): Promise<unknown> {
    const parts = path.split('/').slice(2).map(decodePart); // ['tasks', id, 'cancel']
    if (method === 'GET') {
      if (path === '/api/overview') return overview();
      if (path === '/api/changes') return void changesFeed(req, res);
      if (path === '/api/tasks') return listTasks(params);
      if (parts[0] === 'tasks' && parts.length === 2) return taskView(parts[1]!);
      if (parts[0] === 'tasks' && parts.length === 3 && parts[2] === 'logs') return void (await streamLogs(parts[1]!, req, res));
      if (path === '/api/instances') return unsupportedAs(() => rt.instances(), []);
      if (path === '/api/agents') return { agents: rt.agents.list(), stats: rt.stats().agents, store: store.kind };
      if (path === '/api/schedules') return rt.schedules.list();
    } else {
      const fields = (typeof body === 'object' && body !== null ? body : {}) as Record<string, unknown>;
      if (parts[0] === 'tasks' && parts.length === 3) {
        const id = parts[1]!;
        if (parts[2] === 'cancel') return { task: await rt.cancel(id, optionalString(fields.reason, 'reason')) };
        if (parts[2] === 'retry') return { task: await rt.retry(id) };
        if (parts[2] === 'input') return { input: await rt.sendInput(id, { message: fields.message }) };
      }
      if (path === '/api/freeze') {
        await rt.freeze(optionalString(fields.reason, 'reason'));
        return { frozen: true };
      }
      if (path === '/api/unfreeze') {
        await rt.unfreeze();
        return { frozen: false };
      }
      if (parts[0] === 'agents' && parts.length === 3 && parts[2] === 'resume') return { resumed: await rt.resumeAgent(parts[1]!) };
      if (parts[0] === 'schedules' && parts.length === 3 && (parts[2] === 'pause' || parts[2] === 'resume')) {
        return { schedule: parts[2] === 'pause' ? await rt.schedules.pause(parts[1]!) : await rt.schedules.resume(parts[1]!) };
      }
    }
    throw new HttpError(404, 'NOT_FOUND', `no ${method} ${path}`);
  }

  async function overview() {
    // On PostgreSQL stats() shows the cluster's task counts as last taken in the background (and
    // only starts the next count); metrics() takes the count that is due and waits for it, so the
    // overview shows counts taken for it, as an LMDB runtime's are, not a second old or none yet.
    if (store.kind === 'postgres') await rt.metrics();
    return { stats: rt.stats(), agents: rt.agents.list(), store: store.kind, chart: { bucketMs: BUCKET_MS, buckets: [...buckets] } };
  }

  /** A page of tasks; with `q`, the tasks whose id, agent, state or a label contains it, scanning at most {@link SEARCH_SCAN}. */
  async function listTasks(params: URLSearchParams): Promise<TaskPage & { scanned?: number }> {
    const options: ListOptions = {};
    const state = params.get('state');
    if (state) {
      if (!(TASK_STATES as readonly string[]).includes(state)) throw new HttpError(400, 'INVALID_INPUT', `state must be one of ${TASK_STATES.join(', ')}`);
      options.state = state as TaskState;
    }
    const agent = params.get('agent');
    if (agent) options.agent = agent;
    const labels = params.getAll('label');
    if (labels.length > 0) {
      options.labels = {};
      for (const pair of labels) {
        const at = pair.indexOf('=');
        if (at <= 0) throw new HttpError(400, 'INVALID_INPUT', `label takes NAME=VALUE (got ${JSON.stringify(pair)})`);
        options.labels[pair.slice(0, at)] = pair.slice(at + 1);
      }
    }
    const limit = params.has('limit') ? Number(params.get('limit')) : 50;
    if (!(Number.isSafeInteger(limit) && limit >= 1 && limit <= 1_000)) throw new HttpError(400, 'INVALID_INPUT', 'limit must be an integer in 1..1000');
    const after = params.get('after');
    const q = params.get('q')?.trim().toLowerCase();
    if (!q) return rt.list({ ...options, limit, ...(after ? { after } : {}) });
    // A text search walks pages until it has `limit` matches, or has looked at enough tasks.
    const found: Task[] = [];
    let cursor = after || undefined;
    let scanned = 0;
    while (found.length < limit && scanned < SEARCH_SCAN) {
      const page = await rt.list({ ...options, limit: 200, ...(cursor ? { after: cursor } : {}) });
      for (const task of page.tasks) {
        scanned++;
        cursor = task.id;
        if (matches(task, q)) found.push(task);
        if (found.length === limit) break;
      }
      // The last page, read to its end (or empty): nothing further to search.
      if (page.next === null && cursor === (page.tasks.at(-1)?.id ?? cursor)) return { tasks: found, next: null, scanned };
    }
    return { tasks: found, next: cursor ?? null, scanned };
  }

  async function taskView(id: string): Promise<{ task: Task; parent: Task | null; children: Task[] }> {
    const task = await rt.get(id);
    const parent = task.parentId === undefined ? null : await rt.get(task.parentId).catch(() => null);
    // A store without parent tasks (PostgreSQL) refuses the filter: the task has no children there.
    const children = await unsupportedAs(async () => (await rt.list({ parentId: id, limit: 100 })).tasks, []);
    return { task, parent, children };
  }

  /** SSE of a task's log lines: what it wrote, then live until it settles. */
  async function streamLogs(id: string, req: IncomingMessage, res: ServerResponse): Promise<void> {
    await rt.get(id); // NOT_FOUND before the stream starts
    const stop = openStream(req, res, unheldAbort());
    try {
      for await (const line of rt.logs(id, { follow: true, signal: stop.signal })) await write(res, `data: ${toJson(line)}\n\n`, stop.signal);
      res.write('event: end\ndata: {}\n\n');
    } catch (error) {
      if (!stop.signal.aborted) res.write(`event: failure\ndata: ${JSON.stringify(describe(error))}\n\n`);
    } finally {
      closeStream(stop, res);
    }
  }

  /** SSE of what changed (see the module comment); the listener is on while a feed is open. */
  function changesFeed(req: IncomingMessage, res: ServerResponse): void {
    const stop = openStream(req, res, unheldAbort());
    feeds.add(res);
    if (!unlisten) {
      unlisten = rt.on('*', onEvent);
      flusher = setInterval(flush, CHANGES_MS);
      flusher.unref();
    }
    stop.signal.addEventListener('abort', () => {
      feeds.delete(res);
      streams.delete(stop);
      res.end();
      if (feeds.size > 0 || !unlisten) return;
      unlisten();
      unlisten = undefined;
      clearInterval(flusher);
      changed.clear();
      submitted = 0;
    });
  }

  /** SSE of committed events from `after` (or the browser's Last-Event-ID after a reconnect), then live. */
  async function events(req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
    const params = url.searchParams;
    const resume = req.headers['last-event-id'];
    const after = typeof resume === 'string' && resume.length > 0 ? resume : params.get('after') || undefined;
    const types = params.getAll('types').flatMap((t) => t.split(',')).filter(Boolean);
    for (const type of types) if (!(EVENT_TYPES as readonly string[]).includes(type)) throw new HttpError(400, 'INVALID_INPUT', `${type} is not an event type`);
    const taskId = params.get('taskId') || undefined;
    // Bad options are an HTTP error, not a stream that ends (which EventSource would open again and again).
    const from = after === undefined ? undefined : store.eventsAfter(after);
    if (taskId !== undefined) await rt.get(taskId);
    const stop = unheldAbort();
    const stream = rt.events({ after: from, taskId, signal: stop.signal, ...(types.length > 0 ? { types: types as EventType[] } : {}) });
    openStream(req, res, stop);
    try {
      for await (const event of stream as AsyncIterable<RuntimeEvent>) await write(res, `id: ${event.cursor}\ndata: ${toJson(event)}\n\n`, stop.signal);
    } catch (error) {
      if (!stop.signal.aborted) res.write(`event: failure\ndata: ${JSON.stringify(describe(error))}\n\n`);
    } finally {
      closeStream(stop, res);
    }
  }

  /** Starts an event-stream answer that ends when `stop` aborts (the client went, or the dashboard closes). */
  function openStream(req: IncomingMessage, res: ServerResponse, stop: AbortController): AbortController {
    streams.add(stop);
    res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-store', connection: 'keep-alive' });
    res.write(': open\n\n');
    const ping = setInterval(() => (res.writableLength > MAX_UNREAD ? res.destroy() : res.write(': ping\n\n')), PING_MS);
    ping.unref();
    stop.signal.addEventListener('abort', () => clearInterval(ping));
    // The client may have gone already (while the task was looked up): then it ends at once.
    res.once('close', () => stop.abort());
    if (req.destroyed || res.destroyed) stop.abort();
    return stop;
  }

  function closeStream(stop: AbortController, res: ServerResponse): void {
    streams.delete(stop);
    stop.abort();
    res.end();
  }

  return {
    route,
    events,
    /** Ends every stream and stops counting. */
    close(): void {
      clearInterval(sampler);
      for (const stop of [...streams]) stop.abort();
    },
  };
}

/**
 * Writes to a stream, waiting while the client has not read what it was sent (or until `signal`);
 * a client that has not read it within {@link STALL_MS} is cut off (its 'close' ends the stream).
 */
async function write(res: ServerResponse, chunk: string, signal: AbortSignal): Promise<void> {
  if (res.write(chunk) || signal.aborted) return;
  const waiting = new AbortController();
  const stop = () => waiting.abort();
  signal.addEventListener('abort', stop, { once: true });
  let stalled = false;
  const deadline = setTimeout(() => {
    stalled = true;
    waiting.abort();
  }, STALL_MS);
  deadline.unref();
  try {
    await once(res, 'drain', { signal: waiting.signal });
  } catch {
    if (stalled) res.destroy();
  } finally {
    clearTimeout(deadline);
    signal.removeEventListener('abort', stop);
  }
}

/**
 * The JSON text of an answer or a stream's message. A bigint (LMDB keeps 64-bit ones in a task's
 * input, output and log fields) is written as its decimal string: JSON.stringify throws on one.
 */
export function toJson(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) => (typeof v === 'bigint' ? v.toString() : v));
}

/** What `fn` gives, or `none` where the store refuses the call (UNSUPPORTED_STORE): it has no such records. */
async function unsupportedAs<T>(fn: () => T | Promise<T>, none: T): Promise<T> {
  try {
    return await fn();
  } catch (error) {
    if ((error as { code?: unknown })?.code === 'UNSUPPORTED_STORE') return none;
    throw error;
  }
}

/** A path segment, percent-decoded; INVALID_INPUT for a malformed one. */
function decodePart(part: string): string {
  try {
    return decodeURIComponent(part);
  } catch {
    throw new HttpError(400, 'INVALID_INPUT', `malformed percent-encoding in ${JSON.stringify(part)}`);
  }
}

function matches(task: Task, q: string): boolean {
  if (task.id.toLowerCase().includes(q) || task.agent.toLowerCase().includes(q) || task.state.includes(q)) return true;
  for (const [name, value] of Object.entries(task.labels)) if (`${name}=${value}`.toLowerCase().includes(q)) return true;
  return false;
}

function optionalString(value: unknown, name: string): string | undefined {
  if (value === undefined || value === null || value === '') return undefined;
  if (typeof value !== 'string') throw new HttpError(400, 'INVALID_INPUT', `${name} must be a string`);
  return value;
}

function describe(error: unknown): { code: string; message: string } {
  const code = (error as { code?: unknown })?.code;
  return { code: typeof code === 'string' ? code : 'INTERNAL', message: error instanceof Error ? error.message : String(error) };
}
