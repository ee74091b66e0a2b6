/**
 * The runtime's engine and store as they are now. The slot builds the engine on the store it
 * opened with, opens it (agents, rebuild, schedules) and stops it. When a commit fails, it stops
 * the store and runs the recovery (recovery.ts), which puts a new engine on the store opened again.
 * The runtime (runtime.ts) is the public facade over whatever the slot holds.
 */
import type { ResolvedOptions } from './options.js';
import type { Logger } from './log.js';
import type { Store } from './store/port.js';
import type { EventBus } from './events/event-bus.js';
import type { RegisteredAgent } from './agents/registry.js';
import type { KeepAlive } from './keep-alive.js';
import type { AgentFlowState } from './store/records.js';
import type { RebuildReport, StoreFailure } from './stats.js';
import type { RebuildOptions } from './tasks/rebuild.js';
import { flowKeyOf } from './tasks/parts.js';
import { buildEngine, type Engine, type LastingParts } from './engine.js';
import { StoreRecovery } from './recovery.js';

/** A step of stopping the engine: `fn` under a name (close logs and collects what it throws). */
export type StopStep = (name: string, fn: () => unknown) => Promise<void>;

/** What the slot is given by the runtime. */
export interface SlotDeps {
  readonly options: ResolvedOptions;
  readonly log: Logger;
  readonly bus: EventBus;
  readonly keepAlive: KeepAlive;
  readonly lasting: LastingParts;
  /** Whether the runtime is still running (a close ends the recovery). */
  running(): boolean;
}

/** See the module comment. */
export class EngineSlot {
  /** The parts, built in dependency order (engine.ts). */
  e: Engine;
  store: Store;
  /** What the last open rebuilt. */
  rebuild: RebuildReport = { previousShutdownClean: true, active: 0, crashed: 0, interrupted: 0, timers: 0, ms: 0 };
  readonly recovery: StoreRecovery;
  readonly #k: SlotDeps;
  /** Set once the engine is stopped (close, or a recovery's first try). */
  #stopped = false;
  /** The outage whose `store.failed` is written already (a later try of the same outage writes it no more). */
  #failureWritten: StoreFailure | undefined;

  constructor(deps: SlotDeps, store: Store) {
    this.#k = deps;
    this.store = store;
    this.e = buildEngine(deps.options, deps.log, store, deps.keepAlive, deps.lasting);
    this.recovery = new StoreRecovery({
      clock: deps.options.clock,
      retryMs: deps.options.storeRetryMs,
      log: deps.log,
      running: deps.running,
      stopEngine: () => this.stop(this.#logStep, Promise.resolve(), false),
      reopen: () => {
        // Replays of the event log stop reading the store that closes now (and fail with the
        // outage: a try has set it by the time it reopens).
        deps.bus.detach(this.recovery.down!);
        return this.store.reopen();
      },
      resume: (reopened, failure, back) => this.#resume(reopened, failure, back),
    });
    this.#watch(store);
  }

  /** Whether the engine is stopped. */
  get stopped(): boolean {
    return this.#stopped;
  }

  /** The store's reads as they are now; STORE_FAILED while it is down (an iteration reads through this). */
  reads(): Store['read'] {
    const down = this.recovery.down;
    if (down) throw down;
    return this.store.read;
  }

  /** Registers (or replaces) an agent on the engine, with its stored flow state. */
  register(agent: RegisteredAgent): RegisteredAgent {
    const { e } = this;
    e.registry.set(agent);
    e.governor.setAgent(agent.name, { total: agent.concurrency, models: agent.models });
    const stored = this.store.read.control.get(flowKeyOf(agent.name)) as AgentFlowState | undefined;
    e.flow.configure(agent, stored, this.#k.options.clock.now());
    e.notifier.work();
    return agent;
  }

  /** Registers agents, rebuilds from the store and starts dispatching: at start, and on a store recovery. */
  async open(agents: readonly RegisteredAgent[], options?: RebuildOptions): Promise<void> {
    this.e.controls.load();
    for (const agent of agents) this.register(agent);
    const started = performance.now();
    const rebuilt = await this.e.tasks.rebuild(options);
    this.e.scheduler.start();
    this.e.retention.start();
    this.rebuild = { previousShutdownClean: this.store.previousShutdownClean, ...rebuilt, ms: performance.now() - started };
  }

  /**
   * Stops the engine once (close; a recovery's first try): schedules, then dispatch (running
   * attempts get until `deadline`, then are interrupted), timers, the pool. `flush` writes the live
   * instances out, which a failed store cannot.
   */
  async stop(step: StopStep, deadline: Promise<void>, flush: boolean): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    const { e } = this;
    await step('retention', () => e.retention.stop());
    await step('schedules', () => e.scheduler.stop());
    await step('drain', () => e.dispatcher.drain(deadline));
    // Settlements of the drained attempts wake their waiters once committed: let them land first.
    await step('commits', () => this.store.settled());
    await step('timers', () => e.timers.stop());
    await step('supervisor', () => e.supervisor.stop());
    await step('flow timers', () => e.flow.stop());
    if (flush && !this.store.failure) await step('instances', () => e.router.flush());
    await step('pool', () => e.pool.destroy());
  }

  /** A recovery's step: what it throws is logged, and the steps after it still run. */
  readonly #logStep: StopStep = async (name, fn) => {
    try {
      await fn();
    } catch (error) {
      this.#k.log.error({ err: error, step: name }, 'stopping the engine: a step failed');
    }
  };

  /**
   * A failed commit stops the store (fail-stop): nothing more can be made durable, so nothing more
   * starts and every step is refused; `store.failed` is announced (written once the store is back)
   * and the recovery starts trying to open the data dir again.
   */
  #watch(store: Store): void {
    store.onFailure((failure) => {
      if (store !== this.store) return;
      this.e.dispatcher.halt();
      // stats() counts settled tasks from one scan of the store, made on first use: make it now,
      // while the failed store can still be read, so stats() answers while it is down.
      this.e.table.countsByState();
      this.#k.log.error({ err: failure.cause }, failure.message);
      // A store opened again that fails before the runtime is back is the same outage: one event.
      const fresh = this.recovery.failure === null;
      this.recovery.failed(failure);
      if (fresh) this.#k.bus.announce({ seq: store.durableSeq, at: this.recovery.failure!.since, type: 'store.failed', data: { message: failure.message } });
    });
  }

  /**
   * The store is open again after a failure (recovery.ts): a new engine on it, the failure first
   * in its event log, the agents registered again, the attempts that were running requeued without
   * counting, the pending waits carried over, and then `store.recovered`.
   */
  async #resume(store: Store, failure: Readonly<StoreFailure>, back: () => void): Promise<void> {
    const k = this.#k;
    const previous = this.e;
    this.store = store;
    k.bus.attach(store.read.events, () => store.eventsRemovedThrough);
    this.#watch(store);
    this.e = buildEngine(k.options, k.log, store, k.keepAlive, k.lasting);
    this.#stopped = false;
    // The first commit on the store opened again, so `store.failed` takes the seq it was announced with.
    if (this.#failureWritten !== failure) {
      await store.commit((w) => w.event('store.failed', { at: failure.since, data: { message: failure.message } }));
      this.#failureWritten = failure;
    }
    await this.open(previous.registry.list(), { interrupted: true });
    this.e.tasks.adopt(previous.tasks.handOver());
    back();
    const now = k.options.clock.now();
    await store.commit((w) => w.event('store.recovered', { at: now, data: { since: failure.since, downMs: now - failure.since, retries: failure.retries } }));
  }
}
