/**
 * The background retention sweep of a runtime on PostgreSQL, as the LMDB runtime's
 * (src/tasks/retention.ts): every `retention.sweepMs` on the runtime's clock, settled tasks past
 * their rule (their own, their agent's as stored by whichever runtime registered it, else this
 * runtime's) and events older than `eventsMs` are removed (src/store/postgres/retention.ts: by the
 * database's clock, in short transactions, one sweep at a time across the cluster). A sweep that finds another runtime's under way skips: the other
 * removes what is due, and this one looks again at its next turn. `stats` counts this runtime's
 * sweeps, as LMDB's does, and the ones it skipped.
 */
import type pg from 'pg';
import type { Clock } from '../clock.js';
import type { Logger } from '../log.js';
import { sweepRetention, type SweepRules } from '../store/postgres/retention.js';
import type { RetentionStats } from '../tasks/retention.js';
import type { ResolvedRetention } from '../tasks/retention-rules.js';
import { Every } from './every.js';

/** What the sweep needs from its runtime. */
export interface ClusterRetentionDeps {
  pool: pg.Pool;
  clock: Clock;
  log: Logger;
  /** null: retention is off, and nothing is ever swept. */
  policy: ResolvedRetention | null;
}

/** Makes the runtime's sweep and arms it (nothing with `retention: false`). */
export function startClusterRetention(deps: ClusterRetentionDeps): ClusterRetention {
  const retention = new ClusterRetention(deps);
  retention.start();
  return retention;
}

/** See the module comment. */
export class ClusterRetention {
  readonly #k: ClusterRetentionDeps;
  readonly #rules: SweepRules | undefined;
  readonly #every: Every | undefined;
  #stopped = false;
  readonly #stats: RetentionStats = { sweeps: 0, removed: 0, eventsRemoved: 0, skipped: 0 };

  constructor(deps: ClusterRetentionDeps) {
    this.#k = deps;
    const { policy } = deps;
    if (!policy) return;
    this.#rules = { rules: policy.rules, eventsMs: policy.eventsMs };
    this.#every = new Every(deps.clock, policy.sweepMs, () => this.#sweep());
  }

  /** Arms the first sweep, one `sweepMs` from now. */
  start(): void {
    if (!this.#every) return;
    this.#stats.nextSweepAt = this.#k.clock.now() + this.#k.policy!.sweepMs;
    this.#every.start(false);
  }

  /** Disarms the sweep, and waits for one under way to stop after its current transaction. */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#stats.nextSweepAt = undefined;
    await this.#every?.stop();
  }

  /** Null while retention is off. */
  get stats(): RetentionStats | null {
    return this.#rules ? { ...this.#stats } : null;
  }

  async #sweep(): Promise<void> {
    const { clock, log } = this.#k;
    const started = clock.now();
    try {
      const outcome = await sweepRetention(this.#k.pool, this.#rules!, { stopped: () => this.#stopped });
      if (outcome === 'skipped') {
        this.#stats.skipped!++;
        log.debug('another runtime of the cluster is sweeping: this sweep is skipped');
        return;
      }
      this.#stats.sweeps++;
      this.#stats.lastSweepAt = started;
      this.#stats.removed += outcome.tasks;
      this.#stats.eventsRemoved += outcome.events;
      if (outcome.tasks > 0 || outcome.events > 0) log.info({ tasks: outcome.tasks, events: outcome.events }, 'retention removed settled tasks and old events');
    } catch (error) {
      log.error({ err: error }, 'the retention sweep failed; the next one tries again');
    } finally {
      if (!this.#stopped) this.#stats.nextSweepAt = clock.now() + this.#k.policy!.sweepMs;
    }
  }
}
