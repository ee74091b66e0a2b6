/**
 * One long-lived channel per worker thread, shared by comlink request/response traffic in both
 * directions and the fire-and-forget batches. Keeping all of it on one MessagePort keeps it in
 * order, which is what lets the host know that every log line of an attempt has arrived before it
 * settles the attempt, or answers its call. (A MessageChannel per task costs about 3x the raw
 * throughput, so there is exactly one.)
 */
import type { MessagePort } from 'node:worker_threads';
import type { ChannelEnvelope, StartBatch, WorkerBatch } from './wire.js';

type Listener = (event: { data: unknown }) => void;

/** The slice of comlink's Endpoint interface this channel implements. */
export interface RpcEndpoint {
  postMessage(message: unknown, transfer?: readonly unknown[]): void;
  addEventListener(type: string, listener: Listener): void;
  removeEventListener(type: string, listener: Listener): void;
}

/** Both ends of the thread channel use this wrapper around the raw port. */
export class ThreadChannel {
  readonly #port: MessagePort;
  /** Comlink listeners per direction: `a` the host calls the thread, `h` the thread calls the host. */
  readonly #rpc: Record<'a' | 'h', Listener[]> = { a: [], h: [] };
  #onBatch: ((batch: StartBatch | WorkerBatch) => void) | undefined;

  constructor(port: MessagePort) {
    this.#port = port;
    port.on('message', (envelope: ChannelEnvelope) => this.#route(envelope));
    // The channel must never keep a thread or the host process alive by itself.
    port.unref();
  }

  /** Sends a batch: the host's starts, or a thread's reports. */
  post(batch: StartBatch | WorkerBatch): void {
    this.#port.postMessage({ c: 'e', m: batch } satisfies ChannelEnvelope);
  }

  /** Receives batches: reports on the host side, starts on the thread side. */
  onBatch(handler: (batch: StartBatch | WorkerBatch) => void): void {
    this.#onBatch = handler;
  }

  /** A comlink endpoint for one direction of calls over this channel. */
  rpc(direction: 'a' | 'h'): RpcEndpoint {
    return {
      postMessage: (message, transfer) => {
        this.#port.postMessage({ c: direction, m: message } satisfies ChannelEnvelope, (transfer ?? []) as never);
      },
      addEventListener: (_type, listener) => {
        this.#rpc[direction].push(listener);
      },
      removeEventListener: (_type, listener) => {
        this.#rpc[direction] = this.#rpc[direction].filter((l) => l !== listener);
      },
    };
  }

  /** Called once when the other end closes (or this one does). */
  onClose(handler: () => void): void {
    this.#port.once('close', handler);
  }

  close(): void {
    this.#port.close();
  }

  #route(envelope: ChannelEnvelope): void {
    if (envelope.c === 'e') this.#onBatch?.(envelope.m);
    else for (const listener of this.#rpc[envelope.c]) listener({ data: envelope.m });
  }
}
