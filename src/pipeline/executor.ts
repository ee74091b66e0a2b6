/**
 * The one executor of effects: once a batch is durable, it runs the batch's effects in the order
 * their steps decided them. Each part registers the handlers of the effects it owns as it is built
 * (the dispatcher its starts and stops, the scheduler its schedules, …); the runtime checks at
 * start that every kind has one. A handler that throws is logged and the rest still run.
 */
import type { AbortReason } from '../../actors/wire.js';
import type { Logger } from '../log.js';
import type { TimerRecord } from '../store/records.js';
import type { Effect } from '../steps/types.js';
import type { Executor } from './pipeline.js';

/** What the runtime does for each kind of effect. */
export interface EffectHandlers {
  /** A start is durable: hand the attempt to its thread. */
  dispatch(attemptId: string): void;
  /** A start's commit failed: the attempt never ran. */
  startFailed(attemptId: string, error: unknown): void;
  notify(taskId: string): void;
  arm(timer: TimerRecord): void;
  disarm(timer: TimerRecord): void;
  stop(attemptId: string, reason: AbortReason, detail?: string): void;
  cleanWorkspace(taskId: string, workspace: string, run: number): void;
  armSchedule(scheduleId: string, due: number | null): void;
}

const HANDLER_NAMES: ReadonlyArray<keyof EffectHandlers> = ['dispatch', 'startFailed', 'notify', 'arm', 'disarm', 'stop', 'cleanWorkspace', 'armSchedule'];

/** See the module comment. */
export class EffectExecutor implements Executor {
  readonly #on: Partial<EffectHandlers> = {};
  readonly #log: Logger;

  constructor(log: Logger) {
    this.#log = log;
  }

  /** Registers handlers; a kind already handled is a wiring mistake. */
  handle(handlers: Partial<EffectHandlers>): void {
    for (const kind of Object.keys(handlers) as Array<keyof EffectHandlers>) {
      if (this.#on[kind]) throw new Error(`effect handler ${kind} registered twice`);
    }
    Object.assign(this.#on, handlers);
  }

  /** The effect kinds nobody handles (the runtime refuses to start with any). */
  get unhandled(): string[] {
    return HANDLER_NAMES.filter((name) => this.#on[name] === undefined);
  }

  run(effects: readonly Effect[]): void {
    for (const effect of effects) {
      try {
        this.#run(effect);
      } catch (error) {
        this.#log.error({ err: error, effect: effect.kind }, 'an effect failed');
      }
    }
  }

  failed(effects: readonly Effect[], error: unknown): void {
    this.#log.error({ err: error, effects: effects.length }, 'a batch failed to commit; its effects do not run');
    for (const effect of effects) if (effect.kind === 'dispatch') this.#on.startFailed!(effect.attemptId, error);
  }

  #run(effect: Effect): void {
    const on = this.#on as EffectHandlers;
    switch (effect.kind) {
      case 'dispatch':
        return on.dispatch(effect.attemptId);
      case 'notify':
        return on.notify(effect.taskId);
      case 'arm':
        return on.arm(effect.timer);
      case 'disarm':
        return on.disarm(effect.timer);
      case 'stop':
        return on.stop(effect.attemptId, effect.reason, effect.detail);
      case 'clean-workspace':
        return on.cleanWorkspace(effect.taskId, effect.workspace, effect.run);
      case 'arm-schedule':
        return on.armSchedule(effect.scheduleId, effect.due);
    }
  }
}
