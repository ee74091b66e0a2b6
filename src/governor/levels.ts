/**
 * The governor's queued work and its pick, laid out so a pick never scans queued entries:
 *   sorted active priority levels → per level a ring of agents (lanes) → per lane a ring of queues,
 *   one per (instance, model) → per queue an order-keyed FIFO deque.
 * Rings are intrusive doubly linked lists, so "move the picked node to the back" and "drop an
 * emptied node" are O(1). Empty queues, lanes and levels are unlinked at once, so a pick only ever
 * walks structure that holds live work. Splitting an instance's work by model means an entry whose
 * model is at its sub-limit never blocks the other models' work behind it.
 *
 * No counts are kept here: lanes and queues point at the agent and model states of accounts.ts,
 * and the pick reads their flags and limits as they are at that moment.
 */
import type { AgentState, ModelState } from './accounts.js';
import { OrderedDeque, ringPush, ringRotateAfter, ringUnlink, type Ring, type RingNode } from './deque.js';
import type { GovernorEntry } from './governor.js';
import { ChurnMap } from '../collections.js';

/**
 * One queued entry. A pick turns it into the entry's reservation, so reserving allocates nothing:
 * the ledger keeps the node, and its queue still names the agent and model to give back (their
 * reserved counts keep those states alive until then).
 */
export interface EntryNode {
  readonly order: number;
  readonly entry: GovernorEntry;
  readonly queue: Queue;
  /** Removed while queued: the deque skips it. */
  dead: boolean;
  /** Reserved and in use by a started attempt (Governor.markUsed). */
  used: boolean;
}

/** An {@link EntryNode} made by a constructor, not an object literal: see `createTaskRecord` in records.ts. */
class Node implements EntryNode {
  readonly order: number;
  readonly entry: GovernorEntry;
  readonly queue: Queue;
  dead: boolean;
  used: boolean;
  constructor(entry: GovernorEntry, queue: Queue) {
    this.order = entry.order;
    this.entry = entry;
    this.queue = queue;
    this.dead = false;
    this.used = false;
  }
}

/** One instance's queue for one model (or none) within a lane. */
export interface Queue extends RingNode<Queue> {
  /** The instanceKey, as the gate is asked about it. */
  readonly key: string;
  readonly mapKey: string;
  readonly model: ModelState | null;
  readonly lane: Lane;
  readonly deque: OrderedDeque<EntryNode>;
}
/** One agent's share of one priority level. */
interface Lane extends RingNode<Lane>, Ring<Queue> {
  readonly agent: AgentState;
  readonly level: Level;
  /**
   * Queues by instanceKey (no model) or `${model.length}\u0000${model}${instanceKey}`: instance keys
   * are hashes with no NUL, so the two kinds never collide, and the length prefix keeps models apart.
   */
  readonly queues: ChurnMap<string, Queue>;
}
interface Level extends Ring<Lane> {
  readonly priority: number;
  readonly lanes: ChurnMap<string, Lane>;
}

/** See the module comment. */
export class PriorityLevels {
  readonly #admits: (instanceKey: string) => boolean;
  /** Active levels, ascending by priority; only levels holding live work. */
  readonly #levels: Level[] = [];
  readonly #byPriority = new ChurnMap<number, Level>();
  /** Exactly the queued entries, by taskId. */
  readonly #live = new ChurnMap<string, EntryNode>();

  /** `admits` is the governor's instance gate, asked only about real candidates. */
  constructor(admits: (instanceKey: string) => boolean) {
    this.#admits = admits;
  }

  /** Whether the taskId is queued. */
  has(taskId: string): boolean {
    return this.#live.has(taskId);
  }

  /** Queues an entry under its agent's (and model's) state. The caller has checked that its taskId is not queued. */
  add(entry: GovernorEntry, agent: AgentState, model: ModelState | null): void {
    const level = this.#level(entry.priority);
    let lane = level.lanes.get(agent.name);
    if (!lane) {
      lane = { agent, level, queues: new ChurnMap(), prev: null, next: null, head: null, tail: null, size: 0 };
      level.lanes.set(agent.name, lane);
      ringPush(level, lane);
    }
    const mapKey = model ? `${model.name.length}\u0000${model.name}${entry.instanceKey}` : entry.instanceKey;
    let queue = lane.queues.get(mapKey);
    if (!queue) {
      queue = { key: entry.instanceKey, mapKey, model, lane, deque: new OrderedDeque<EntryNode>(), prev: null, next: null };
      lane.queues.set(mapKey, queue);
      ringPush(lane, queue);
    }
    const node: EntryNode = new Node(entry, queue);
    queue.deque.push(node);
    this.#live.set(entry.taskId, node);
  }

  /** Takes a queued entry out (e.g. cancel): its node, or undefined if it was not queued. */
  remove(taskId: string): EntryNode | undefined {
    const node = this.#live.get(taskId);
    if (!node) return undefined;
    this.#live.delete(taskId);
    node.queue.deque.kill(node);
    this.#unlinkIfEmpty(node.queue);
    return node;
  }

  /**
   * Takes out the next entry in priority, fair-share and FIFO order whose agent is runnable, whose
   * model has room and whose instance the gate admits, and turns the rings so the picked queue and
   * lane wait a full turn. Undefined if there is none. The caller accounts for the reservation.
   */
  pick(): EntryNode | undefined {
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

  /** Every queued entry, in no particular order. */
  *entries(): Iterable<GovernorEntry> {
    // #live holds exactly the queued entries, so there are no dead deque items to skip.
    for (const node of this.#live.values()) yield node.entry;
  }

  /** Pops the queue's head entry and rotates the rings for fairness. */
  #take(queue: Queue): EntryNode {
    // A listed queue always holds live work (emptied ones are unlinked), so shift() succeeds.
    const node = queue.deque.shift() as EntryNode;
    this.#live.delete(node.entry.taskId);
    const lane = queue.lane;
    // Rotate before unlinking: the picked queue and lane end their rings' cycles.
    ringRotateAfter(lane, queue);
    ringRotateAfter(lane.level, lane);
    this.#unlinkIfEmpty(queue);
    return node;
  }

  /** Unlinks `queue` if it has emptied, then its lane and level if they have. */
  #unlinkIfEmpty(queue: Queue): void {
    if (queue.deque.size !== 0) return;
    const lane = queue.lane;
    ringUnlink(lane, queue);
    lane.queues.delete(queue.mapKey);
    if (lane.size !== 0) return;
    const level = lane.level;
    ringUnlink(level, lane);
    level.lanes.delete(lane.agent.name);
    if (level.size !== 0) return;
    this.#byPriority.delete(level.priority);
    this.#levels.splice(this.#levelIndex(level.priority), 1);
  }

  #level(priority: number): Level {
    let level = this.#byPriority.get(priority);
    if (level) return level;
    level = { priority, lanes: new ChurnMap(), head: null, tail: null, size: 0 };
    this.#byPriority.set(priority, level);
    this.#levels.splice(this.#levelIndex(priority), 0, level);
    return level;
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
