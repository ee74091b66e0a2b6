/**
 * The control server of `troupe run`: answers the protocol in control.ts on a Unix domain socket,
 * one request at a time per line, with any number of requests in flight per connection. Closing a
 * connection aborts its waits and streams.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { chmodSync, unlinkSync } from 'node:fs';
import { PRIVATE_FILE_MODE } from '../store/private-files.js';
import { describeError } from './cli-error.js';
import { connectControl, readLines, type ControlReply } from './control.js';
import type { MethodTable, Params } from './methods.js';

/** A listening control server. */
export interface ControlServer {
  readonly path: string;
  /** Stops accepting connections; open ones keep being served until {@link ControlServer.close}. */
  stopAccepting(): void;
  /** Ends every connection, aborting its streams, and removes the socket file. */
  close(): Promise<void>;
}

/**
 * Listens on `path`. A socket file already there is removed only when nothing answers on it (a
 * runtime that died without cleaning up); if something answers, this throws.
 */
export async function startControlServer(methods: MethodTable, path: string): Promise<ControlServer> {
  await removeStaleSocket(path);
  const connections = new Set<{ socket: Socket; abort: AbortController }>();
  const server: Server = createServer((socket) => {
    const connection = { socket, abort: new AbortController() };
    connections.add(connection);
    socket.on('error', () => undefined);
    socket.on('close', () => {
      connection.abort.abort();
      connections.delete(connection);
    });
    readLines(socket, (line) => void serve(methods, line, socket, connection.abort.signal));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (error: NodeJS.ErrnoException) => reject(new Error(`cannot listen on ${path}: ${error.message}`, { cause: error })));
    server.listen(path, () => resolve());
  });
  try {
    // connect() needs write permission on the socket, so 0600 keeps other users out whatever the
    // umask. The instant between bind and this chmod is covered by the data dir being 0700; only
    // the tmpdir fallback of a too-long path (control.ts) is exposed for it, and only under a
    // umask that grants others write.
    chmodSync(path, PRIVATE_FILE_MODE);
  } catch (error) {
    await new Promise<void>((resolve) => server.close(() => resolve()));
    throw new Error(`cannot set the mode of ${path}: ${(error as Error).message}`, { cause: error });
  }
  let closing: Promise<void> | undefined;
  return {
    path,
    stopAccepting: () => {
      if (server.listening) server.close();
    },
    close: () =>
      (closing ??= (async () => {
        const closed = new Promise<void>((resolve) => (server.listening ? server.close(() => resolve()) : resolve()));
        for (const { socket, abort } of connections) {
          abort.abort();
          socket.end();
          // A peer that does not read must not hold up shutdown.
          setTimeout(() => socket.destroy(), 1_000).unref();
        }
        await closed;
        try {
          unlinkSync(path);
        } catch {
          // Already gone: server.close() removes it on most platforms.
        }
      })()),
  };
}

/**
 * Removes the socket a dead runtime left at `path`; throws if a live process answers there (a
 * runtime on PostgreSQL checks before it starts: no store lock keeps a second one off its data dir).
 */
export async function removeStaleSocket(path: string): Promise<void> {
  let client;
  try {
    client = await connectControl(path);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ECONNREFUSED' || code === 'ENOTSOCK') unlinkSync(path);
    else if (code !== 'ENOENT') throw error;
    return;
  }
  await client.close();
  throw new Error(`another process answers on ${path}`);
}

/** Handles one request line. */
async function serve(methods: MethodTable, line: string, socket: Socket, signal: AbortSignal): Promise<void> {
  const send = async (reply: ControlReply) => {
    if (socket.destroyed || socket.writableEnded) return;
    if (!socket.write(`${JSON.stringify(reply)}\n`)) await waitForDrain(socket, signal);
  };
  let request: { id?: unknown; method?: unknown; params?: unknown };
  try {
    request = JSON.parse(line) as typeof request;
  } catch {
    await send({ id: null, ok: false, error: { code: 'INVALID_INPUT', message: 'a request must be one line of JSON' } });
    return;
  }
  const id = typeof request === 'object' && request !== null && typeof request.id === 'number' ? request.id : null;
  if (id === null || typeof request.method !== 'string') {
    await send({ id, ok: false, error: { code: 'INVALID_INPUT', message: 'a request is { id: number, method: string, params?: object }' } });
    return;
  }
  const params = request.params ?? {};
  if (typeof params !== 'object' || params === null || Array.isArray(params)) {
    await send({ id, ok: false, error: { code: 'INVALID_INPUT', message: 'params must be an object' } });
    return;
  }
  const method = request.method;
  try {
    const unary = Object.hasOwn(methods.unary, method) ? methods.unary[method] : undefined;
    if (unary) {
      const result = await unary(params as Params, signal);
      await send({ id, ok: true, result: result ?? null });
      return;
    }
    const stream = Object.hasOwn(methods.streams, method) ? methods.streams[method] : undefined;
    if (!stream) {
      await send({ id, ok: false, error: { code: 'INVALID_INPUT', message: `unknown method ${JSON.stringify(method)}` } });
      return;
    }
    const iterator = stream(params as Params, signal)[Symbol.asyncIterator]();
    try {
      for (;;) {
        const next = await nextOrAbort(iterator, signal);
        if (next === undefined || next.done) break;
        await send({ id, item: next.value });
      }
    } finally {
      // Not awaited: a generator parked in a live wait finishes when its own signal fires.
      void iterator.return?.()?.catch(() => undefined);
    }
    await send({ id, end: true });
  } catch (error) {
    if (signal.aborted) return;
    await send({ id, ok: false, error: describeError(error) });
  }
}

/** The iterator's next result, or undefined once `signal` aborts. */
function nextOrAbort<T>(iterator: AsyncIterator<T>, signal: AbortSignal): Promise<IteratorResult<T> | undefined> {
  if (signal.aborted) return Promise.resolve(undefined);
  return new Promise((resolve, reject) => {
    const onAbort = () => resolve(undefined);
    signal.addEventListener('abort', onAbort, { once: true });
    iterator.next().then(
      (result) => {
        signal.removeEventListener('abort', onAbort);
        resolve(result);
      },
      (error: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(error);
      },
    );
  });
}

function waitForDrain(socket: Socket, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      socket.off('drain', done);
      socket.off('close', done);
      signal.removeEventListener('abort', done);
      resolve();
    };
    socket.once('drain', done);
    socket.once('close', done);
    signal.addEventListener('abort', done, { once: true });
  });
}
