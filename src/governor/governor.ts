/**
 * The governor: the one place work waits. It decides which queued attempt runs next and whether a
 * slot is free for it, in the shape of Temporal's worker slot supplier: `tryReserve()` (or
 * `reserve(signal)`, which waits) picks an entry and reserves its slot, `markUsed()` notes that a
 * started attempt holds it, `release()` gives it back. Pure in-memory logic: no I/O, no clock, no
 * logger.
 *
 * This file holds the contract and the global counts (slots, reserved, queued, frozen). The parts:
 *   accounts.ts      per-agent and per-model counts and limits, and which agents are runnable;
 *   levels.ts        the queued work (priority levels → agent lanes → instance queues) and the pick;
 *   reservations.ts  the ledger of outstanding reservations and their used marks;
 *   waiters.ts       the FIFO of pending `reserve()` calls.
 * The hot path (`tryReserve()`/`release()`) never scans queued entries, and while nobody waits in
 * `reserve()` the waiting costs it one counter check.
 */
import { TroupeError } from '../errors.js';
import { AgentAccounts, checkCount, type AgentLimits } from './accounts.js';
import { PriorityLevels } from './levels.js';
import { Reservations } from './reservations.js';
import { Waiters } from './waiters.js';

export type { AgentLimits } from './accounts.js';

/** One queued unit of work. */
export interface GovernorEntry {
  readonly taskId: string;
  readonly instanceKey: string;
  readonly agent: string;
  /** The model it runs on (the task's `labels.model`); counts against the agent's sub-limit for it, if any. */
  readonly model?: string;
  /** Lower runs first. Integer. */
  readonly priority: number;
  /**
   * FIFO order key within an instance and priority (e.g. the event seq of its task.queued event).
   * Lower first. Usually increasing, but an out-of-order insert still lands in order.
   */
  readonly order: number;
}

/** How a governor is configured. */
export interface GovernorOptions {
  /** Global slots: attempts that may be reserved at once. Non-negative integer. */
  slots: number;
  /**
   * Per-instance gate, asked only for instances that have queued work and whose agent has room
   * (e.g. dispatch target reached or instance degraded → false). Must be cheap and must not call
   * back into the governor (nor abort a signal passed to `reserve()`). When it opens for an
   * instance with queued work, call {@link Governor.poke} so pending `reserve()` calls see it.
   */
  instanceAdmits(instanceKey: string): boolean;
}

/** A snapshot of the governor's counters. */
export interface GovernorStats {
  slots: number;
  reserved: number;
  /** Reservations marked in use by a started attempt ({@link Governor.markUsed}) and not yet released. */
  used: number;
  queued: number;
  frozen: boolean;
  /**
   * Every registered agent, plus unregistered ones that still hold work or a pause (shown with limit
   * 0). `models` lists each model with a sub-limit or with reservations.
   */
  agents: Record<string, { queued: number; reserved: number; limit: number | null; paused: boolean; models: Record<string, { reserved: number; limit: number | null }> }>;
}

