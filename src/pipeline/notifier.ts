/**
 * The internal notifier: how the runtime's parts learn that a task settled (after the commit that
 * settled it), that an attempt ended (as the dispatcher lets it go), that there may be work for free
 * slots (a task was queued, capacity came back), that attempts began or stopped executing, that a
 * durable timer fired, that an agent's pause ended, that a submit was refused, or that `rt.poke()`
 * asked for every clock-driven part to look at the clock now. These are internal news, never sent through the public event
 * bus, so a listener a user adds or removes cannot change what the runtime does. The notifier is
 * built first and the parts that act on news subscribe as they are built, so the runtime is
 * composed in dependency order with no part reaching for one built after it. A listener that
 * throws is reported and the others still run.
 */
import type { AgentFlowState, TimerRecord } from '../store/records.js';


/** Told that a task reached a terminal state, once its commit is durable. */
export type SettledListener = (taskId: string) => void;
/** Told that an attempt ended (settled, abandoned or stale), before its settle is decided. */
export type AttemptEndedListener = (taskId: string, attemptId: string) => void;

/** The listeners of one kind of news; one that throws is reported and the others still run. */
class Listeners<A extends unknown[]> {
  readonly #list: Array<(...args: A) => void> = [];
  readonly #name: string;
  readonly #onError: (error: unknown, what: string) => void;

  constructor(name: string, onError: (error: unknown, what: string) => void) {
    this.#name = name;
    this.#onError = onError;
  }

  add(listener: (...args: A) => void): void {
    this.#list.push(listener);
  }

  emit(...args: A): void {
    for (const listener of this.#list) {
      try {
        listener(...args);
      } catch (error) {
        this.#onError(error, this.#name);
      }
    }
  }
}

/** See the module comment. */
export class Notifier {
  readonly #settled: Listeners<[taskId: string]>;
  readonly #ended: Listeners<[taskId: string, attemptId: string]>;
  readonly #work: Listeners<[]>;
  readonly #timers: Listeners<[timer: TimerRecord]>;
  readonly #pauses: Listeners<[agent: string, state: AgentFlowState, at: number]>;
  readonly #refused: Listeners<[]>;
  readonly #busy: Listeners<[]>;
  readonly #poked: Listeners<[]>;

  /** `onError` hears about a listener that threw. */
  constructor(onError: (error: unknown, what: string) => void = () => undefined) {
    this.#settled = new Listeners('settled', onError);
    this.#ended = new Listeners('attemptEnded', onError);
    this.#work = new Listeners('work', onError);
    this.#timers = new Listeners('timerFired', onError);
    this.#pauses = new Listeners('pauseEnded', onError);
    this.#refused = new Listeners('refused', onError);
    this.#busy = new Listeners('busy', onError);
    this.#poked = new Listeners('poked', onError);
  }

  onSettled(listener: SettledListener): void {
    this.#settled.add(listener);
  }

  /** A task settled and its commit is durable. */
  settled(taskId: string): void {
    this.#settled.emit(taskId);
  }

  onAttemptEnded(listener: AttemptEndedListener): void {
    this.#ended.add(listener);
  }

  /** An attempt ended. */
  attemptEnded(taskId: string, attemptId: string): void {
    this.#ended.emit(taskId, attemptId);
  }

  onWork(listener: () => void): void {
    this.#work.add(listener);
  }

  /** There may be work for free slots: a task entered the governor, or capacity came back. */
  work(): void {
    this.#work.emit();
  }

  onTimer(listener: (timer: TimerRecord) => void): void {
    this.#timers.add(listener);
  }

  /** A durable timer is due. */
  timerFired(timer: TimerRecord): void {
    this.#timers.emit(timer);
  }

  onPauseEnded(listener: (agent: string, state: AgentFlowState, at: number) => void): void {
    this.#pauses.add(listener);
  }

  /** An agent's fast-failure pause ran out: its state is to be written. */
  pauseEnded(agent: string, state: AgentFlowState, at: number): void {
    this.#pauses.emit(agent, state, at);
  }

  onRefused(listener: () => void): void {
    this.#refused.add(listener);
  }

  /** A submit was refused with AT_CAPACITY. */
  refused(): void {
    this.#refused.emit();
  }

  onBusy(listener: () => void): void {
    this.#busy.add(listener);
  }

  /** Attempts began or stopped executing: the leases to sweep changed. */
  busy(): void {
    this.#busy.emit();
  }

  onPoked(listener: () => void): void {
    this.#poked.add(listener);
  }

  /** `rt.poke()`: whatever waits on the clock (durable timers, schedules' ticks) looks at it now. */
  poked(): void {
    this.#poked.emit();
  }
}
