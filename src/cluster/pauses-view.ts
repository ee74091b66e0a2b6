/**
 * The cluster's fast-failure pauses as one runtime on PostgreSQL shows them in `stats()`
 * (`agents[name].paused`): read as the runtime starts, again when a commit's NOTIFY hints that an
 * agent was paused or resumed (store/postgres/backoff.ts; whether the feed reads events or not),
 * and taken from `agent.paused` / `agent.resumed` while the feed reads them. A pause shows until
 * its end, on this runtime's clock, or its `agent.resumed`, whichever comes first.
 */
import type pg from 'pg';
import type { RuntimeEvent } from '../api/events.js';
import type { Clock } from '../clock.js';
import type { Logger } from '../log.js';
import { TroupeError } from '../errors.js';
import { pausedAgents, resumeAgentPause } from '../store/postgres/backoff.js';

/** See the module comment. */
export class PausesView {
  readonly #pool: pg.Pool;
  readonly #clock: Clock;
  readonly #log: Logger;
  /** Paused agents and until when (epoch ms). */
  #until = new Map<string, number>();

  constructor(pool: pg.Pool, clock: Clock, log: Logger) {
    this.#pool = pool;
    this.#clock = clock;
    this.#log = log;
  }

  /** Whether `agent` is paused, as last seen. */
  paused(agent: string): boolean {
    return (this.#until.get(agent) ?? 0) > this.#clock.now();
  }

  /** Reads the pauses now. */
  async read(): Promise<void> {
    this.#until = await pausedAgents(this.#pool);
  }

  /** Reads the pauses soon (a hint said one changed); a failed read is logged, and the next hint or event sets them. */
  refresh(): void {
    this.read().catch((error: unknown) => this.#log.warn({ err: error }, 'reading the paused agents failed'));
  }

  /**
   * `rt.resumeAgent(name)`: ends the agent's pause for the whole cluster (store/postgres/backoff.ts)
   * and reads the pauses again. UNKNOWN_AGENT unless `registered` here, as on LMDB.
   */
  async resume(name: string, registered: (agent: string) => boolean): Promise<boolean> {
    if (typeof name !== 'string' || !registered(name)) throw new TroupeError('UNKNOWN_AGENT', `resumeAgent: no agent named ${JSON.stringify(name)} is registered`);
    const resumed = await resumeAgentPause(this.#pool, name);
    await this.read();
    return resumed;
  }

  /** The feed's sink: the pauses from its events. */
  readonly observe = (events: readonly RuntimeEvent[]): void => {
    for (const event of events) {
      if (event.type === 'agent.paused') this.#until.set(event.data.agent, event.data.until);
      else if (event.type === 'agent.resumed') this.#until.delete(event.data.agent);
    }
  };
}
