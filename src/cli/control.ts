/**
 * The control protocol between `troupe` commands and a running `troupe run`: newline-delimited
 * JSON over a Unix domain socket in the data dir.
 *
 * - request: `{ id, method, params }`
 * - reply: `{ id, ok: true, result }` or `{ id, ok: false, error: { code, message } }`
 * - a streaming method (`logs`, `events`, `watch`) sends `{ id, item }` messages, then
 *   `{ id, end: true }`, or an error reply if it fails midway. Closing the connection stops it.
 *
 * This module holds the wire types, the line framing and the client. It imports nothing heavy,
 * so a command that talks to a live runtime starts fast.
 */
import { connect, type Socket } from 'node:net';
import { createHash } from 'node:crypto';
import { lstatSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { isAbsolute, join } from 'node:path';
import { CliError, EXIT } from './cli-error.js';

/** The socket's file name inside the data dir. */
export const SOCKET_NAME = 'control.sock';

/** Longest Unix socket path the platform takes (sun_path less its NUL); Node truncates longer ones silently. */
const MAX_SOCKET_PATH = process.platform === 'linux' ? 107 : 103;

/**
 * The control socket of a data dir (absolute): `<dataDir>/control.sock`, or, when that path is too
 * long for a Unix socket, a file named by a hash of the data dir in this user's private socket
 * directory (see {@link privateSocketDir}), never in a directory others can write to.
 */
export function socketPathOf(dataDir: string): string {
  const path = join(dataDir, SOCKET_NAME);
  if (Buffer.byteLength(path) <= MAX_SOCKET_PATH) return path;
  return join(privateSocketDir(), `troupe-${createHash('sha256').update(dataDir).digest('hex').slice(0, 20)}.sock`);
}

/**
 * Where this user's control sockets go when their data dir's path is too long: `$XDG_RUNTIME_DIR`
 * when it is set and private to this user (as the XDG spec makes it), else `<tmpdir>/troupe-<uid>`,
 * a directory `troupe run` creates `0700`.
 */
export function privateSocketDir(): string {
  const uid = process.getuid?.();
  const runtimeDir = process.env.XDG_RUNTIME_DIR;
  if (runtimeDir && isAbsolute(runtimeDir) && problemOf(runtimeDir, uid) === undefined) return runtimeDir;
  return join(tmpdir(), `troupe-${uid ?? 'user'}`);
}

/**
 * Makes (if missing) and checks the directory a socket is bound in: a real directory (not a
 * symlink), owned by this user, with no group or other permissions. Throws CONTROL_FAILED
 * otherwise: another user could otherwise plant the socket the CLI talks to.
 */
export function preparePrivateDir(dir: string, uid = process.getuid?.()): void {
  try {
    mkdirSync(dir, { mode: 0o700 });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw new CliError('CONTROL_FAILED', `cannot create the socket directory ${dir}: ${(error as Error).message}`, EXIT.FAILED);
  }
  const problem = problemOf(dir, uid);
  if (problem) throw new CliError('CONTROL_FAILED', `refusing to put the control socket in ${dir}: ${problem}`, EXIT.FAILED);
}

function problemOf(dir: string, uid: number | undefined): string | undefined {
  const stat = lstatSync(dir, { throwIfNoEntry: false });
  if (!stat) return 'it does not exist';
  if (!stat.isDirectory()) return 'it is not a directory (or is a symlink)';
  if (uid !== undefined && stat.uid !== uid) return `it belongs to uid ${stat.uid}, not to uid ${uid}`;
  if ((stat.mode & 0o077) !== 0) return `its mode ${(stat.mode & 0o777).toString(8)} lets group or others in`;
  return undefined;
}

/**
 * Checks a control socket before the CLI connects: it must be a socket owned by this user, or
 * what the CLI sends (inputs included) could go to whoever planted it. Throws CONTROL_FAILED.
 */
export function checkSocketOwner(path: string, uid = process.getuid?.()): void {
  const stat = lstatSync(path, { throwIfNoEntry: false });
  if (!stat) return;
  if (!stat.isSocket()) throw new CliError('CONTROL_FAILED', `${path} is not a socket: refusing to connect`, EXIT.FAILED);
  if (uid !== undefined && stat.uid !== uid) throw new CliError('CONTROL_FAILED', `the control socket ${path} belongs to uid ${stat.uid}, not to you (uid ${uid}): refusing to connect`, EXIT.FAILED);
}

/** A request line. */
export interface ControlRequest {
  id: number;
  method: string;
  params?: Record<string, unknown>;
}

/** An error as it crosses the socket. */
export interface WireFailure {
  code: string;
  message: string;
}

/** A reply line. */
export type ControlReply =
  | { id: number | null; ok: true; result: unknown }
  | { id: number | null; ok: false; error: WireFailure }
  | { id: number; item: unknown }
  | { id: number; end: true };

/** Longest request line the server accepts, so a broken peer cannot grow its buffer without bound. */
export const MAX_LINE = 16 * 1024 * 1024;

/**
 * Longest reply line the client reads. The runtime is trusted (it answers on this user's 0600
 * socket) and a task's input or output may be large: this only stays well under the longest
 * string V8 can make.
 */
export const MAX_REPLY = 256 * 1024 * 1024;

/** What commands talk to: a live runtime over the socket, or a runtime opened in this process. */
export interface Backend {
  /** `socket`: a live runtime answers; `direct`: the data dir was opened here, nothing dispatches. */
  readonly mode: 'socket' | 'direct';
  call(method: string, params?: Record<string, unknown>): Promise<unknown>;
  /** Yields a streaming method's items; aborting `signal` ends it quietly. */
  stream(method: string, params: Record<string, unknown>, signal?: AbortSignal): AsyncGenerator<unknown>;
  close(): Promise<void>;
}

/**
 * Calls `onLine` for each complete line read from `socket`. A line that grows past `maxLine`
 * characters calls `onTooLong` (default: destroy the socket) and nothing more is read.
 */
export function readLines(socket: Socket, onLine: (line: string) => void, options: { maxLine?: number; onTooLong?: () => void } = {}): void {
  const maxLine = options.maxLine ?? MAX_LINE;
  const onTooLong = options.onTooLong ?? (() => socket.destroy(new Error(`control line longer than ${maxLine} characters`)));
  // The pieces of the line not yet ended, joined once it ends: a long line is copied once, not per chunk.
  let pieces: string[] = [];
  let pending = 0;
  let tooLong = false;
  socket.setEncoding('utf8');
  socket.on('data', (chunk: string) => {
    let start = 0;
    while (!tooLong) {
      const newline = chunk.indexOf('\n', start);
      const end = newline === -1 ? chunk.length : newline;
      pending += end - start;
      if (pending > maxLine) {
        tooLong = true;
        pieces = [];
        onTooLong();
        return;
      }
      pieces.push(chunk.slice(start, end));
      if (newline === -1) return;
      const line = pieces.join('');
      pieces = [];
      pending = 0;
      start = newline + 1;
      if (line.trim().length > 0) onLine(line);
    }
  });
}

/** Connects to a control socket. Rejects with the connect error (ENOENT, ECONNREFUSED, …). */
export function connectControl(path: string): Promise<ControlClient> {
  try {
    checkSocketOwner(path);
  } catch (error) {
    return Promise.reject(error);
  }
  return new Promise((resolve, reject) => {
    const socket = connect(path);
    socket.once('error', reject);
    socket.once('connect', () => {
      socket.off('error', reject);
      resolve(new ControlClient(socket));
    });
  });
}

/** How long a runtime that accepted a connection has to answer its first request. */
export const ANSWER_TIMEOUT_MS = 5_000;

/**
 * Connects to a control socket and pings the runtime: a process that accepts the connection but
 * never answers (stopped with kill -STOP, or wedged) would otherwise hold the command forever.
 * Rejects as {@link connectControl} does, or with NOT_ANSWERING (exit 3) after `timeoutMs`.
 */
export async function connectAnswering(path: string, timeoutMs = ANSWER_TIMEOUT_MS): Promise<ControlClient> {
  const client = await connectControl(path);
  let timer: NodeJS.Timeout | undefined;
  const silent = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new CliError('NOT_ANSWERING', `a runtime accepted the connection on ${path} but did not answer within ${timeoutMs} ms`, EXIT.NO_RUNTIME)), timeoutMs);
  });
  try {
    await Promise.race([client.call('ping'), silent]);
    return client;
  } catch (error) {
    client.destroy();
    throw error;
  } finally {
    clearTimeout(timer);
  }
}

