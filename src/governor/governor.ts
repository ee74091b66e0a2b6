/**
 * The governor: the one place work waits. It decides which queued attempt runs next and whether a
 * slot is free for it. Pure in-memory logic: no I/O, no clock, no logger.
 *
 * Layout, chosen so the hot path (`next()`/`release()`) never scans queued entries:
 *   sorted active priority levels → per level a ring of agents → per agent a ring of instances →
 *   per instance an order-keyed FIFO deque.
 * Rings are intrusive doubly linked lists, so "move the picked node to the back" and "drop an
 * emptied node" are O(1). Empty instances, agents and levels are unlinked at once, so `next()` only
 * ever walks structure that holds live work.
 */
import { TroupeError } from '../errors.js';
import { OrderedDeque, ringPush, ringRotateAfter, ringUnlink, type Ring, type RingNode } from './deque.js';

/** One queued unit of work. */
export interface GovernorEntry {
  readonly taskId: string;
  readonly instanceKey: string;
  readonly agent: string;
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
   * back into the governor.
   */
  instanceAdmits(instanceKey: string): boolean;
}

/** A snapshot of the governor's counters. */
export interface GovernorStats {
  slots: number;
  reserved: number;
  queued: number;
  frozen: boolean;
  /** Every registered agent, plus unregistered ones that still hold work (shown with limit 0). */
  agents: Record<string, { queued: number; reserved: number; limit: number | null }>;
}

/** Picks queued work in priority, fair-share and FIFO order, and accounts for reserved capacity. */
export interface Governor {
  /** Registers (or updates) an agent. Entries of unregistered agents stay queued but are never picked. limit null = no per-agent limit. */
  setAgent(agent: string, limit: number | null): void;
  /** Unregisters an agent; its queued entries wait and its outstanding reservations still count. */
  removeAgent(agent: string): void;
  /** Queues an entry. Throws if its taskId is already queued. */
  enqueue(entry: GovernorEntry): void;
  /** Removes a queued entry (e.g. cancel). Returns true if it was queued. */
  remove(taskId: string): boolean;
  /** Whether the taskId is queued (not reserved). */
  has(taskId: string): boolean;
  /** Picks the next eligible entry and reserves capacity for it (global slot + agent count), or undefined. Never returns one while frozen. */
  next(): GovernorEntry | undefined;
  /** Gives back what next() reserved for this entry. Idempotent per taskId: a second release for the same reservation is ignored. */
  release(entry: GovernorEntry): void;
  /** Changes the global slot count. Lowering it below `reserved` only stops new picks. */
  setSlots(slots: number): void;
  /** Stops all picks; queueing, removal and release keep working. */
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
   * consult `instanceAdmits`, so true may still be followed by `next() === undefined`; false is exact.
   */
  hasEligible(): boolean;
  /** A snapshot of the counters (allocates; not for the hot path). */
  stats(): GovernorStats;
}

/** Creates a governor with the given global slots and instance gate. */
export function createGovernor(options: GovernorOptions): Governor {
  return new GovernorImpl(options);
}

interface AgentState {
  readonly name: string;
  limit: number | null;
  registered: boolean;
  queued: number;
  reserved: number;
  /** Cached "registered, has room, has queued work", so hasEligible() is a counter check. */
  runnable: boolean;
}

interface Level extends Ring<Lane> {
  readonly priority: number;
  readonly lanes: Map<string, Lane>;
}
/** One agent's share of one priority level. */
interface Lane extends RingNode<Lane>, Ring<Instance> {
  readonly agent: AgentState;
  readonly level: Level;
  readonly instances: Map<string, Instance>;
}
/** One instance's queue within a lane. */
interface Instance extends RingNode<Instance> {
  readonly key: string;
  readonly lane: Lane;
  readonly deque: OrderedDeque<Node>;
}
interface Node {
  readonly order: number;
  readonly entry: GovernorEntry;
  readonly instance: Instance;
  dead: boolean;
}

function checkCount(value: unknown, name: string): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    throw new TroupeError('INVALID_OPTIONS', `${name} must be a non-negative integer (got ${String(value)})`);
  }
  return value;
}

