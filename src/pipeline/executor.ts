/**
 * The one executor of effects: once a batch is durable, it runs the batch's effects in the order
 * their steps decided them. A handler that throws is logged and the rest still run.
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

/** See the module comment. */
export class EffectExecutor implements Executor {
  readonly #on: EffectHandlers;
  readonly #log: Logger;

  constructor(handlers: EffectHandlers, log: Logger) {
    this.#on = handlers;
    this.#log = log;
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
    for (const effect of effects) if (effect.kind === 'dispatch') this.#on.startFailed(effect.attemptId, error);
  }

  #run(effect: Effect): void {
    const on = this.#on;
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
