/**
 * The dashboard's HTTP server: a bare `node:http` server that serves the page (the files of the
 * package's `dashboard/` directory: nothing is loaded from anywhere else), a JSON API over the
 * runtime's public methods (api.ts), and Server-Sent Events of the runtime's committed events.
 *
 * Who may call it: with a token (always, off loopback), every API request must carry it, as
 * `Authorization: Bearer <token>` or `?token=` (the page's event streams, which cannot set
 * headers); the page's static files are served without it. A request to a loopback bind whose
 * Host is not a loopback name (DNS rebinding), or whose Origin is another site (a page elsewhere
 * posting to it), is refused, token or not.
 */
import { timingSafeEqual } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { TroupeError } from '../errors.js';
import { within } from '../within.js';
import { dashboardApi, HttpError, LMDB_DASHBOARD, toJson, type DashboardRuntime, type DashboardStore } from './api.js';
import { isLoopback, type ResolvedDashboard } from './options.js';

/** A listening dashboard. */
export interface DashboardServer {
  /** Where to open it (with `#token=` when a token is needed). */
  readonly url: string;
  readonly port: number;
  /** Stops listening and ends open connections (event streams included); repeated calls share one promise. */
  close(): Promise<void>;
}

/** The page's files: name → content type. Nothing else is served. */
const FILES = new Map<string, string>([
  ['index.html', 'text/html; charset=utf-8'],
  ['app.js', 'text/javascript; charset=utf-8'],
  ['lib.js', 'text/javascript; charset=utf-8'],
  ['app.css', 'text/css; charset=utf-8'],
]);
/** The package's dashboard/ directory (this file is dist/src/dashboard/server.js). */
const ASSETS = new URL('../../../dashboard/', import.meta.url);
/** How long close() lets open streams end before cutting them. */
const CLOSE_GRACE_MS = 1_000;
/** Largest request body taken (an input message, a reason). */
const MAX_BODY = 1_048_576;

/** Serves the dashboard of `rt` per `options`; `store` says what its store is (LMDB unless told). */
export async function serveDashboard(rt: DashboardRuntime, options: ResolvedDashboard, store: DashboardStore = LMDB_DASHBOARD): Promise<DashboardServer> {
  const api = dashboardApi(rt, store);
  const open = new Set<ServerResponse>();
  const server = createServer((req, res) => {
    open.add(res);
    res.once('close', () => open.delete(res));
    void handle(req, res).catch((error: unknown) => fail(res, error));
  });

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = URL.canParse(req.url ?? '/', 'http://dashboard.invalid') ? new URL(req.url ?? '/', 'http://dashboard.invalid') : undefined;
    if (!url) throw new HttpError(400, 'INVALID_INPUT', 'the request target is not a URL');
    if (!hostAllowed(req.headers.host, options)) throw new HttpError(421, 'FORBIDDEN', 'this dashboard does not answer to that Host');
    const origin = req.headers.origin;
    if (origin !== undefined && origin !== 'null' && !(URL.canParse(origin) && new URL(origin).host === req.headers.host?.toLowerCase())) {
      throw new HttpError(403, 'FORBIDDEN', 'requests from another origin are refused');
    }
    const path = url.pathname;
    // The page's own files hold no data and are fetched by the browser without the token (the URL
    // carries it in the fragment, which is never sent; <script> and <link> cannot add a header).
    if (req.method === 'GET' && !path.startsWith('/api/')) return serveFile(res, path === '/' ? 'index.html' : path.slice(1));
    if (options.token !== undefined && !authorized(req, url, options.token)) throw new HttpError(401, 'UNAUTHORIZED', 'a token is required: Authorization: Bearer <token>, or ?token=');
    if (path === '/api/events' && req.method === 'GET') return api.events(req, res, url);
    if (req.method !== 'GET' && req.method !== 'POST') throw new HttpError(405, 'METHOD_NOT_ALLOWED', `${req.method} is not served`);
    const body = req.method === 'POST' ? await readJson(req) : undefined;
    const answer = await api.route(req.method, path, url.searchParams, body, req, res);
    if (answer === undefined) return; // a stream, answered by the handler
    send(res, 200, answer);
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', (error: NodeJS.ErrnoException) => {
      api.close();
      if (error.code === 'EADDRINUSE' || error.code === 'EACCES' || error.code === 'EADDRNOTAVAIL' || error.code === 'ENOTFOUND') {
        reject(new TroupeError('INVALID_OPTIONS', `options.dashboard: cannot listen on ${options.host}:${options.port} (${error.code}: ${error.message})`, { cause: error }));
      } else reject(error);
    });
    server.listen(options.port, options.host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  // A dashboard left open, or a page open on it, must not keep the process alive by itself: the
  // runtime does that (and not after rt.unref()).
  server.unref();
  server.on('connection', (socket) => socket.unref());
  const shownHost = options.host.includes(':') && !options.host.startsWith('[') ? `[${options.host}]` : options.host;
  const url = `http://${shownHost}:${port}/${options.token === undefined ? '' : `#token=${encodeURIComponent(options.token)}`}`;
  let closing: Promise<void> | undefined;
  return {
    url,
    port,
    close: () =>
      (closing ??= (async () => {
        // Streams end as streams do (their last chunk sent), so a client sees an end, not a reset;
        // whatever has not ended within a second is cut.
        api.close();
        const ending = [...open].map((res) => new Promise((resolve) => res.once('close', resolve)));
        await within(CLOSE_GRACE_MS, Promise.all(ending));
        for (const res of open) res.destroy();
        await new Promise<void>((resolve) => {
          server.close(() => resolve());
          server.closeAllConnections();
        });
      })()),
  };
}

