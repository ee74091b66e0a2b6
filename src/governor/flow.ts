/**
 * Per-agent flow control on the injected clock: rate pacing (a token bucket), a daily start budget
 * and the pause after repeated fast failures (backoff).
 *
 * It owns the governor's per-agent pause flag: an agent is held back while any of the three says
 * so, and one clock timer per agent lets it go when the earliest hold ends. Its state is plain data
 * that the caller writes in the same step as the attempt start or settlement that changed it, so
 * tokens spent, the day's count and a pause all survive a restart.
 */
import { AGENT_FAULT_EXITS, type AttemptExit } from '../../machines/index.js';
import type { Clock, ClockTimer } from '../clock.js';
import type { RegisteredAgent } from '../agents/registry.js';
import type { AgentFlowState } from '../store/records.js';
import { dailyAt, windowStart, type CronSchedule } from '../scheduler/cron.js';
import type { Governor } from './governor.js';

/** What {@link FlowControl} needs from the runtime. */
export interface FlowDeps {
  clock: Clock;
  governor: Governor;
  /** An agent may dispatch again: fill free slots. */
  onRelease(): void;
  /** A backoff pause ran out on its own: persist `state` and record `agent.resumed`. */
  onPauseEnded(agent: string, state: AgentFlowState, at: number): void;
}

/** What stats show of an agent's flow control. */
export interface AgentFlowView {
  /** Tokens left in the rate bucket (null: no rate). */
  tokens: number | null;
  /** Starts counted today and the daily limit (null: no daily limit). */
  today: { count: number; limit: number; resetsAt: number } | null;
  /** Consecutive fast failures so far. */
  fastFails: number;
  /** Paused by backoff until then (null: not paused). */
  pausedUntil: number | null;
  /** Held back right now (pause, empty bucket or daily budget spent) until then (null: free). */
  heldUntil: number | null;
}

interface AgentFlow {
  agent: RegisteredAgent;
  daily: CronSchedule | null;
  /** When the current daily window ends (the next reset), so a start does not recompute it. */
  dayEnds?: number;
  state: AgentFlowState;
  timer?: ClockTimer;
  timerDue?: number;
  held: boolean;
}

/** See the module comment. */
export class FlowControl {
  readonly #deps: FlowDeps;
  readonly #flows = new Map<string, AgentFlow>();

  constructor(deps: FlowDeps) {
    this.#deps = deps;
  }

  /**
   * Sets (or replaces) an agent's policy, resuming from its state in memory or, at open, its
   * stored state (whatever in it is not a valid number is dropped, not trusted).
   */
  configure(agent: RegisteredAgent, stored: AgentFlowState | undefined, now: number): void {
    const previous = this.#flows.get(agent.name);
    const state: AgentFlowState = { ...(previous?.state ?? sanitize(stored)) };
    if (agent.rate) {
      state.tokens = Math.min(agent.rate.limit, state.tokens ?? agent.rate.limit);
      state.refilledAt ??= now;
    } else {
      delete state.tokens;
      delete state.refilledAt;
    }
    if (!agent.dailyLimit) {
      delete state.dayStart;
      delete state.dayCount;
    }
    const flow: AgentFlow = {
      agent,
      daily: agent.dailyLimit ? dailyAt(agent.dailyLimit.resetAt, agent.dailyLimit.tz) : null,
      state,
      held: previous?.held ?? false,
    };
    if (previous?.timer) this.#deps.clock.clearTimeout(previous.timer);
    this.#flows.set(agent.name, flow);
    // A backoff pause whose time ran out while the runtime was down ends now, as it would have.
    if (!this.#expirePause(flow, now)) this.#evaluate(flow, now);
  }

  /**
   * An attempt of `agent` is starting: spend a token and a unit of the day's budget. Returns the
   * state to write in the start step, or undefined when the agent has no rate or daily limit.
   */
  started(agentName: string, now: number): AgentFlowState | undefined {
    const flow = this.#flows.get(agentName);
    if (!flow || (!flow.agent.rate && !flow.daily)) return undefined;
    const { state } = flow;
    if (flow.agent.rate) {
      this.#refill(flow, now);
      state.tokens = state.tokens! - 1;
    }
    if (flow.daily) {
      this.#rollDay(flow, now);
      state.dayCount = state.dayCount! + 1;
    }
    this.#evaluate(flow, now);
    return { ...state };
  }

  /**
   * An attempt of `agent` ended after `durationMs`. Returns the state to write in the settlement
   * step when it changed, and `pausedUntil` when this failure paused the agent. A failure the agent
   * reported on purpose (`deliberate`: `{kind: 'fail'}` or a non-retryable error) says the task is
   * bad, not the agent: it leaves the streak as it is.
   */
  ended(agentName: string, exit: AttemptExit, durationMs: number, now: number, deliberate = false): { state: AgentFlowState; pausedUntil?: number } | undefined {
    const flow = this.#flows.get(agentName);
    const backoff = flow?.agent.backoff;
    if (!flow || !backoff || deliberate || exit === 'fail') return undefined;
    const { state } = flow;
    const before = state.fastFails;
    if (exit === 'success' || exit === 'fork') state.fastFails = 0;
    else if (AGENT_FAULT_EXITS.has(exit)) state.fastFails = durationMs < backoff.fastFailMs ? state.fastFails + 1 : 0;
    // Crashes, expired leases, cancels and interruptions say nothing about the agent: no change.
    if (state.fastFails === before) return undefined;
    if (state.fastFails >= backoff.failures) {
      state.fastFails = 0;
      state.pausedUntil = now + backoff.pauseMs;
      this.#evaluate(flow, now);
      return { state: { ...state }, pausedUntil: state.pausedUntil };
    }
    return { state: { ...state } };
  }

  /** Lifts a backoff pause early (operator). Returns the state to persist, or undefined if not paused. */
  resume(agentName: string, now: number): AgentFlowState | undefined {
    const flow = this.#flows.get(agentName);
    if (!flow || flow.state.pausedUntil === undefined) return undefined;
    delete flow.state.pausedUntil;
    flow.state.fastFails = 0;
    this.#evaluate(flow, now);
    return { ...flow.state };
  }

  /** Re-evaluates every hold against the clock now (poke, or a clock that jumped). */
  refresh(now: number): void {
    for (const flow of this.#flows.values()) this.#expirePause(flow, now) || this.#evaluate(flow, now);
  }

  /** What stats show for an agent, or undefined for an agent never configured. */
  view(agentName: string, now: number): AgentFlowView | undefined {
    const flow = this.#flows.get(agentName);
    if (!flow) return undefined;
    const { state, agent } = flow;
    if (agent.rate) this.#refill(flow, now);
    if (flow.daily) this.#rollDay(flow, now);
    const heldUntil = this.#heldUntil(flow, now);
    return {
      tokens: agent.rate ? Math.floor(state.tokens! * 1000) / 1000 : null,
      today: flow.daily ? { count: state.dayCount!, limit: agent.dailyLimit!.limit, resetsAt: flow.dayEnds ?? flow.daily.next(now) } : null,
      fastFails: state.fastFails,
      pausedUntil: state.pausedUntil ?? null,
      heldUntil: heldUntil > now ? heldUntil : null,
    };
  }

  /** Clears every timer (close). */
  stop(): void {
    for (const flow of this.#flows.values()) {
      if (flow.timer) this.#deps.clock.clearTimeout(flow.timer);
      flow.timer = undefined;
    }
  }

  #refill(flow: AgentFlow, now: number): void {
    const { state } = flow;
    const { limit, windowMs } = flow.agent.rate!;
    // A clock that went backwards (another machine, a manual clock) refills nothing.
    const elapsed = Math.max(0, now - state.refilledAt!);
    state.tokens = Math.min(limit, state.tokens! + (elapsed * limit) / windowMs);
    state.refilledAt = now;
  }

  #rollDay(flow: AgentFlow, now: number): void {
    // Computing a window costs ~100 µs of cron work: do it once per day, not per start.
    if (flow.dayEnds !== undefined && flow.state.dayStart !== undefined && now >= flow.state.dayStart && now < flow.dayEnds) return;
    // A clock that went back into an earlier day (NTP, another machine) does not start that day's
    // budget over: the day counted stays the latest one begun, until the clock passes its end.
    if (flow.state.dayStart !== undefined && now < flow.state.dayStart) {
      flow.dayEnds ??= flow.daily!.next(flow.state.dayStart);
      return;
    }
    const start = windowStart(flow.daily!, now);
    flow.dayEnds = flow.daily!.next(start);
    if (flow.state.dayStart !== start) {
      flow.state.dayStart = start;
      flow.state.dayCount = 0;
    }
  }

