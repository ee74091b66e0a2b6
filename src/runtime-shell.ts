/**
 * What both runtimes share around their stores (LMDB: runtime.ts; PostgreSQL: cluster/runtime.ts):
 * the lifecycle, what keeps the process alive, the HTTP endpoints, the guard every public call
 * goes through, and `close()`'s contract: options checked before anything happens, one close
 * whose promise every call returns, and a later `force: true` that still hurries it.
 */
import type { Endpoints } from './endpoints.js';
import type { KeepAlive } from './keep-alive.js';
import { validateCloseOptions, type CloseOptions, type Lifecycle, type RuntimeState } from './lifecycle.js';

/** See the module comment. */
export abstract class RuntimeShell {
  protected readonly lifecycle: Lifecycle;
  protected readonly keepAlive: KeepAlive;
  protected readonly endpoints: Endpoints;
  #closing: Promise<void> | undefined;

  constructor(lifecycle: Lifecycle, keepAlive: KeepAlive, endpoints: Endpoints) {
    this.lifecycle = lifecycle;
    this.keepAlive = keepAlive;
    this.endpoints = endpoints;
  }

  /** Where the runtime is in its lifecycle. */
  get state(): RuntimeState {
    return this.lifecycle.state;
  }

  /** The port of the metrics endpoint, once it listens (options.metricsPort). */
  get metricsPort(): number | undefined {
    return this.endpoints.metricsPort;
  }

  /**
   * Lets the process exit while this runtime is open and nothing else keeps it alive, as
   * `net.Server#unref()` does. A pending `wait()` (or an `events()` / `logs({ follow })` iteration
   * waiting for its next item) still keeps it alive until it ends. Returns the runtime.
   */
  unref(): this {
    this.keepAlive.unref();
    return this;
  }

  /** Undoes {@link RuntimeShell.unref}: the open runtime keeps the process alive again (the default). Returns the runtime. */
  ref(): this {
    this.keepAlive.ref();
    return this;
  }

  /**
   * Closes the runtime (what that does is each runtime's {@link RuntimeShell.closeWith}). Options
   * are validated before anything happens: a bad call rejects and changes nothing. A second call
   * returns the same promise; one with `force: true` also stops waiting for running attempts.
   */
  close(options?: CloseOptions): Promise<void> {
    let resolved: Required<CloseOptions>;
    try {
      resolved = validateCloseOptions(options);
    } catch (error) {
      return Promise.reject(error);
    }
    if (resolved.force) this.forced();
    this.#closing ??= this.closeWith(resolved);
    return this.#closing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /** The one close, with the first call's options. */
  protected abstract closeWith(options: Required<CloseOptions>): Promise<void>;

  /** A call with `force: true` came, before the close or while it runs: stop waiting for attempts. */
  protected abstract forced(): void;

  /** Throws the error a public call gets when the runtime cannot take it now. */
  protected assertOpen(call: string): void {
    this.lifecycle.assertRunning(call);
  }

  /** Runs a call of the public API if the runtime takes calls; anything it throws becomes the rejection. */
  protected guard<T>(call: string, fn: () => Promise<T>): Promise<T> {
    try {
      this.assertOpen(call);
      return fn();
    } catch (error) {
      return Promise.reject(error);
    }
  }
}