interface StreamSink {
  item(value: unknown): void;
  end(): void;
  fail(error: Error): void;
}

/** The client side of the protocol. */
export class ControlClient implements Backend {
  readonly mode = 'socket' as const;
  readonly #socket: Socket;
  #nextId = 1;
  readonly #calls = new Map<number, { resolve(value: unknown): void; reject(error: Error): void }>();
  readonly #streams = new Map<number, StreamSink>();
  #gone: Error | undefined;

  /** `maxReply`: the longest reply line read (default {@link MAX_REPLY}); a longer one fails every call with CONTROL_FAILED. */
  constructor(socket: Socket, options: { maxReply?: number } = {}) {
    this.#socket = socket;
    const maxLine = options.maxReply ?? MAX_REPLY;
    readLines(socket, (line) => this.#onLine(line), {
      maxLine,
      onTooLong: () => {
        this.#gone ??= new CliError('CONTROL_FAILED', `a reply from the runtime is longer than ${maxLine} characters`, EXIT.FAILED);
        socket.destroy();
      },
    });
    socket.on('error', () => undefined);
    socket.on('close', () => {
      this.#gone ??= new CliError('DISCONNECTED', 'the runtime closed the control connection', EXIT.NO_RUNTIME);
      for (const call of this.#calls.values()) call.reject(this.#gone);
      for (const sink of this.#streams.values()) sink.fail(this.#gone);
      this.#calls.clear();
      this.#streams.clear();
    });
  }

  call(method: string, params: Record<string, unknown> = {}): Promise<unknown> {
    if (this.#gone) return Promise.reject(this.#gone);
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      this.#calls.set(id, { resolve, reject });
      this.#send({ id, method, params });
    });
  }

