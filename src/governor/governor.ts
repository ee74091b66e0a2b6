/**
 * The governor: the one place work waits. It decides which queued attempt runs next and whether a
 * slot is free for it. Pure in-memory logic: no I/O, no clock, no logger.
 *
 * Layout, chosen so the hot path (`next()`/`release()`) never scans queued entries:
 *   sorted active priority levels → per level a ring of agents → per agent a ring of queues, one per
 *   (instance, model) → per queue an order-keyed FIFO deque.
 * Rings are intrusive doubly linked lists, so "move the picked node to the back" and "drop an
 * emptied node" are O(1). Empty queues, agents and levels are unlinked at once, so `next()` only
 * ever walks structure that holds live work. Splitting an instance's work by model means an entry
 * whose model is at its sub-limit never blocks the other models' work behind it.
 */
import { TroupeError } from '../errors.js';
import { OrderedDeque, ringPush, ringRotateAfter, ringUnlink, type Ring, type RingNode } from './deque.js';

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
  /**
   * Every registered agent, plus unregistered ones that still hold work or a pause (shown with limit
   * 0). `models` lists each model with a sub-limit or with reservations.
   */
  agents: Record<string, { queued: number; reserved: number; limit: number | null; paused: boolean; models: Record<string, { reserved: number; limit: number | null }> }>;
}

/** An agent's concurrency: a total (null = none) and optional per-model sub-limits. */
export interface AgentLimits { total: number | null; models?: Readonly<Record<string, number>> }

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
  /** Queues an entry. Throws if its taskId is already queued. */
  enqueue(entry: GovernorEntry): void;
  /** Removes a queued entry (e.g. cancel). Returns true if it was queued. */
  remove(taskId: string): boolean;
  /** Whether the taskId is queued (not reserved). */
  has(taskId: string): boolean;
  /** Picks the next eligible entry and reserves capacity for it (global slot, agent and model counts), or undefined. Never returns one while frozen. */
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
  /** Every queued entry, in no particular order (walks them all; not for the hot path). */
  queuedEntries(): Iterable<GovernorEntry>;
}

/** Creates a governor with the given global slots and instance gate. */
export function createGovernor(options: GovernorOptions): Governor {
  return new GovernorImpl(options);
}

interface AgentState {
  readonly name: string;
  limit: number | null;
  registered: boolean;
  paused: boolean;
  queued: number;
  reserved: number;
  /** Cached "registered, unpaused, has room, has queued work", so hasEligible() is a counter check. */
  runnable: boolean;
  /** Kept while a model has a sub-limit, queued work or reservations, so queues can hold on to it. */
  readonly models: Map<string, ModelState>;
}
/** One agent's counters for one model. Queues point at it, so a sub-limit change applies at once. */
interface ModelState {
  readonly name: string;
  readonly agent: AgentState;
  limit: number | null;
  queued: number;
  reserved: number;
}
/** What a reservation gives back on release: the model it counted against (it has `agent`), else the agent. */
type Holder = AgentState | ModelState;

interface Level extends Ring<Lane> {
  readonly priority: number;
  readonly lanes: Map<string, Lane>;
}
/** One agent's share of one priority level. */
interface Lane extends RingNode<Lane>, Ring<Queue> {
  readonly agent: AgentState;
  readonly level: Level;
  /**
   * Queues by instanceKey (no model) or `${model.length}\u0000${model}${instanceKey}`: instance keys
   * are hashes with no NUL, so the two kinds never collide, and the length prefix keeps models apart.
   */
  readonly queues: Map<string, Queue>;
}
/** One instance's queue for one model (or none) within a lane. */
interface Queue extends RingNode<Queue> {
  /** The instanceKey, as the gate is asked about it. */
  readonly key: string;
  readonly mapKey: string;
  readonly model: ModelState | null;
  readonly lane: Lane;
  readonly deque: OrderedDeque<Node>;
}
interface Node {
  readonly order: number;
  readonly entry: GovernorEntry;
  readonly queue: Queue;
  dead: boolean;
}

function checkCount(value: unknown, name: string): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    throw new TroupeError('INVALID_OPTIONS', `${name} must be a non-negative integer (got ${String(value)})`);
  }
  return value;
}

