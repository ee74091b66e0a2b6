/**
 * The optional `/metrics` endpoint: a bare `node:http` server on loopback that answers Prometheus
 * scrapes and nothing else.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { TroupeError } from '../errors.js';

/** What the endpoint serves on each scrape. */
export interface MetricsEndpoint {
  /** Exposition text, rendered per request so gauges are read at scrape time. */
  render(): Promise<string>;
  /** Content type of that text. */
  readonly contentType: string;
}

/** A listening metrics server. */
export interface MetricsServer {
  /** The bound port (the OS's choice when 0 was asked for). */
  readonly port: number;
  /** Stops listening and drops open connections; repeated calls share one promise. */
  close(): Promise<void>;
}

/**
 * Serves GET `/metrics` on 127.0.0.1:`port` (0 = any free port). Other paths answer 404 and other
 * methods on `/metrics` 405. Only loopback is bound: metrics name agents and load, which is not
 * something to expose to the network by default.
 */
export function serveMetrics(endpoint: MetricsEndpoint, port: number): Promise<MetricsServer> {
  if (!Number.isInteger(port) || port < 0 || port > 65_535) {
    return Promise.reject(new RangeError(`metrics port must be an integer in 0..65535, got ${String(port)}`));
  }
  const server = createServer((req, res) => void handle(endpoint, req, res));
  return new Promise((resolve, reject) => {
    server.once('error', (error: NodeJS.ErrnoException) => {
      // A port taken by another process is a setting to change, not a crash.
      if (error.code === 'EADDRINUSE' || error.code === 'EACCES') reject(new TroupeError('INVALID_OPTIONS', `options.metricsPort: cannot listen on 127.0.0.1:${port} (${error.code}: ${error.message})`, { cause: error }));
      else reject(error);
    });
    server.listen(port, '127.0.0.1', () => {
      server.removeAllListeners('error');
      // Serving scrapes, or a scraper's open connection, must not keep the process alive by itself
      // (after rt.unref()): the runtime does that.
      server.unref();
      server.on('connection', (socket) => socket.unref());
      let closing: Promise<void> | undefined;
      resolve({
        port: (server.address() as AddressInfo).port,
        close() {
          closing ??= new Promise<void>((done, fail) => {
            server.close((err) => (err ? fail(err) : done()));
            // Also drop connections mid-scrape, so close() never waits on a slow or stuck scraper.
            server.closeAllConnections();
          });
          return closing;
        },
      });
    });
  });
}

async function handle(endpoint: MetricsEndpoint, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const url = req.url ?? '/';
  const query = url.indexOf('?');
  const path = query === -1 ? url : url.slice(0, query);
  if (path !== '/metrics') return reply(res, 404, 'not found\n');
  if (req.method !== 'GET') {
    res.setHeader('Allow', 'GET');
    return reply(res, 405, 'method not allowed\n');
  }
  try {
    const body = await endpoint.render();
    res.writeHead(200, { 'Content-Type': endpoint.contentType });
    res.end(body);
  } catch (err) {
    reply(res, 500, `metrics failed: ${err instanceof Error ? err.message : String(err)}\n`);
  }
}

function reply(res: ServerResponse, status: number, body: string): void {
  res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8' });
  res.end(body);
}
