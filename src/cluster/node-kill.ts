/**
 * How a cluster node obeys rt.kill(), from whichever runtime of the cluster it came
 * (src/store/postgres/control.ts killCluster). The kill's durable state is the control row: frozen,
 * and `killed`. While it says so, every attempt a node holds was claimed before the kill (a frozen
 * cluster claims nothing), so the node stops them all; they end interrupted, requeued without
 * spending their budget. A node checks the row when the kill's NOTIFY wakes it, and again at each
 * lease renewal of some attempt, should it have missed the NOTIFY (its connection was re-made,
 * or the kill came while it started).
 *
 * A check first waits for the claim under way, if any: a claim that committed before the kill may
 * still be on its way back, and what it returns must be stopped too. It takes the node's attempts
 * before it reads the row: an attempt claimed after the read began cannot be a killed one (an
 * unfreeze came first, or the claim would have taken nothing).
 */
import type pg from 'pg';
import type { Logger } from '../log.js';
import { clusterControl } from '../store/postgres/control.js';
import type { NodeAttempts } from './node-attempts.js';

/** What a node's kill watch needs from its node. */
export interface KillWatchDeps {
  pool: pg.Pool;
  attempts: Pick<NodeAttempts, 'leases' | 'kill'>;
  /** Resolves once the claims under way now have been accepted. */
  claims(): Promise<void>;
  log: Logger;
}

/** See the module comment. */
export class KillWatch {
  readonly #k: KillWatchDeps;
  #checking: Promise<void> | undefined;
  #again = false;

  constructor(deps: KillWatchDeps) {
    this.#k = deps;
  }

  /** Checks the control row soon (one check at a time: a call during one runs another after it). */
  check(): void {
    if (this.#checking) {
      this.#again = true;
      return;
    }
    this.#checking = this.#loop().finally(() => (this.#checking = undefined));
  }

  /** Resolves once no check is under way. */
  async idle(): Promise<void> {
    while (this.#checking) await this.#checking;
  }

  async #loop(): Promise<void> {
    do {
      this.#again = false;
      try {
        await this.#check();
      } catch (error) {
        // The next renewal, or the next NOTIFY, checks again.
        this.#k.log.warn({ err: error }, 'reading the cluster controls for a kill failed; the next lease renewal checks again');
      }
    } while (this.#again);
  }

  async #check(): Promise<void> {
    await this.#k.claims();
    const leases = this.#k.attempts.leases();
    if (leases.length === 0) return;
    const control = await clusterControl(this.#k.pool);
    if (!control.killed) return;
    this.#k.log.warn({ attempts: leases.length, reason: control.reason }, 'the cluster was killed; stopping every attempt of this node');
    this.#k.attempts.kill(leases, control.reason ?? 'killed');
  }
}
