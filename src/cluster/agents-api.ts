/**
 * `rt.agents` on PostgreSQL: the agents a runtime runs. A registration is checked as the LMDB
 * runtime checks it, then for what the cluster can honour (options.ts checkClusterAgent); its
 * cluster-wide limits, backoff, capabilities and retention are stored (agent-rows.ts storeLimits) before the runtime's node claims its tasks,
 * tried again while that fails, until the runtime closes or a later registration of the name
 * replaces it.
 */
import type { AgentsApi } from '../api/runtime.js';
import { validateRegistration, type AgentRegistration, type RegisteredAgent } from '../agents/registry.js';
import type { Logger } from '../log.js';
import type { ResolvedOptions } from '../options.js';
import type pg from 'pg';
import { storeLimits } from './agent-rows.js';
import type { ClusterNodeHandle } from './node.js';
import { checkClusterAgent } from './options.js';

/** Wait before storing an agent's limits again after that failed. */
const LIMITS_RETRY_MS = 1_000;

/** A registration checked as the LMDB runtime checks it, then for what the cluster can honour. */
export function registered(registration: AgentRegistration, options: ResolvedOptions): RegisteredAgent {
  return checkClusterAgent(registration, validateRegistration(registration, { timeoutMs: options.defaultTimeoutMs, retry: options.defaultRetry, backoff: options.defaultBackoff }));
}

/** What the agents need from their runtime. */
export interface ClusterAgentsDeps {
  options: ResolvedOptions;
  pool: pg.Pool;
  log: Logger;
  /** The runtime's node, once started. */
  node(): ClusterNodeHandle | undefined;
  /** Aborts as the runtime closes: retries of limits that failed to store end. */
  stopping: AbortSignal;
  /** CLOSED (or ILLEGAL_STATE) naming `call` unless the runtime runs. */
  assertOpen(call: string): void;
}

/** See the module comment. */
export class ClusterAgents implements AgentsApi {
  readonly #k: ClusterAgentsDeps;
  readonly #byName = new Map<string, RegisteredAgent>();

  constructor(deps: ClusterAgentsDeps) {
    this.#k = deps;
  }

  register = (registration: AgentRegistration): RegisteredAgent => {
    this.#k.assertOpen('agents.register');
    const agent = registered(registration, this.#k.options);
    this.#byName.set(agent.name, agent);
    void this.#run(agent);
    return agent;
  };

  list = (): RegisteredAgent[] => [...this.#byName.values()];

  /** The agents the runtime started with (already checked, and run by its node from its start). */
  started(agents: readonly RegisteredAgent[]): void {
    for (const agent of agents) this.#byName.set(agent.name, agent);
  }

  get(name: string): RegisteredAgent | undefined {
    return this.#byName.get(name);
  }

  get size(): number {
    return this.#byName.size;
  }

  /** Stores an agent's limits (when it gives any), then has the node run it; tries again while that fails. */
  async #run(agent: RegisteredAgent): Promise<void> {
    const { pool, log, stopping } = this.#k;
    for (;;) {
      try {
        await storeLimits(pool, agent);
        // A later registration of the name replaced this one meanwhile: it applies instead.
        if (this.#byName.get(agent.name) === agent) this.#k.node()?.register(agent);
        return;
      } catch (error) {
        if (stopping.aborted) return;
        log.error({ err: error, agent: agent.name }, 'storing the agent limits, backoff or retention failed; its tasks are not claimed here until they are stored');
        await new Promise((resolve) => setTimeout(resolve, LIMITS_RETRY_MS).unref());
        if (stopping.aborted || this.#byName.get(agent.name) !== agent) return;
      }
    }
  }
}
