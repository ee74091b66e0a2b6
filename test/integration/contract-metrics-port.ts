/**
 * `metricsPort` (README, "Streams and metrics"), written once and run on both stores
 * (contract-lmdb.test.ts, contract-postgres.test.ts): `GET /metrics` on 127.0.0.1 serves the
 * runtime's `metrics({ format: 'prometheus' })` with prom-client's content type, the port is free
 * again once the runtime closed, and a bad port or one in use is INVALID_OPTIONS with the same
 * message on both.
 */
import { createServer, type Server } from 'node:net';
import { describe, expect, it } from 'vitest';
import { builtinAgent } from 'troupe';
import { rejection } from '../helpers.js';
import type { ContractBackend } from './contract.js';

/** A server listening on a free port of 127.0.0.1, and that port. */
async function listening(): Promise<{ server: Server; port: number }> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, port: (server.address() as { port: number }).port };
}

function closed(server: Server): Promise<void> {
  return new Promise((resolve, reject) => server.close((error) => (error ? reject(error) : resolve())));
}

/** Registers the `metricsPort` tests against `backend` under `name`. */
export function metricsPortContract(name: string, backend: ContractBackend): void {
  describe(`metricsPort on ${name}`, () => {
    it('serves GET /metrics on 127.0.0.1 as metrics({ format: prometheus }), and frees the port on close', async () => {
      const probe = await listening();
      await closed(probe.server);
      const rt = await backend.open({ agents: [builtinAgent('echo')], metricsPort: probe.port });
      expect(rt.metricsPort).toBe(probe.port);
      expect((await rt.wait((await rt.submit({ agent: 'echo', input: 1 })).id)).state).toBe('done');
      const url = `http://127.0.0.1:${probe.port}/metrics`;
      const response = await fetch(url);
      expect(response.status).toBe(200);
      expect(response.headers.get('content-type')).toBe('text/plain; version=0.0.4; charset=utf-8');
      const text = await response.text();
      for (const metric of ['troupe_submit_to_start_seconds histogram', 'troupe_start_to_settle_seconds histogram', 'troupe_attempts_total counter', 'troupe_queue_depth gauge', 'troupe_slots_free gauge', 'troupe_attempts_running gauge']) {
        expect(text).toContain(`# TYPE ${metric}`);
      }
      expect(text).toMatch(/troupe_attempts_total\{exit="success"\} 1/);
      expect(text).toMatch(/troupe_queue_depth\{agent="echo"\} 0/);
      // The same text as the call gives (the gauges read at scrape time: nothing runs, nothing changes).
      expect(text).toBe(await rt.metrics({ format: 'prometheus' }));
      expect((await fetch(`http://127.0.0.1:${probe.port}/other`)).status).toBe(404);
      expect((await fetch(url, { method: 'POST' })).status).toBe(405);
      await rt.close();
      expect(rt.metricsPort).toBe(probe.port);
      await expect(fetch(url)).rejects.toThrow();
      // Free again: another server can listen on it.
      const again = createServer();
      await new Promise<void>((resolve) => again.listen(probe.port, '127.0.0.1', resolve));
      await closed(again);
    });

    it('refuses a bad port and one in use with INVALID_OPTIONS, as on the other store', async () => {
      const badPort = await rejection(backend.open({ metricsPort: 70_000 }));
      expect(badPort).toMatchObject({ code: 'INVALID_OPTIONS', message: 'options.metricsPort must be a port number (1..65535), or 0 for off' });
      expect(await rejection(backend.open({ metricsPort: -1 }))).toMatchObject(badPort);
      const busy = await listening();
      try {
        const error = await rejection(backend.open({ agents: [builtinAgent('echo')], metricsPort: busy.port }));
        expect(error.code).toBe('INVALID_OPTIONS');
        expect(error.message).toMatch(new RegExp(`^options\\.metricsPort: cannot listen on 127\\.0\\.0\\.1:${busy.port} \\(EADDRINUSE: `));
      } finally {
        await closed(busy.server);
      }
    });
  });
}