/** Picks queued work in priority, fair-share and FIFO order, and accounts for reserved capacity. */
export interface Governor {
  /**
   * Registers (or updates) an agent; a change applies from the next pick, and a limit lowered below
   * what is reserved only stops new picks. A number or null is just the total (null = no per-agent
   * limit). Entries of unregistered agents stay queued but are never picked.
   */
  setAgent(agent: string, limits: number | null | AgentLimits): void;
  /** Unregisters an agent; its queued entries wait and its outstanding reservations still count. A pause survives. */
  removeAgent(agent: string): void;
  /** Pauses or resumes an agent, registered or not yet: its entries stay queued but are not picked. */
  pauseAgent(agent: string, paused: boolean): void;
  /**
   * Routing at submit time: the least-loaded registered candidate (unpaused beats paused; ties go to
   * the earliest). Load = (queued + reserved + `pending`, work routed but not yet queued) / capacity,
   * capacity being the total limit or else the global slots; 0 capacity = infinite load.
   */
  pickAgent(candidates: readonly string[], pending?: ReadonlyMap<string, number>): string | undefined;
  /**
   * Queues an entry. Throws if its taskId is already queued. With a {@link Governor.reserve} call
   * pending it may be reserved for that call at once, so it is not queued any more on return.
   */
  enqueue(entry: GovernorEntry): void;
  /** Removes a queued entry (e.g. cancel). Returns true if it was queued. */
  remove(taskId: string): boolean;
  /** Whether the taskId is queued (not reserved). */
  has(taskId: string): boolean;
  /**
   * Picks the next eligible entry and reserves capacity for it (global slot, agent and model
   * counts), or returns undefined; never returns one while frozen. Cheap enough to call per task.
   * It does not queue behind pending {@link Governor.reserve} calls: those are served whenever
   * something changes, so one is only pending while nothing is eligible (or the instance gate opened
   * and nobody called {@link Governor.poke}).
   */
  tryReserve(): GovernorEntry | undefined;
  /** @deprecated The old name of {@link Governor.tryReserve}, kept so existing callers compile; it calls it. */
  next(): GovernorEntry | undefined;
  /**
   * Resolves with the next eligible entry, reserved as by {@link Governor.tryReserve}, as soon as
   * one can be: at once if one can now, else when an `enqueue`, `release`, `unfreeze`, `setAgent`,
   * `setSlots`, `pauseAgent(agent, false)` or `poke` makes one eligible. Pending calls are served in
   * call order. An entry handed to a call is reserved for it and for no one else: its caller must
   * release it, even if it lost interest after the promise resolved. Once `signal` aborts (or if it
   * already has), rejects with the signal's reason, leaves the queue and reserves nothing. The
   * governor has no close of its own: pass a signal to stop waiting at shutdown.
   */
  reserve(signal?: AbortSignal): Promise<GovernorEntry>;
  /**
   * Notes that the entry's reservation is now in use by a started attempt. Bookkeeping only: it
   * counts in `stats().used` and changes no pick. Idempotent per reservation, and ignored for an
   * entry that holds none; {@link Governor.release} undoes it.
   */
  markUsed(entry: GovernorEntry): void;
  /**
   * Reserves capacity for an entry that is not queued, whatever the limits, and marks it used: an
   * attempt that gave its reservation back while it waited ({@link Governor.release}) and runs
   * again. It counts against the global slots and its agent's and model's limits until released,
   * so while it keeps them over, nothing new is picked. Throws if the entry's taskId is queued.
   */
  reclaim(entry: GovernorEntry): void;
  /**
   * Gives back what tryReserve() or reserve() reserved for this entry, undoing its markUsed, and
   * serves pending reserve() calls from what it freed. Idempotent per taskId: a second release for
   * the same reservation is ignored.
   */
  release(entry: GovernorEntry): void;
  /**
   * Retries pending {@link Governor.reserve} calls. The instance gate (`instanceAdmits`) can open
   * without the governor knowing (an instance drops below its dispatch target, or stops being
   * degraded): call this after such a change, or those calls wait for some other change to wake
   * them. Free while nobody waits; a tryReserve() caller just asks again instead.
   */
  poke(): void;
  /** Changes the global slot count. Lowering it below `reserved` only stops new picks. */
  setSlots(slots: number): void;
  /** Stops all picks; queueing, removal and release keep working, and reserve() calls wait. */
  freeze(): void;
  /** Resumes picks after {@link Governor.freeze}. */
  unfreeze(): void;
  /** Whether picks are stopped. */
  readonly frozen: boolean;
  /** Entries waiting. */
  readonly queued: number;
  /** Reservations outstanding. */
  readonly reserved: number;
  /**
   * Is there any entry that could be picked right now if asked? O(1) and conservative: it does not
   * consult `instanceAdmits`, so true may still be followed by `tryReserve() === undefined`; false is exact.
   */
  hasEligible(): boolean;
  /** A snapshot of the counters (allocates; not for the hot path). */
  stats(): GovernorStats;
  /** Every queued entry, in no particular order (walks them all; not for the hot path). */
  queuedEntries(): Iterable<GovernorEntry>;
}

/** Creates a governor with the given global slots and instance gate. */
export function createGovernor(options: GovernorOptions): Governor {
  return new GovernorImpl(options);
}

class GovernorImpl implements Governor {
  #slots: number;
  #frozen = false;
  #queued = 0;
  #reserved = 0;
  readonly #accounts = new AgentAccounts();
  readonly #levels: PriorityLevels;
  readonly #reservations = new Reservations();
  readonly #waiters = new Waiters<GovernorEntry>();
  /** Made once, so serving waiters allocates no closure. */
  readonly #take = (): GovernorEntry | undefined => this.tryReserve();

  constructor(options: GovernorOptions) {
    this.#slots = checkCount(options.slots, 'options.slots');
    if (typeof options.instanceAdmits !== 'function') {
      throw new TroupeError('INVALID_OPTIONS', 'options.instanceAdmits must be a function');
    }
    this.#levels = new PriorityLevels(options.instanceAdmits);
  }

