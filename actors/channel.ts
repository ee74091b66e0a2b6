/**
 * One long-lived channel per worker thread, shared by comlink request/response traffic and
 * fire-and-forget messages. Keeping both on one MessagePort keeps them in order, which is what
 * lets the host know that every log line of an attempt has arrived before it settles the attempt.
 * (A MessageChannel per task costs about 3x the raw throughput, so there is exactly one.)
 */
import type { MessagePort } from 'node:worker_threads';
import { CHANNEL_EVENT, CHANNEL_RPC, type ChannelEnvelope, type HostMessage, type WorkerBatch } from './wire.js';

type Traffic = HostMessage | WorkerBatch;

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
  #rpcListeners: Listener[] = [];
  #onEvent: ((message: Traffic) => void) | undefined;

  constructor(port: MessagePort) {
    this.#port = port;
    port.on('message', (envelope: ChannelEnvelope) => this.#route(envelope));
    // The channel must never keep a thread or the host process alive by itself.
    port.unref();
  }

  /** Sends a fire-and-forget message: a worker's batch, or the host's starts and replies. */
  post(message: Traffic): void {
    this.#port.postMessage({ c: CHANNEL_EVENT, m: message } satisfies ChannelEnvelope);
  }

  /** Receives fire-and-forget messages: the worker's batches on the host side, starts and replies on the worker side. */
  onEvent(handler: (message: Traffic) => void): void {
    this.#onEvent = handler;
  }

  /** A comlink endpoint over this channel. */
  get rpc(): RpcEndpoint {
    return {
      postMessage: (message, transfer) => {
        this.#port.postMessage({ c: CHANNEL_RPC, m: message }, (transfer ?? []) as never);
      },
      addEventListener: (_type, listener) => {
        this.#rpcListeners.push(listener);
      },
      removeEventListener: (_type, listener) => {
        this.#rpcListeners = this.#rpcListeners.filter((l) => l !== listener);
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
    if (envelope.c === CHANNEL_EVENT) {
      this.#onEvent?.(envelope.m);
    } else if (envelope.c === CHANNEL_RPC) {
      for (const listener of this.#rpcListeners) listener({ data: envelope.m });
    }
  }
}
