/**
 * The supervisor: sweeps the leases of executing attempts on the injected clock. An attempt whose
 * lease ran out (its thread hung or blocked, so even the worker's own heartbeats stopped) is
 * ended as `lease_expired`, a retryable infrastructure fault, and its thread is terminated so the
 * slot comes back. Thread exits need no sweep: Piscina fails their attempts at once.
 */
import type { Clock, ClockTimer } from '../clock.js';
import type { Logger } from '../log.js';
import type { Dispatcher } from '../tasks/dispatcher.js';

/** A running supervisor. */
export interface Supervisor {
  /** Arms the next sweep while attempts execute, disarms it when none do (called on changes). */
  poke(): void;
  stop(): void;
}

/** Options of {@link createSupervisor}. */
export interface SupervisorOptions {
  clock: Clock;
  log: Logger;
  dispatcher: Dispatcher;
  /** How often to sweep while attempts execute. */
  sweepMs: number;
}

/** Creates the supervisor. */
export function createSupervisor(options: SupervisorOptions): Supervisor {
  const { clock, log, dispatcher, sweepMs } = options;
  let timer: ClockTimer | undefined;
  let stopped = false;

  function sweep(): void {
    timer = undefined;
    if (stopped) return;
    const now = clock.now();
    for (const attempt of [...dispatcher.expiredLeases(now)]) {
      log.warn({ attemptId: attempt.attemptId, expiredAt: attempt.leaseExpiresAt }, 'attempt lease expired');
      dispatcher.stop(attempt, 'lease_expired', `no heartbeat since the lease ran out at ${new Date(attempt.leaseExpiresAt).toISOString()}`);
    }
    poke();
  }

  /** Sweeps only while something executes: an idle runtime arms no clock timer for leases. */
  function poke(): void {
    if (!dispatcher.busy || stopped) {
      if (timer) clock.clearTimeout(timer);
      timer = undefined;
      return;
    }
    timer ??= clock.setTimeout(sweep, sweepMs);
  }

  return {
    poke,
    stop() {
      stopped = true;
      if (timer) clock.clearTimeout(timer);
      timer = undefined;
    },
  };
}