  get frozen(): boolean { return this.#frozen; }
  get queued(): number { return this.#queued; }
  get reserved(): number { return this.#reserved; }

  setAgent(agent: string, limits: number | null | AgentLimits): void {
    this.#accounts.set(agent, limits);
    this.#wake();
  }

  removeAgent(agent: string): void {
    this.#accounts.remove(agent);
  }

  pauseAgent(agent: string, paused: boolean): void {
    this.#accounts.pause(agent, paused);
    if (!paused) this.#wake();
  }

  pickAgent(candidates: readonly string[], pending?: ReadonlyMap<string, number>): string | undefined {
    return this.#accounts.pick(candidates, pending, this.#slots);
  }

  enqueue(entry: GovernorEntry): void {
    if (this.#levels.has(entry.taskId)) {
      throw new TroupeError('ILLEGAL_TRANSITION', `task ${entry.taskId} is already queued`);
    }
    if (!Number.isSafeInteger(entry.priority) || !Number.isFinite(entry.order) || (entry.model !== undefined && typeof entry.model !== 'string')) {
      throw new TroupeError('INVALID_INPUT', `task ${entry.taskId}: priority must be an integer, order a finite number and model a string`);
    }
    const agent = this.#accounts.agent(entry.agent);
    const model = entry.model === undefined ? null : this.#accounts.model(agent, entry.model);
    this.#levels.add(entry, agent, model);
    this.#queued++;
    this.#accounts.enqueued(agent, model);
    this.#wake();
  }

  remove(taskId: string): boolean {
    const node = this.#levels.remove(taskId);
    if (!node) return false;
    this.#queued--;
    this.#accounts.dequeued(node.queue.lane.agent, node.queue.model);
    return true;
  }

  has(taskId: string): boolean {
    return this.#levels.has(taskId);
  }

  tryReserve(): GovernorEntry | undefined {
    if (this.#frozen || this.#reserved >= this.#slots || this.#accounts.runnable === 0) return undefined;
    const node = this.#levels.pick();
    if (!node) return undefined;
    this.#queued--;
    this.#reserved++;
    this.#accounts.taken(node.queue.lane.agent, node.queue.model);
    this.#reservations.add(node);
    return node.entry;
  }

  next(): GovernorEntry | undefined {
    return this.tryReserve();
  }

  reserve(signal?: AbortSignal): Promise<GovernorEntry> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (this.#waiters.size === 0) {
      const entry = this.tryReserve();
      if (entry) return Promise.resolve(entry);
      return this.#waiters.wait(signal);
    }
    // Join the back, then retry from the front: FIFO holds, and a gate that opened unannounced is seen.
    const waiting = this.#waiters.wait(signal);
    this.#wake();
    return waiting;
  }

  markUsed(entry: GovernorEntry): void {
    this.#reservations.markUsed(entry.taskId);
  }

  reclaim(entry: GovernorEntry): void {
    if (this.#levels.has(entry.taskId)) throw new TroupeError('ILLEGAL_TRANSITION', `task ${entry.taskId} is queued; only an attempt that runs reclaims its reservation`);
    const agent = this.#accounts.agent(entry.agent);
    const model = entry.model === undefined ? null : this.#accounts.model(agent, entry.model);
    // Its reservation is a node made as a queued entry's is, taken out at once: its queue names the
    // agent and model to give back, as a picked node's does.
    this.#levels.add(entry, agent, model);
    this.#reserved++;
    this.#accounts.reclaimed(agent, model);
    this.#reservations.add(this.#levels.remove(entry.taskId)!);
    this.#reservations.markUsed(entry.taskId);
  }

  release(entry: GovernorEntry): void {
    const node = this.#reservations.take(entry.taskId);
    if (!node) return;
    this.#reserved--;
    this.#accounts.released(node.queue.lane.agent, node.queue.model);
    this.#wake();
  }

  poke(): void {
    this.#wake();
  }

  setSlots(slots: number): void {
    this.#slots = checkCount(slots, 'slots');
    this.#wake();
  }

  freeze(): void { this.#frozen = true; }

  unfreeze(): void {
    this.#frozen = false;
    this.#wake();
  }

  hasEligible(): boolean {
    return !this.#frozen && this.#reserved < this.#slots && this.#accounts.runnable > 0;
  }

  stats(): GovernorStats {
    const agents = this.#accounts.stats();
    return { slots: this.#slots, reserved: this.#reserved, used: this.#reservations.used, queued: this.#queued, frozen: this.#frozen, agents };
  }

  queuedEntries(): Iterable<GovernorEntry> {
    return this.#levels.entries();
  }

  /** Serves pending reserve() calls from whatever is eligible now; one counter check when there are none. */
  #wake(): void {
    if (this.#waiters.size !== 0) this.#waiters.serve(this.#take);
  }
}