/** Validates limits in full before anything changes, so a bad call leaves the agent as it was. */
function limitsOf(agent: string, limits: number | null | AgentLimits): { total: number | null; models: [string, number][] } {
  if (limits === null) return { total: null, models: [] };
  if (typeof limits !== 'object') return { total: checkCount(limits, `limit of agent "${agent}"`), models: [] };
  const total = limits.total === null ? null : checkCount(limits.total, `limits.total of agent "${agent}"`);
  const given: unknown = limits.models ?? {};
  if (typeof given !== 'object' || given === null) throw new TroupeError('INVALID_OPTIONS', `limits.models of agent "${agent}" must be an object`);
  const where = (model: string) => `limits.models[${JSON.stringify(model)}] of agent "${agent}"`;
  return { total, models: Object.entries(given).map(([model, limit]): [string, number] => [model, checkCount(limit, where(model))]) };
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
  readonly #reservations = new Map<string, Holder>();
  /** Extra reservations for a taskId picked again before its first release: a caller bug we survive. */
  readonly #stacked = new Map<string, Holder[]>();

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

  setAgent(agent: string, limits: number | null | AgentLimits): void {
    const { total, models } = limitsOf(agent, limits);
    const state = this.#agent(agent);
    state.limit = total;
    state.registered = true;
    this.#setModelLimits(state, models);
    this.#touch(state);
  }

  removeAgent(agent: string): void {
    const state = this.#agents.get(agent);
    if (!state) return;
    state.registered = false;
    state.limit = null;
    this.#setModelLimits(state, []);
    this.#touch(state);
  }

  pauseAgent(agent: string, paused: boolean): void {
    if (typeof paused !== 'boolean') throw new TroupeError('INVALID_OPTIONS', `paused must be a boolean (got ${String(paused)})`);
    // Pausing creates the state so the pause holds for an agent that registers later.
    const state = paused ? this.#agent(agent) : this.#agents.get(agent);
    if (!state) return;
    state.paused = paused;
    this.#touch(state);
  }

  pickAgent(candidates: readonly string[], pending?: ReadonlyMap<string, number>): string | undefined {
    let best: AgentState | undefined;
    let bestLoad = Infinity;
    for (const name of candidates) {
      const state = this.#agents.get(name);
      if (!state?.registered) continue;
      const capacity = state.limit ?? this.#slots;
      const load = capacity === 0 ? Infinity : (state.queued + state.reserved + (pending?.get(name) ?? 0)) / capacity;
      // Only a strictly better candidate replaces the best, so a tie keeps the earlier one.
      if (!best || (best.paused && !state.paused) || (state.paused === best.paused && load < bestLoad)) {
        best = state;
        bestLoad = load;
      }
    }
    return best?.name;
  }

  enqueue(entry: GovernorEntry): void {
    if (this.#live.has(entry.taskId)) {
      throw new TroupeError('ILLEGAL_TRANSITION', `task ${entry.taskId} is already queued`);
    }
    if (!Number.isSafeInteger(entry.priority) || !Number.isFinite(entry.order) || (entry.model !== undefined && typeof entry.model !== 'string')) {
      throw new TroupeError('INVALID_INPUT', `task ${entry.taskId}: priority must be an integer, order a finite number and model a string`);
    }
    const state = this.#agent(entry.agent);
    const level = this.#level(entry.priority);
    let lane = level.lanes.get(entry.agent);
    if (!lane) {
      lane = { agent: state, level, queues: new Map(), prev: null, next: null, head: null, tail: null, size: 0 };
      level.lanes.set(entry.agent, lane);
      ringPush(level, lane);
    }
    const model = entry.model === undefined ? null : this.#model(state, entry.model);
    const mapKey = model ? `${model.name.length}\u0000${model.name}${entry.instanceKey}` : entry.instanceKey;
    let queue = lane.queues.get(mapKey);
    if (!queue) {
      queue = { key: entry.instanceKey, mapKey, model, lane, deque: new OrderedDeque<Node>(), prev: null, next: null };
      lane.queues.set(mapKey, queue);
      ringPush(lane, queue);
    }
    const node: Node = { order: entry.order, entry, queue, dead: false };
    queue.deque.push(node);
    this.#live.set(entry.taskId, node);
    this.#queued++;
    state.queued++;
    if (model) model.queued++;
    this.#touch(state);
  }

  remove(taskId: string): boolean {
    const node = this.#live.get(taskId);
    if (!node) return false;
    this.#live.delete(taskId);
    const queue = node.queue;
    queue.deque.kill(node);
    this.#dequeued(queue);
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
          let queue = lane.head;
          for (let i = lane.size; i > 0 && queue; i--) {
            const nextQueue: Queue | null = queue.next;
            const model = queue.model;
            // A model at its sub-limit is skipped before the gate, which is only asked about real candidates.
            const room = model === null || model.limit === null || model.reserved < model.limit;
            if (room && this.#admits(queue.key)) return this.#take(queue);
            queue = nextQueue;
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
    const holder = stacked ? stacked.pop() : this.#reservations.get(taskId);
    if (!holder) return;
    if (!stacked) this.#reservations.delete(taskId);
    else if (stacked.length === 0) this.#stacked.delete(taskId);
    this.#reserved--;
    const state = 'agent' in holder ? holder.agent : holder;
    state.reserved--;
    if ('agent' in holder) {
      holder.reserved--;
      this.#pruneModel(holder);
    }
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
      const shown = [...state.models.values()].filter((m) => m.limit !== null || m.reserved > 0);
      // fromEntries defines own properties, so a model named "__proto__" stays a plain key.
      const models = Object.fromEntries(shown.map((m) => [m.name, { reserved: m.reserved, limit: m.limit }]));
      const limit = state.registered ? state.limit : 0;
      agents[state.name] = { queued: state.queued, reserved: state.reserved, limit, paused: state.paused, models };
    }
    return { slots: this.#slots, reserved: this.#reserved, queued: this.#queued, frozen: this.#frozen, agents };
  }

  *queuedEntries(): Iterable<GovernorEntry> {
    // #live holds exactly the queued entries, so there are no dead deque items to skip.
    for (const node of this.#live.values()) yield node.entry;
  }

  /** Pops the queue's head entry, rotates the rings for fairness and reserves capacity. */
  #take(queue: Queue): GovernorEntry {
    // A listed queue always holds live work (emptied ones are unlinked), so shift() succeeds.
    const node = queue.deque.shift() as Node;
    const entry = node.entry;
    this.#live.delete(entry.taskId);
    const lane = queue.lane;
    const state = lane.agent;
    // Rotate before #dequeued may unlink: the picked queue and agent end their rings' cycles.
    ringRotateAfter(lane, queue);
    ringRotateAfter(lane.level, lane);
    this.#reserved++;
    state.reserved++;
    // The reservation remembers its model (no allocation: the holder is the model state itself).
    const holder: Holder = queue.model ?? state;
    if (queue.model) queue.model.reserved++;
    if (!this.#reservations.has(entry.taskId)) this.#reservations.set(entry.taskId, holder);
    else this.#stacked.set(entry.taskId, [...(this.#stacked.get(entry.taskId) ?? []), holder]);
    this.#dequeued(queue);
    return entry;
  }

  /** Accounts for one entry leaving `queue`, unlinking whatever structure it emptied. */
  #dequeued(queue: Queue): void {
    const lane = queue.lane;
    const state = lane.agent;
    this.#queued--;
    state.queued--;
    if (queue.model) {
      queue.model.queued--;
      this.#pruneModel(queue.model);
    }
    if (queue.deque.size === 0) {
      ringUnlink(lane, queue);
      lane.queues.delete(queue.mapKey);
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
      state = { name, limit: null, registered: false, paused: false, queued: 0, reserved: 0, runnable: false, models: new Map() };
      this.#agents.set(name, state);
    }
    return state;
  }

  #model(agent: AgentState, name: string): ModelState {
    const model = agent.models.get(name) ?? { name, agent, limit: null, queued: 0, reserved: 0 };
    agent.models.set(name, model);
    return model;
  }

  /** Replaces all of the agent's sub-limits; models not named lose theirs. */
  #setModelLimits(agent: AgentState, limits: readonly [string, number][]): void {
    for (const model of agent.models.values()) model.limit = null;
    for (const [name, limit] of limits) this.#model(agent, name).limit = limit;
    for (const model of agent.models.values()) this.#pruneModel(model);
  }

  /** Forgets a model that has no sub-limit, queued work or reservations: no queue points at it any more. */
  #pruneModel(model: ModelState): void {
    if (model.limit === null && model.queued === 0 && model.reserved === 0) model.agent.models.delete(model.name);
  }

  /** Re-derives the agent's runnable flag and forgets unregistered, unpaused agents that hold nothing. */
  #touch(state: AgentState): void {
    const runnable = state.registered && !state.paused && state.queued > 0 && (state.limit === null || state.reserved < state.limit);
    if (runnable !== state.runnable) {
      state.runnable = runnable;
      this.#runnableAgents += runnable ? 1 : -1;
    }
    if (!state.registered && !state.paused && state.queued === 0 && state.reserved === 0) this.#agents.delete(state.name);
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
