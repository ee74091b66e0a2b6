/**
 * The cluster's agents as one runtime on PostgreSQL shows them in `stats()`: each agent's limits
 * as the cluster holds them (`agents[name].limit` and `models`: its row of `troupe_agents`, which
 * every claim enforces, whichever runtime stored it) and its fast-failure pause
 * (`agents[name].paused`). Read as the runtime starts, and again when a commit's NOTIFY hints
 * that an agent's row changed (limits stored, store/postgres/limits.ts; an agent paused or
 * resumed, backoff.ts; whether the feed reads events or not); pauses are also taken from
 * `agent.paused` / `agent.resumed` while the feed reads them. A pause shows until its end, on this
 * runtime's clock, or its `agent.resumed`, whichever comes first.
 */
import type pg from 'pg';
import type { RuntimeEvent } from '../api/events.js';
import type { Clock } from '../clock.js';
import type { Logger } from '../log.js';
import { TroupeError } from '../errors.js';
import { resumeAgentPause } from '../store/postgres/backoff.js';
import { readAgentRows } from '../store/postgres/limits.js';

/** An agent's concurrency as the cluster holds it: a total (null: none) and per-model sub-limits. */
export interface StoredConcurrency {
  concurrency: number | null;
  models: Readonly<Record<string, number>>;
}

/** See the module comment. */
export class AgentsView {
  readonly #pool: pg.Pool;
  readonly #clock: Clock;
  readonly #log: Logger;
  /** Paused agents and until when (epoch ms). */
  #until = new Map<string, number>();
  /** The agents with a row, and their concurrency. */
  #limits = new Map<string, StoredConcurrency>();

  constructor(pool: pg.Pool, clock: Clock, log: Logger) {
    this.#pool = pool;
    this.#clock = clock;
    this.#log = log;
  }

  /** Whether `agent` is paused, as last seen. */
  paused(agent: string): boolean {
    return (this.#until.get(agent) ?? 0) > this.#clock.now();
  }

  /** `agent`'s concurrency as last read from its row; undefined when it had no row then. */
  stored(agent: string): StoredConcurrency | undefined {
    return this.#limits.get(agent);
  }

  /** Reads the agents' rows now. */
  async read(): Promise<void> {
    const rows = await readAgentRows(this.#pool);
    this.#until = new Map([...rows].flatMap(([name, row]) => (row.pausedUntil === null ? [] : [[name, row.pausedUntil] as const])));
    this.#limits = new Map([...rows].map(([name, { concurrency, models }]) => [name, { concurrency, models }]));
  }

  /** Reads the rows soon (a hint said one changed); a failed read is logged, and the next hint or event sets them. */
  refresh(): void {
    this.read().catch((error: unknown) => this.#log.warn({ err: error }, 'reading the agents failed'));
  }

  /**
   * `rt.resumeAgent(name)`: ends the agent's pause for the whole cluster (store/postgres/backoff.ts)
   * and reads the rows again. UNKNOWN_AGENT unless `registered` here, as on LMDB.
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
