/**
 * `createRuntime`: the composition of a runtime in dependency order. Options and agent
 * registrations are validated before the disk is touched; then the store opens (its lock, its
 * checks, its replay), the event bus goes on it, and the runtime is built and started on both.
 */
import { openStore } from './store/lmdb/store.js';
import { EventBus } from './events/event-bus.js';
import { KeepAlive } from './keep-alive.js';
import { resolveLogger } from './log.js';
import { resolveOptions, type RuntimeOptions } from './options.js';
import { validateRegistration } from './agents/registry.js';
import { Runtime } from './runtime.js';
import { Tracing } from './telemetry/tracing.js';

/** Creates and starts a runtime: opens (or creates) the data dir and rebuilds from it. */
export async function createRuntime(input?: RuntimeOptions): Promise<Runtime> {
  const options = resolveOptions(input);
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
    onLooseMode: ({ path, mode }) => log.warn({ path, mode }, `${path} has mode ${mode}: group or others can reach the data dir (Troupe leaves existing modes alone: chmod go-rwx it)`),
  });
  const keepAlive = new KeepAlive();
  bus = new EventBus(store.read.events, () => keepAlive.hold(), (error, type) => log.error({ err: error, type }, 'an event listener threw'), () => store.eventsRemovedThrough);
  let runtime: Runtime | undefined;
  try {
    runtime = new Runtime(options, log, store, bus, keepAlive, tracing);
    await runtime.start(agents);
    return runtime;
  } catch (error) {
    if (runtime) await runtime.close({ force: true }).catch(() => undefined);
    else await store.close(false).catch(() => undefined);
    throw error;
  }
}
