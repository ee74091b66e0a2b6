/**
 * Lets the process exit while a node-postgres client's connection stays open. The runtime on
 * PostgreSQL keeps the process alive with its KeepAlive (src/keep-alive.ts), as the LMDB runtime
 * does, not with its sockets: an open connection that held the loop would keep a script alive
 * after `rt.unref()` until `close()`.
 */
import { Socket } from 'node:net';
import type pg from 'pg';

/**
 * Unrefs `client`'s socket. Call it once the client is connected: a TLS connection replaces the
 * stream as it upgrades. A custom `stream` that is no socket has nothing to unref.
 */
export function unrefClient(client: pg.Client): void {
  const stream: unknown = client.connection.stream;
  if (stream instanceof Socket) stream.unref();
}
