/**
 * Runtime controls that survive a restart: `freeze`, `unfreeze`, `kill`, plus `poke` and the
 * operator's early end of an agent's backoff pause. The frozen flag is stored in the `control`
 * database (key `runtime`) in the same step as its `runtime.frozen` / `runtime.unfrozen` event, and
 * read back at open before anything dispatches.
 */
import { checkText } from './ids.js';
import { TroupeError } from './errors.js';
import type { AgentFlowState, RuntimeControl } from './store/records.js';
import { flowKeyOf, type EngineParts } from './tasks/parts.js';
import type { Dispatcher } from './tasks/dispatcher.js';

/** What the runtime controls use: the slice of the engine's shared parts it reads. */
export const CONTROLS_PARTS = ['agents', 'clock', 'flow', 'governor', 'log', 'notifier', 'store'] as const;
export type ControlsDeps = Pick<EngineParts, (typeof CONTROLS_PARTS)[number]>;

/** The `control` key of the frozen flag. */
const RUNTIME_KEY = 'runtime';

/** What the controls need besides their slice of the engine parts. */
export interface ControlDeps {
  dispatcher: Dispatcher;
  /** Runs a supervisor cycle now. */
  cycleNow(): Promise<void>;
}

/** See the module comment. */
export class RuntimeControls {
  readonly #k: ControlsDeps;
  readonly #d: ControlDeps;
  #state: RuntimeControl = { frozen: false };
  #chain: Promise<unknown> = Promise.resolve();

  constructor(parts: ControlsDeps, deps: ControlDeps) {
    this.#k = parts;
    this.#d = deps;
    parts.notifier.onPauseEnded((agent, state, at) => this.pauseEnded(agent, state, at));
  }

  /** Restores the stored flag (open, before the rebuild dispatches anything). */
  load(): void {
    const stored = this.#k.store.read.control.get(RUNTIME_KEY) as RuntimeControl | undefined;
    if (stored && typeof stored.frozen === 'boolean') this.#state = stored;
    if (this.#state.frozen) this.#k.governor.freeze();
  }

  /** The current flag. */
  get state(): Readonly<RuntimeControl> {
    return this.#state;
  }

  /** Stops dispatch; running attempts carry on and submits are still accepted. Resolves once durable. */
  freeze(reason = 'frozen'): Promise<void> {
    try {
      checkText(reason, 'freeze: reason');
    } catch (error) {
      return Promise.reject(error as Error);
    }
    return this.#serial(async () => {
      if (this.#state.frozen) return;
      await this.#write({ frozen: true, reason, since: this.#k.clock.now() });
    });
  }

  /** Resumes dispatch. Resolves once durable. */
  unfreeze(): Promise<void> {
    return this.#serial(async () => {
      if (!this.#state.frozen) return;
      await this.#write({ frozen: false, since: this.#k.clock.now() });
    });
  }

  /**
   * Freezes, then aborts every live attempt (cooperatively, then by terminating its thread after
   * `cancelGraceMs`). Their tasks are requeued without spending their retry budget. Resolves once
   * the freeze is durable and no attempt is live.
   */
  async kill(reason = 'killed'): Promise<void> {
    checkText(reason, 'kill: reason');
    await this.#serial(() => this.#write({ frozen: true, reason, killed: true, since: this.#k.clock.now() }));
    this.#d.dispatcher.stopAll('killed', reason);
    await this.#d.dispatcher.idle();
  }

  /**
   * Drains now: re-checks every agent hold against the clock, fires the durable timers and
   * schedule ticks due by it, runs a supervisor cycle and fills free slots.
   */
  poke(): void {
    this.#k.flow.refresh(this.#k.clock.now());
    this.#k.notifier.poked();
    this.#k.notifier.work();
    void this.#d.cycleNow();
  }

  /** A backoff pause ran out on the clock: store the agent's state with `agent.resumed`. */
  pauseEnded(agent: string, state: AgentFlowState, at: number): void {
    this.#k.store
      .commit((w) => {
        w.putControl(flowKeyOf(agent), state);
        w.event('agent.resumed', { at, data: { agent, by: 'clock' } });
      })
      .catch((error: unknown) => this.#k.log.error({ err: error, agent }, 'recording the end of an agent pause failed'));
  }

  /** Ends an agent's backoff pause early. Resolves once durable; false if it was not paused. */
  async resumeAgent(name: string): Promise<boolean> {
    if (typeof name !== 'string' || !this.#k.agents.get(name)) throw new TroupeError('UNKNOWN_AGENT', `resumeAgent: no agent named ${JSON.stringify(name)} is registered`);
    const now = this.#k.clock.now();
    const state = this.#k.flow.resume(name, now);
    if (!state) return false;
    await this.#k.store.commit((w) => {
      w.putControl(flowKeyOf(name), state);
      w.event('agent.resumed', { at: now, data: { agent: name, by: 'operator' } });
    });
    this.#k.notifier.work();
    return true;
  }

  /** Runs control changes one at a time, so each sees the state the previous one left. */
  #serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#chain.then(fn);
    this.#chain = run.catch(() => undefined);
    return run;
  }

  /**
   * Writes the flag with its event. The governor stops before the commit (no dispatch may slip in
   * while a freeze commits) and resumes only after an unfreeze is durable; a failed commit puts the
   * governor back where the stored flag says it is.
   */
  async #write(state: RuntimeControl): Promise<void> {
    const { governor } = this.#k;
    if (state.frozen) governor.freeze();
    try {
      await this.#k.store.commit((w) => {
        w.putControl(RUNTIME_KEY, state);
        if (state.frozen) w.event('runtime.frozen', { at: state.since!, data: { reason: state.reason, killed: state.killed === true } });
        else w.event('runtime.unfrozen', { at: state.since!, data: {} });
      });
    } catch (error) {
      if (!this.#state.frozen) governor.unfreeze();
      throw error;
    }
    this.#state = state;
    if (!state.frozen) {
      governor.unfreeze();
      this.#k.notifier.work();
    }
  }
}
