/**
 * A node's claim loop. A pass asks for as many tasks as the node's claim budget allows (its free
 * slots and its start-ahead window, see node.ts), one claimTasks
 * call per agent (each one statement), the agents in turn and the first of them rotating from pass
 * to pass, so one busy agent cannot keep the others waiting. A pass runs whenever budget frees up
 * (the node wakes it) and, while the queue looked empty, every `pollMs`.
 *
 * The poll backs up the wakes: a runtime wakes its node on the `queued` hint of a commit's NOTIFY
 * (a submit, a retry or a requeue on any node, src/store/postgres/events.ts HINTS), which a
 * connection can miss while it reconnects, and a delayed task falls due with no NOTIFY at all. A
 * poll first looks (one statement, no transaction: queue.ts anyRunnable) and claims only when the
 * look finds a due task: a claim is a transaction whose commit flushes the WAL, and an idle node
 * polled four times a second. A wake claims at once. A node that is busy never polls: its freed
 * slots wake it.
 */
import type pg from 'pg';
import type { Clock, ClockTimer } from '../clock.js';
import { isTroupeError } from '../errors.js';
import type { Logger } from '../log.js';
import type { ClaimedTask } from '../store/postgres/queue.js';
import type { ClusterQueue } from './options.js';

/** What a claimer needs from its node. */
export interface ClaimerDeps {
  pool: pg.Pool;
  queue: Pick<ClusterQueue, 'claim' | 'runnable'>;
  /** The node's id in the cluster. */
  node: string;
  /** The agents it claims for now (a runtime registers more as it runs). */
  agents(): readonly string[];
  leaseMs: number;
  pollMs: number;
  clock: Clock;
  log: Logger;
  /** Attempts the node may claim now. */
  free(): number;
  /** Takes the claimed tasks (they count against the budget from now on); `ms`: how long the claim statement took. */
  accept(claimed: ClaimedTask[], ms: number): void;
  /** The cluster refused a claim: this node is no longer a member (found dead, or it left). */
  refused(error: Error): void;
}

/** See the module comment. */
export class Claimer {
  readonly #k: ClaimerDeps;
  /** Where the next pass starts in the agents' order. */
  #first = 0;
  #running: Promise<void> | undefined;
  #again = false;
  #stopped = false;
  #poll: ClockTimer | undefined;

  constructor(deps: ClaimerDeps) {
    this.#k = deps;
  }

  /** Runs a pass soon (another right after the one under way, if one is). */
  wake(): void {
    this.#wake(false);
  }

  /** `polled`: the poll's timer, not a wake, asks for the pass (it looks before it claims). */
  #wake(polled: boolean): void {
    if (this.#stopped) return;
    if (this.#running) {
      this.#again = true;
      return;
    }
    this.#cancelPoll();
    this.#running = this.#loop(polled)
      .catch((error: unknown) => this.#k.log.error({ err: error }, 'the claim loop failed'))
      .finally(() => (this.#running = undefined));
  }

  /** Resolves once the passes under way now are over (what they claimed was accepted). */
  async settled(): Promise<void> {
    await this.#running;
  }

  /** Claims nothing more; resolves once a pass under way is over (what it claimed was accepted). */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#cancelPoll();
    await this.#running;
  }

  async #loop(polled: boolean): Promise<void> {
    // One pass covers the wakes of the rest of this turn (a settle batch frees several slots).
    await Promise.resolve();
    // No agent yet: nothing to claim until one is registered (which wakes the claimer).
    if (this.#k.agents().length === 0) return;
    // Nothing to claim: the poll goes on, unless a wake came during the look.
    if (polled && !(await this.#anyRunnable()) && !this.#again) {
      if (!this.#stopped) this.#armPoll();
      return;
    }
    let poll = false;
    do {
      this.#again = false;
      poll = await this.#pass();
    } while ((this.#again || !poll) && !this.#stopped && this.#k.free() > 0);
    if (poll && !this.#stopped) this.#armPoll();
  }

  /**
   * One pass: claims up to the budget, one call per agent. Returns whether to poll: some budget
   * stayed free because the queue had no more (or the claim failed and will be tried again).
   */
  async #pass(): Promise<boolean> {
    const agents = this.#k.agents();
    if (agents.length === 0) return false;
    const first = this.#first % agents.length;
    this.#first = (first + 1) % agents.length;
    let short = false;
    for (let i = 0; i < agents.length && !this.#stopped; i++) {
      const free = this.#k.free();
      if (free <= 0) return false;
      const agent = agents[(first + i) % agents.length]!;
      let claimed: ClaimedTask[];
      const at = performance.now();
      try {
        claimed = await this.#k.queue.claim(this.#k.pool, this.#k.node, agent, free, this.#k.leaseMs);
      } catch (error) {
        if (isTroupeError(error, 'ILLEGAL_STATE')) return this.#refused(error);
        this.#k.log.error({ err: error, agent }, 'claiming tasks failed; trying again');
        return true;
      }
      if (claimed.length > 0) this.#k.accept(claimed, performance.now() - at);
      if (claimed.length < free) short = true;
    }
    return short && this.#k.free() > 0;
  }

  /** The poll's look; a look that fails says yes, so the claim tries (and logs what fails). */
  async #anyRunnable(): Promise<boolean> {
    try {
      return await this.#k.queue.runnable(this.#k.pool, this.#k.node, this.#k.agents());
    } catch (error) {
      return isTroupeError(error, 'ILLEGAL_STATE') ? this.#refused(error) : true;
    }
  }

  /** The cluster refused this node (no longer a member): it claims and looks no more. */
  #refused(error: Error): false {
    this.#stopped = true;
    this.#k.refused(error);
    return false;
  }

  #armPoll(): void {
    this.#cancelPoll();
    this.#poll = this.#k.clock.setTimeout(() => {
      this.#poll = undefined;
      this.#wake(true);
    }, this.#k.pollMs);
  }

  #cancelPoll(): void {
    if (this.#poll !== undefined) this.#k.clock.clearTimeout(this.#poll);
    this.#poll = undefined;
  }
}