  /** Until when the agent is held back (<= now: free). */
  #heldUntil(flow: AgentFlow, now: number): number {
    const { state, agent } = flow;
    let until = state.pausedUntil ?? 0;
    if (agent.rate && state.tokens! < 1) {
      const { limit, windowMs } = agent.rate;
      until = Math.max(until, now + Math.ceil(((1 - state.tokens!) * windowMs) / limit));
    }
    if (flow.daily && state.dayCount! >= agent.dailyLimit!.limit) until = Math.max(until, flow.dayEnds ?? flow.daily.next(now));
    return until;
  }

  /** Sets the governor's pause flag from the holds, and arms the timer that ends the earliest. */
  #evaluate(flow: AgentFlow, now: number): void {
    if (flow.agent.rate) this.#refill(flow, now);
    if (flow.daily) this.#rollDay(flow, now);
    const until = this.#heldUntil(flow, now);
    const held = until > now;
    const { clock, governor } = this.#deps;
    if (held !== flow.held) {
      flow.held = held;
      governor.pauseAgent(flow.agent.name, held);
      if (!held) this.#deps.onRelease();
    }
    if (held && flow.timerDue === until && flow.timer) return;
    if (flow.timer) clock.clearTimeout(flow.timer);
    flow.timer = undefined;
    flow.timerDue = undefined;
    if (held) {
      flow.timerDue = until;
      flow.timer = clock.setTimeout(() => {
        flow.timer = undefined;
        flow.timerDue = undefined;
        const at = clock.now();
        if (!this.#expirePause(flow, at)) this.#evaluate(flow, at);
      }, until - now);
    }
  }

  /** Ends a backoff pause whose time is up; true if it did (and re-evaluated). */
  #expirePause(flow: AgentFlow, now: number): boolean {
    if (flow.state.pausedUntil === undefined || flow.state.pausedUntil > now) return false;
    delete flow.state.pausedUntil;
    this.#evaluate(flow, now);
    this.#deps.onPauseEnded(flow.agent.name, { ...flow.state }, now);
    return true;
  }
}

/** Keeps only the fields of a stored state that are finite numbers. */
function sanitize(stored: AgentFlowState | undefined): AgentFlowState {
  const state: AgentFlowState = { fastFails: 0 };
  if (typeof stored !== 'object' || stored === null) return state;
  for (const key of ['tokens', 'refilledAt', 'dayStart', 'dayCount', 'pausedUntil', 'fastFails'] as const) {
    const value = stored[key];
    if (typeof value === 'number' && Number.isFinite(value)) state[key] = value;
  }
  return state;
}
