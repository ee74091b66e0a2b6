/**
 * The supervisor, on the injected clock. It sweeps the leases of executing attempts: an attempt
 * whose lease ran out (its thread hung or blocked, so even the worker's own heartbeats stopped) is
 * ended as `lease_expired`, a retryable infrastructure fault, and its thread is terminated so the
 * slot comes back. Thread exits need no sweep: Piscina fails their attempts at once. While tasks
 * are queued it also runs a cycle every `intervalMs`: the starvation ladder and degraded drops.
 *
 * A sweep that fires late (this main thread was busy, or paused, for longer than a sweep period)
 * looks again on the next turn instead: timers run before the turn reads what the threads posted,
 * so the heartbeats they sent while it was busy are still queued, and their attempts are alive.
 */
import type { Clock, ClockTimer } from '../clock.js';
import type { Logger } from '../log.js';
import type { Dispatcher } from '../tasks/dispatcher.js';

/** A running supervisor. */
export interface Supervisor {
  /** Arms the next sweep while attempts execute, disarms it when none do (called on changes). */
  poke(): void;
  /** Runs a cycle now (rt.poke()); resolves when it is done. */
  cycleNow(): Promise<void>;
  stop(): void;
}

/** Options of {@link createSupervisor}. */
export interface SupervisorOptions {
  clock: Clock;
  log: Logger;
  dispatcher: Dispatcher;
  /** How often to sweep while attempts execute. */
  sweepMs: number;
  /** The queued-task cycle, run every `intervalMs` while `hasQueued()`. */
  cycle?: { run(): Promise<unknown>; readonly enabled: boolean };
  intervalMs?: number;
  hasQueued?: () => boolean;
}

/** Creates the supervisor. */
export function createSupervisor(options: SupervisorOptions): Supervisor {
  const { clock, log, dispatcher, sweepMs, cycle, intervalMs = 1_000, hasQueued = () => false } = options;
  let timer: ClockTimer | undefined;
  /** When the sweep timer was armed, and for how long. */
  let armedAt = 0;
  let armedFor = 0;
  let cycleTimer: ClockTimer | undefined;
  let running: Promise<void> | undefined;
  let again: Promise<void> | undefined;
  let stopped = false;

  /**
   * Runs a cycle, or, while one runs, one more after it (once, however many ask): the one under
   * way read the clock and the queue before this was asked for (rt.poke() after a change).
   */
  function runCycle(): Promise<void> {
    if (running) {
      again ??= running.then(() => {
        again = undefined;
        return stopped ? undefined : runCycle();
      });
      return again;
    }
    running = (cycle ? cycle.run() : Promise.resolve())
      .then(
        () => undefined,
        (error: unknown) => log.error({ err: error }, 'supervisor cycle failed'),
      )
      .finally(() => {
        running = undefined;
        armCycle();
      });
    return running;
  }

  /** Cycles only while work is queued: an idle runtime arms no clock timer. */
  function armCycle(): void {
    if (stopped || !cycle?.enabled || cycleTimer || running) return;
    if (!hasQueued()) return;
    cycleTimer = clock.setTimeout(() => {
      cycleTimer = undefined;
      if (!stopped) void runCycle();
    }, intervalMs);
  }

  function sweep(): void {
    timer = undefined;
    if (stopped) return;
    const now = clock.now();
    if (now - armedAt > armedFor + sweepMs) return arm(0);
    for (const attempt of [...dispatcher.expiredLeases(now)]) {
      log.warn({ attemptId: attempt.attemptId, expiredAt: attempt.leaseExpiresAt }, 'attempt lease expired');
      dispatcher.stop(attempt, 'lease_expired', `no heartbeat since the lease ran out at ${new Date(attempt.leaseExpiresAt).toISOString()}`);
    }
    poke();
  }

  /** Sweeps only while something executes: an idle runtime arms no clock timer for leases. */
  function poke(): void {
    armCycle();
    if (!dispatcher.busy || stopped) {
      if (timer) clock.clearTimeout(timer);
      timer = undefined;
      return;
    }
    if (!timer) arm(sweepMs);
  }

  function arm(ms: number): void {
    armedAt = clock.now();
    armedFor = ms;
    timer = clock.setTimeout(sweep, ms);
  }

  return {
    poke,
    cycleNow: () => (stopped ? Promise.resolve() : runCycle()),
    stop() {
      stopped = true;
      if (timer) clock.clearTimeout(timer);
      if (cycleTimer) clock.clearTimeout(cycleTimer);
      timer = cycleTimer = undefined;
    },
  };
}