class GovernorImpl implements Governor {
  #slots: number;
  readonly #admits: (instanceKey: string) => boolean;
  #frozen = false;
  #queued = 0;
  #reserved = 0;
  #runnableAgents = 0;
  readonly #agents = new Map<string, AgentState>();
  /** Active levels, ascending by priority; only levels holding live work. */
  readonly #levels: Level[] = [];
  readonly #levelByPriority = new Map<number, Level>();
  readonly #live = new Map<string, Node>();
  readonly #reservations = new Map<string, AgentState>();
  /** Extra reservations for a taskId picked again before its first release: a caller bug we survive. */
  readonly #stacked = new Map<string, AgentState[]>();

  constructor(options: GovernorOptions) {
    this.#slots = checkCount(options.slots, 'options.slots');
    if (typeof options.instanceAdmits !== 'function') {
      throw new TroupeError('INVALID_OPTIONS', 'options.instanceAdmits must be a function');
    }
    this.#admits = options.instanceAdmits;
  }

  get frozen(): boolean { return this.#frozen; }
  get queued(): number { return this.#queued; }
  get reserved(): number { return this.#reserved; }

  setAgent(agent: string, limit: number | null): void {
    const checked = limit === null ? null : checkCount(limit, `limit of agent "${agent}"`);
    const state = this.#agent(agent);
    state.limit = checked;
    state.registered = true;
    this.#touch(state);
  }

  removeAgent(agent: string): void {
    const state = this.#agents.get(agent);
    if (!state) return;
    state.registered = false;
    state.limit = null;
    this.#touch(state);
  }

  enqueue(entry: GovernorEntry): void {
    if (this.#live.has(entry.taskId)) {
      throw new TroupeError('ILLEGAL_TRANSITION', `task ${entry.taskId} is already queued`);
    }
    if (!Number.isSafeInteger(entry.priority) || !Number.isFinite(entry.order)) {
      throw new TroupeError('INVALID_INPUT', `task ${entry.taskId}: priority must be an integer and order a finite number`);
    }
    const state = this.#agent(entry.agent);
    const level = this.#level(entry.priority);
    let lane = level.lanes.get(entry.agent);
    if (!lane) {
      lane = { agent: state, level, instances: new Map(), prev: null, next: null, head: null, tail: null, size: 0 };
      level.lanes.set(entry.agent, lane);
      ringPush(level, lane);
    }
    let instance = lane.instances.get(entry.instanceKey);
    if (!instance) {
      instance = { key: entry.instanceKey, lane, deque: new OrderedDeque<Node>(), prev: null, next: null };
      lane.instances.set(entry.instanceKey, instance);
      ringPush(lane, instance);
    }
    const node: Node = { order: entry.order, entry, instance, dead: false };
    instance.deque.push(node);
    this.#live.set(entry.taskId, node);
    this.#queued++;
    state.queued++;
    this.#touch(state);
  }

  remove(taskId: string): boolean {
    const node = this.#live.get(taskId);
    if (!node) return false;
    this.#live.delete(taskId);
    const instance = node.instance;
    instance.deque.kill(node);
    this.#dequeued(instance);
    return true;
  }

  has(taskId: string): boolean {
    return this.#live.has(taskId);
  }

  next(): GovernorEntry | undefined {
    if (this.#frozen || this.#reserved >= this.#slots || this.#runnableAgents === 0) return undefined;
    const levels = this.#levels;
    for (let l = 0; l < levels.length; l++) {
      const level = levels[l] as Level;
      // Each ring is walked at most once per call; the counts bound the walk even if a gate misbehaves.
      let lane = level.head;
      for (let a = level.size; a > 0 && lane; a--) {
        const nextLane: Lane | null = lane.next;
        if (lane.agent.runnable) {
          let instance = lane.head;
          for (let i = lane.size; i > 0 && instance; i--) {
            const nextInstance: Instance | null = instance.next;
            if (this.#admits(instance.key)) return this.#take(instance);
            instance = nextInstance;
          }
        }
        lane = nextLane;
      }
    }
    return undefined;
  }

  release(entry: GovernorEntry): void {
    const taskId = entry.taskId;
    const stacked = this.#stacked.get(taskId);
    const state = stacked ? stacked.pop() : this.#reservations.get(taskId);
    if (!state) return;
    if (!stacked) this.#reservations.delete(taskId);
    else if (stacked.length === 0) this.#stacked.delete(taskId);
    this.#reserved--;
    state.reserved--;
    this.#touch(state);
  }

  setSlots(slots: number): void {
    this.#slots = checkCount(slots, 'slots');
  }

  freeze(): void { this.#frozen = true; }
  unfreeze(): void { this.#frozen = false; }

  hasEligible(): boolean {
    return !this.#frozen && this.#reserved < this.#slots && this.#runnableAgents > 0;
  }

  stats(): GovernorStats {
    const agents: GovernorStats['agents'] = {};
    for (const state of this.#agents.values()) {
      agents[state.name] = { queued: state.queued, reserved: state.reserved, limit: state.registered ? state.limit : 0 };
    }
    return { slots: this.#slots, reserved: this.#reserved, queued: this.#queued, frozen: this.#frozen, agents };
  }

  /** Pops the instance's head entry, rotates the rings for fairness and reserves capacity. */
  #take(instance: Instance): GovernorEntry {
    // A listed instance always holds live work (emptied ones are unlinked), so shift() succeeds.
    const node = instance.deque.shift() as Node;
    const entry = node.entry;
    this.#live.delete(entry.taskId);
    const lane = instance.lane;
    const state = lane.agent;
    // Rotate before #dequeued may unlink: the picked instance and agent end their rings' cycles.
    ringRotateAfter(lane, instance);
    ringRotateAfter(lane.level, lane);
    this.#reserved++;
    state.reserved++;
    if (!this.#reservations.has(entry.taskId)) this.#reservations.set(entry.taskId, state);
    else this.#stacked.set(entry.taskId, [...(this.#stacked.get(entry.taskId) ?? []), state]);
    this.#dequeued(instance);
    return entry;
  }

  /** Accounts for one entry leaving `instance`, unlinking whatever structure it emptied. */
  #dequeued(instance: Instance): void {
    const lane = instance.lane;
    const state = lane.agent;
    this.#queued--;
    state.queued--;
    if (instance.deque.size === 0) {
      ringUnlink(lane, instance);
      lane.instances.delete(instance.key);
      if (lane.size === 0) {
        const level = lane.level;
        ringUnlink(level, lane);
        level.lanes.delete(state.name);
        if (level.size === 0) this.#dropLevel(level);
      }
    }
    this.#touch(state);
  }

  #agent(name: string): AgentState {
    let state = this.#agents.get(name);
    if (!state) {
      state = { name, limit: null, registered: false, queued: 0, reserved: 0, runnable: false };
      this.#agents.set(name, state);
    }
    return state;
  }

  /** Re-derives the agent's runnable flag and forgets unregistered agents that hold nothing. */
  #touch(state: AgentState): void {
    const runnable = state.registered && state.queued > 0 && (state.limit === null || state.reserved < state.limit);
    if (runnable !== state.runnable) {
      state.runnable = runnable;
      this.#runnableAgents += runnable ? 1 : -1;
    }
    if (!state.registered && state.queued === 0 && state.reserved === 0) this.#agents.delete(state.name);
  }

  #level(priority: number): Level {
    let level = this.#levelByPriority.get(priority);
    if (level) return level;
    level = { priority, lanes: new Map(), head: null, tail: null, size: 0 };
    this.#levelByPriority.set(priority, level);
    this.#levels.splice(this.#levelIndex(priority), 0, level);
    return level;
  }

  #dropLevel(level: Level): void {
    this.#levelByPriority.delete(level.priority);
    this.#levels.splice(this.#levelIndex(level.priority), 1);
  }

  /** Lower-bound index of `priority` in the sorted level list. */
  #levelIndex(priority: number): number {
    const levels = this.#levels;
    let lo = 0;
    let hi = levels.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((levels[mid] as Level).priority < priority) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
}
