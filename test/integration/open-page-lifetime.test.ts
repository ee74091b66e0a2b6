/**
 * An open dashboard page, or a scraper's open connection, does not keep an unref'd runtime's
 * process alive: a user script (no test runner around it) exits while the test holds the Tasks
 * page's changes feed, an idle connection to the dashboard and one to /metrics open, and a task
 * page's event and log streams. Before, the servers were unref'd but the connections they accepted
 * were not, and the task page's rt.events() and rt.logs({ follow }) held the process as a user's do.
 */
import { spawn } from 'node:child_process';
import { connect, createServer, type Socket } from 'node:net';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { scratchDirs } from '../helpers.js';

const script = fileURLToPath(new URL('../fixtures/scripts/open-page.mjs', import.meta.url));
const root = fileURLToPath(new URL('../..', import.meta.url));
const dir = scratchDirs();

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** A raw connection to `port` that has sent `request` (if any), resolving once `until` was read. */
function hold(port: number, request: string, until: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => {
      if (request === '') resolve(socket);
      else socket.write(request);
    });
    let text = '';
    socket.on('data', (chunk) => {
      text += chunk.toString();
      if (request !== '' && text.includes(until)) resolve(socket);
    });
    socket.on('error', reject);
  });
}

describe('an unref’d runtime with a page open on its dashboard', () => {
  it('lets the process exit while the page and a scraper hold connections open', async () => {
    const child = spawn(process.execPath, [script, dir(), String(await freePort())], { cwd: root, stdio: ['pipe', 'pipe', 'inherit'], timeout: 20_000 });
    const lines: unknown[] = [];
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    const reader = createInterface({ input: child.stdout! });
    const first = new Promise<{ dashboard: string; metricsPort: number; taskId: string }>((resolve) => reader.once('line', (line) => resolve(JSON.parse(line))));
    const { dashboard, metricsPort, taskId } = await first;
    reader.on('line', (line) => lines.push(JSON.parse(line)));
    const port = Number(new URL(dashboard).port);
    const sockets = await Promise.all([
      // The Tasks page's changes feed: an event stream that stays open.
      hold(port, `GET /api/changes HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`, ': open'),
      // The overview's poll, on a connection kept alive after its answer.
      hold(port, `GET /api/overview HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nConnection: keep-alive\r\n\r\n`, '"stats"'),
      // A scraper connected, that has not asked yet.
      hold(metricsPort, '', ''),
      // A task page: its events and its log lines, live (rt.events() and rt.logs({ follow }) behind them).
      hold(port, `GET /api/events?taskId=${taskId} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`, 'task.queued'),
      hold(port, `GET /api/tasks/${taskId}/logs HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`, ': open'),
    ]);
    child.stdin!.write('connected\n');
    const code = await exited;
    for (const socket of sockets) socket.destroy();
    expect(lines).toEqual([{ unref: true }, { exit: 0 }]);
    expect(code).toBe(0);
  });
});