  async *stream(method: string, params: Record<string, unknown>, signal?: AbortSignal): AsyncGenerator<unknown> {
    if (this.#gone) throw this.#gone;
    const id = this.#nextId++;
    const items: unknown[] = [];
    let ended = false;
    let failure: Error | undefined;
    let wake: (() => void) | undefined;
    this.#streams.set(id, {
      item: (value) => (items.push(value), wake?.()),
      end: () => ((ended = true), wake?.()),
      fail: (error) => ((failure = error), wake?.()),
    });
    const onAbort = () => ((ended = true), wake?.());
    signal?.addEventListener('abort', onAbort, { once: true });
    this.#send({ id, method, params });
    try {
      for (;;) {
        if (signal?.aborted) return;
        if (items.length > 0) {
          yield items.shift();
          continue;
        }
        if (failure) throw failure;
        if (ended) return;
        await new Promise<void>((resolve) => (wake = resolve));
        wake = undefined;
      }
    } finally {
      signal?.removeEventListener('abort', onAbort);
      const live = this.#streams.delete(id);
      // The protocol stops a stream by closing the connection: one command, one connection.
      if (live && !failure) this.#socket.destroy();
    }
  }

  /** Drops the connection at once: {@link ControlClient.close} waits for a peer that may never answer. */
  destroy(): void {
    this.#socket.destroy();
  }

  async close(): Promise<void> {
    if (this.#socket.destroyed) return;
    await new Promise<void>((resolve) => {
      this.#socket.once('close', () => resolve());
      this.#socket.end();
    });
  }

  #send(request: ControlRequest): void {
    this.#socket.write(`${JSON.stringify(request)}\n`);
  }

  #onLine(line: string): void {
    let reply: ControlReply;
    try {
      reply = JSON.parse(line) as ControlReply;
    } catch {
      this.#socket.destroy(new Error('the runtime sent a line that is not JSON'));
      return;
    }
    if (typeof reply !== 'object' || reply === null || typeof reply.id !== 'number') return;
    const call = this.#calls.get(reply.id);
    if (call) {
      this.#calls.delete(reply.id);
      if ('ok' in reply && reply.ok) call.resolve(reply.result);
      else if ('ok' in reply) call.reject(remoteError(reply.error));
      return;
    }
    const sink = this.#streams.get(reply.id);
    if (!sink) return;
    if ('item' in reply) sink.item(reply.item);
    else if ('end' in reply) {
      this.#streams.delete(reply.id);
      sink.end();
    } else if ('ok' in reply && !reply.ok) {
      this.#streams.delete(reply.id);
      sink.fail(remoteError(reply.error));
    }
  }
}

/** An error the runtime reported, with its code. */
export function remoteError(failure: WireFailure | undefined): CliError {
  return new CliError(failure?.code ?? 'INTERNAL', failure?.message ?? 'the runtime reported an error without a message');
}
