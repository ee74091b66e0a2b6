/**
 * `createRuntime`: the composition of a runtime in dependency order. Options and agent
 * registrations are validated before the disk (or the database) is touched. On LMDB (the
 * default), the store opens (its lock, its checks, its replay), the event bus goes on it, and the
 * runtime is built and started on both. With `store: { postgres }` (or `TROUPE_STORE`), the
 * PostgreSQL runtime (src/cluster/runtime.ts) is loaded and started instead.
 */
import { openStore } from './store/lmdb/store.js';
import { looseModeWarning } from './store/private-files.js';
import { EventBus } from './events/event-bus.js';
import { KeepAlive } from './keep-alive.js';
import { resolveLogger } from './log.js';
import { resolveOptions, type ResolvedOptions, type RuntimeOptions } from './options.js';
import { validateRegistration } from './agents/registry.js';
import { LmdbRuntime } from './runtime.js';
import type { Runtime } from './api/runtime.js';
import { Tracing } from './telemetry/tracing.js';
import { TroupeError } from './errors.js';

/**
 * Creates and starts a runtime: opens (or creates) the data dir and rebuilds from it, or, with
 * `store: { postgres }`, joins the cluster on that database.
 */
export async function createRuntime(input?: RuntimeOptions): Promise<Runtime> {
  const options = resolveOptions(input);
  if (options.store) {
    // Loaded only when asked for: an LMDB runtime never loads the PostgreSQL driver.
    const { createPostgresRuntime } = await import('./cluster/runtime.js');
    return createPostgresRuntime(options);
  }
  return openLmdbRuntime(options);
}

/** @internal An LMDB runtime (troupe/testing's, which needs its internals). */
export async function createLmdbRuntime(input?: RuntimeOptions): Promise<LmdbRuntime> {
  // The environment's TROUPE_STORE is not read: this runtime is LMDB's, whatever the environment says.
  const options = resolveOptions(input, {});
  if (options.store) throw new TroupeError('INVALID_OPTIONS', 'options.store: this runtime runs on LMDB only (troupe/testing)');
  return openLmdbRuntime(options);
}

async function openLmdbRuntime(options: ResolvedOptions): Promise<LmdbRuntime> {
  const log = resolveLogger(options.logger);
  // Validate agent registrations before touching the disk.
  const agents = options.agents.map((registration) => validateRegistration(registration, { timeoutMs: options.defaultTimeoutMs, retry: options.defaultRetry, backoff: options.defaultBackoff }));
  // Tracing is on when @opentelemetry/api is installed (an optional peer dependency) and a tracer provider is registered.
  const tracing = await Tracing.load();
  let bus: EventBus | undefined;
  const store = await openStore({
    dataDir: options.dataDir,
    now: () => options.clock.now(),
    onCommitted: (events) => bus?.publish(events),
    onQuarantine: (record) => log.error({ db: record.db, key: record.key, problem: record.problem }, 'quarantined a record that could not be read'),
    onLooseMode: (found) => log.warn(found, looseModeWarning(found)),
  });
  const keepAlive = new KeepAlive();
  bus = new EventBus(store.read.events, () => keepAlive.hold(), (error, type) => log.error({ err: error, type }, 'an event listener threw'), () => store.eventsRemovedThrough);
  let runtime: LmdbRuntime | undefined;
  try {
    runtime = new LmdbRuntime(options, log, store, bus, keepAlive, tracing);
    await runtime.start(agents);
    return runtime;
  } catch (error) {
    if (runtime) await runtime.close({ force: true }).catch(() => undefined);
    else await store.close(false).catch(() => undefined);
    throw error;
  }
}