/**
 * The Host a browser sends: for a loopback bind, a loopback name; bound to another address, any
 * name (the token guards it). The port is not compared: a forwarded one (docker -p, ssh -L, a
 * port-forward or a proxy) is another than the one listened on, and a rebinding attacker's page
 * is told apart by its name.
 */
function hostAllowed(given: string | undefined, options: ResolvedDashboard): boolean {
  // A name (or a bracketed IPv6 address), then the port, which a browser leaves out when it is 80.
  const match = given === undefined ? null : /^(\[[^\]]*\]|[^:[\]]*)(?::(\d+))?$/.exec(given.toLowerCase());
  if (!match) return false;
  return !isLoopback(options.host) || isLoopback(match[1]!.replace(/^\[(.*)\]$/, '$1'));
}

function authorized(req: IncomingMessage, url: URL, token: string): boolean {
  const header = req.headers.authorization;
  const given = header?.startsWith('Bearer ') ? header.slice(7) : url.searchParams.get('token');
  if (typeof given !== 'string') return false;
  const a = Buffer.from(given);
  const b = Buffer.from(token);
  return a.length === b.length && timingSafeEqual(a, b);
}

async function serveFile(res: ServerResponse, name: string): Promise<void> {
  const type = FILES.get(name);
  if (type === undefined) throw new HttpError(404, 'NOT_FOUND', `no ${name}`);
  const body = await readFile(new URL(name, ASSETS));
  // Not framed by another site: its buttons act on the runtime (clickjacking).
  res.writeHead(200, { 'content-type': type, 'cache-control': 'no-cache', 'x-content-type-options': 'nosniff', 'x-frame-options': 'DENY', 'content-security-policy': "default-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'" });
  res.end(body);
}

async function readJson(req: IncomingMessage): Promise<unknown> {
  const type = req.headers['content-type'] ?? '';
  // JSON only: a form from another site cannot send it without a preflight the server never grants.
  if (!type.startsWith('application/json')) throw new HttpError(415, 'INVALID_INPUT', 'POST bodies are application/json');
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY) throw new HttpError(413, 'INVALID_INPUT', `a body is at most ${MAX_BODY} bytes`);
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  if (text.length === 0) return {};
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw new HttpError(400, 'INVALID_INPUT', 'the body is not JSON');
  }
}

/** Answers JSON: the text is made before the head is sent, so a body that cannot be written answers an error, not an empty 200. */
export function send(res: ServerResponse, status: number, body: unknown): void {
  if (res.headersSent) return void res.end();
  const text = toJson(body);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' });
  res.end(text);
}

/** HTTP statuses of the runtime's codes a dashboard call may meet (anything else is a 500). */
const STATUS_OF: Partial<Record<string, number>> = {
  NOT_FOUND: 404,
  UNKNOWN_AGENT: 404,
  INVALID_INPUT: 400,
  INVALID_OPTIONS: 400,
  ILLEGAL_TRANSITION: 400,
  CURSOR_EXPIRED: 410,
  CLOSED: 503,
  ILLEGAL_STATE: 503,
  STORE_FAILED: 503,
  // A call the store has no backing for (PostgreSQL): the page shows its code and message.
  UNSUPPORTED_STORE: 501,
};

/** Answers an error: its HTTP status, or one from its TroupeError code. */
function fail(res: ServerResponse, error: unknown): void {
  if (error instanceof HttpError) return send(res, error.status, { error: { code: error.code, message: error.message } });
  if (error instanceof TroupeError) {
    const status = STATUS_OF[error.code] ?? 500;
    return send(res, status, { error: { code: error.code, message: error.message } });
  }
  send(res, 500, { error: { code: 'INTERNAL', message: error instanceof Error ? error.message : String(error) } });
}
