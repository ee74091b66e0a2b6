/**
 * The governor's accounting: per agent and per model, what is queued and reserved against which
 * limit, whether the agent is registered or paused, and so whether it may be picked from at all.
 * Limits are parsed and validated here too. Pure in-memory logic, like the rest of the governor.
 *
 * The queue structure (levels.ts) points at these states rather than copying them, so a changed
 * limit or pause applies from the very next pick.
 */
import { TroupeError } from '../errors.js';
import type { GovernorStats } from './governor.js';

/** An agent's concurrency: a total (null = none) and optional per-model sub-limits. */
export interface AgentLimits { total: number | null; models?: Readonly<Record<string, number>> }

/** One agent's counters and limits. */
export interface AgentState {
  readonly name: string;
  limit: number | null;
  registered: boolean;
  paused: boolean;
  queued: number;
  reserved: number;
  /** Cached "registered, unpaused, has room, has queued work", so the pick's first check is a counter. */
  runnable: boolean;
  /** Kept while a model has a sub-limit, queued work or reservations, so queues can hold on to it. */
  readonly models: Map<string, ModelState>;
}
/** One agent's counters for one model. Queues point at it, so a sub-limit change applies at once. */
export interface ModelState {
  readonly name: string;
  readonly agent: AgentState;
  limit: number | null;
  queued: number;
  reserved: number;
}

/** Returns `value` if it is a non-negative safe integer, else throws INVALID_OPTIONS naming it. */
export function checkCount(value: unknown, name: string): number {
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

/**
 * Every agent the governor knows: registered ones, and unregistered ones that still hold queued
 * work, reservations or a pause (the rest are forgotten as soon as they hold nothing).
 */
export class AgentAccounts {
  readonly #agents = new Map<string, AgentState>();
  #runnable = 0;

  /** How many agents are runnable; 0 means no pick can succeed, whatever is queued. */
  get runnable(): number { return this.#runnable; }

  /** Registers or updates an agent's limits (see Governor.setAgent). Throws before changing anything if they are invalid. */
  set(agent: string, limits: number | null | AgentLimits): void {
    const { total, models } = limitsOf(agent, limits);
    const state = this.agent(agent);
    state.limit = total;
    state.registered = true;
    this.#setModelLimits(state, models);
    this.#touch(state);
  }

  /** Unregisters an agent (see Governor.removeAgent). */
  remove(agent: string): void {
    const state = this.#agents.get(agent);
    if (!state) return;
    state.registered = false;
    state.limit = null;
    this.#setModelLimits(state, []);
    this.#touch(state);
  }

  /** Pauses or resumes an agent, registered or not (see Governor.pauseAgent). */
  pause(agent: string, paused: boolean): void {
    if (typeof paused !== 'boolean') throw new TroupeError('INVALID_OPTIONS', `paused must be a boolean (got ${String(paused)})`);
    // Pausing creates the state so the pause holds for an agent that registers later.
    const state = paused ? this.agent(agent) : this.#agents.get(agent);
    if (!state) return;
    state.paused = paused;
    this.#touch(state);
  }

  /** The least-loaded registered candidate (see Governor.pickAgent); `slots` is the capacity of an agent without a total. */
  pick(candidates: readonly string[], pending: ReadonlyMap<string, number> | undefined, slots: number): string | undefined {
    let best: AgentState | undefined;
    let bestLoad = Infinity;
    for (const name of candidates) {
      const state = this.#agents.get(name);
      if (!state?.registered) continue;
      const capacity = state.limit ?? slots;
      const load = capacity === 0 ? Infinity : (state.queued + state.reserved + (pending?.get(name) ?? 0)) / capacity;
      // Only a strictly better candidate replaces the best, so a tie keeps the earlier one.
      if (!best || (best.paused && !state.paused) || (state.paused === best.paused && load < bestLoad)) {
        best = state;
        bestLoad = load;
      }
    }
    return best?.name;
  }

  /** The agent's state, created (unregistered) if it has none yet. */
  agent(name: string): AgentState {
    let state = this.#agents.get(name);
    if (!state) {
      state = { name, limit: null, registered: false, paused: false, queued: 0, reserved: 0, runnable: false, models: new Map() };
      this.#agents.set(name, state);
    }
    return state;
  }

  /** The agent's state for `name`, created (no sub-limit) if it has none yet. */
  model(agent: AgentState, name: string): ModelState {
    const model = agent.models.get(name) ?? { name, agent, limit: null, queued: 0, reserved: 0 };
    agent.models.set(name, model);
    return model;
  }

  /** One entry of the agent (and model) was queued. */
  enqueued(agent: AgentState, model: ModelState | null): void {
    agent.queued++;
    if (model) model.queued++;
    this.#touch(agent);
  }

  /** One queued entry left without being picked (e.g. cancel). */
  dequeued(agent: AgentState, model: ModelState | null): void {
    agent.queued--;
    if (model) {
      model.queued--;
      this.#pruneModel(model);
    }
    this.#touch(agent);
  }

  /** One queued entry was picked: it moves from queued to reserved. */
  taken(agent: AgentState, model: ModelState | null): void {
    agent.queued--;
    agent.reserved++;
    if (model) {
      // Its reserved count just rose, so there is nothing to prune.
      model.queued--;
      model.reserved++;
    }
    this.#touch(agent);
  }

  /** A reservation was taken for an entry that was not queued (Governor.reclaim): it counts, whatever the limit. */
  reclaimed(agent: AgentState, model: ModelState | null): void {
    agent.reserved++;
    if (model) model.reserved++;
    this.#touch(agent);
  }

  /** One reservation was given back. */
  released(agent: AgentState, model: ModelState | null): void {
    agent.reserved--;
    if (model) {
      model.reserved--;
      this.#pruneModel(model);
    }
    this.#touch(agent);
  }

  /** The agents part of Governor.stats() (allocates). */
  stats(): GovernorStats['agents'] {
    const agents: GovernorStats['agents'] = {};
    for (const state of this.#agents.values()) {
      const shown = [...state.models.values()].filter((m) => m.limit !== null || m.reserved > 0);
      // fromEntries defines own properties, so a model named "__proto__" stays a plain key.
      const models = Object.fromEntries(shown.map((m) => [m.name, { reserved: m.reserved, limit: m.limit }]));
      const limit = state.registered ? state.limit : 0;
      agents[state.name] = { queued: state.queued, reserved: state.reserved, limit, paused: state.paused, models };
    }
    return agents;
  }

  /** Replaces all of the agent's sub-limits; models not named lose theirs. */
  #setModelLimits(agent: AgentState, limits: readonly [string, number][]): void {
    for (const model of agent.models.values()) model.limit = null;
    for (const [name, limit] of limits) this.model(agent, name).limit = limit;
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
      this.#runnable += runnable ? 1 : -1;
    }
    if (!state.registered && !state.paused && state.queued === 0 && state.reserved === 0) this.#agents.delete(state.name);
  }
}
