/**
 * An attempt in flight, host side. Its phase only moves forward, through one table:
 *
 *   starting ──▶ dispatched ──▶ executing ──▶ ended
 *       └────────────┴───────────────┴──────────▲
 *
 * starting: its start commit is in flight; dispatched: the start is durable and the attempt is
 * handed to its thread, which queues it until one of its slots is free; executing: the thread
 * runs it (its lease and timeout count from then); ended. Setting any other move throws
 * ILLEGAL_STATE, and each move is logged at debug level on the attempt's own logger. The attempt
 * owns its timers (timeout, stop grace), its lease and what stopping it asked for.
 */
import type { AbortReason, AttemptRequest } from '../../actors/wire.js';
import { plainConstructor } from '../allocation.js';
import type { RegisteredAgent } from '../agents/registry.js';
import { attemptMoves, type AttemptBucket, type AttemptChange, type AttemptExit } from '../../machines/index.js';
import type { Clock, ClockTimer } from '../clock.js';
import { TroupeError } from '../errors.js';
import type { GovernorEntry } from '../governor/governor.js';
import type { Logger } from '../log.js';
import type { InstanceDescriptor, Router } from '../router/router.js';
import type { AttemptRecord, TaskRecord } from '../store/records.js';
import { carryTrace, type AttemptSpan } from '../telemetry/tracing.js';

/** See the module comment. */
export type AttemptPhase = 'starting' | 'dispatched' | 'executing' | 'ended';

const NEXT: Readonly<Record<AttemptPhase, readonly AttemptPhase[]>> = {
  starting: ['dispatched', 'ended'],
  dispatched: ['executing', 'ended'],
  executing: ['ended'],
  ended: [],
};

/** How often workers heartbeat a running attempt: three times per lease (capped at an hour: a lease of a year in tests). */
export function heartbeatMsOf(leaseMs: number): number {
  return Math.min(3_600_000, Math.max(10, Math.floor(leaseMs / 3)));
}

/** See the module comment. */
export class Attempt implements InstanceDescriptor {
  readonly attemptId: string;
  readonly taskId: string;
  readonly run: number;
  readonly attempt: number;
  readonly token: number;
  /** Its governor reservation, given back when it ends (or parks). */
  readonly entry: GovernorEntry;
  /** Its task's agent, lane and workspace: what the router needs to create the instance that counts it. */
  readonly agent: string;
  readonly lane: string;
  readonly workspace: string | undefined;
  /** Its record as the start step wrote it (the settle step ends it). */
  readonly record: AttemptRecord;
  /** performance.now() of the last phase change, for the start-ahead window's averages. */
  mark = performance.now();
  /** Where the instance actor counts it. */
  bucket: AttemptBucket | undefined = undefined;
  /** Set once something asked it to stop (cancel, timeout, lease expiry, kill, shutdown). */
  stop: { reason: AbortReason; detail?: string } | undefined = undefined;
  /** The exit code its agent ended its thread with (`process.exit`), once the thread said so. */
  endedThread: number | undefined = undefined;
  /** What its thread said about the abort (which thread had it, which did not answer in time). */
  abortAnswer: Promise<{ foundIn: number | undefined; unresponsive: number[] }> | undefined = undefined;
  /** Its `troupe.attempt` span, when tracing is on (telemetry/tracing.ts): ended as it settles. */
  trace: AttemptSpan | undefined = undefined;
  /** Log lines stored so far (the next line's number). */
  lines = 0;
  /** Waiting on the host (input, join): it gave its slot and its reservation back. */
  parked = false;
  /** The lease: renewed by any report from its thread (the worker heartbeats on its own). */
  leaseExpiresAt: number;
  #phase: AttemptPhase = 'starting';
  #timeout: ClockTimer | undefined = undefined;
  #grace: ClockTimer | undefined = undefined;
  readonly #parentLog: Logger;
  #log: Logger | undefined = undefined;

  /**
   * `descriptor`'s fields are copied (it may be the task's record: the attempt keeps no version of
   * it alive, nor an object of its own for them).
   */
  constructor(record: AttemptRecord, entry: GovernorEntry, descriptor: InstanceDescriptor, log: Logger) {
    this.attemptId = record.attemptId;
    this.taskId = record.taskId;
    this.run = record.run;
    this.attempt = record.attempt;
    this.token = record.token;
    this.record = record;
    this.entry = entry;
    this.agent = descriptor.agent;
    this.lane = descriptor.lane;
    this.workspace = descriptor.workspace;
    this.leaseExpiresAt = record.leaseExpiresAt;
    this.#parentLog = log;
  }

  get phase(): AttemptPhase {
    return this.#phase;
  }

  set phase(next: AttemptPhase) {
    const from = this.#phase;
    if (!NEXT[from].includes(next)) throw new TroupeError('ILLEGAL_STATE', `attempt ${this.attemptId} cannot go from ${from} to ${next}`);
    this.#phase = next;
    if (this.#parentLog.isLevelEnabled('debug')) this.log.debug({ from, to: next }, 'attempt phase');
  }

  /** Its own logger, `child({ taskId, attemptId })`, made on first use. */
  get log(): Logger {
    return (this.#log ??= this.#parentLog.child({ taskId: this.taskId, attemptId: this.attemptId }));
  }

  /** Any report from its thread proves the thread alive: the lease runs `leaseMs` from `now`. */
  renewLease(now: number, leaseMs: number): void {
    this.leaseExpiresAt = now + leaseMs;
  }

  /** Arms its timeout (`timeoutMs` > 0) from now. */
  armTimeout(clock: Clock, timeoutMs: number, onTimeout: () => void): void {
    if (timeoutMs > 0) this.#timeout = clock.setTimeout(onTimeout, timeoutMs);
  }

  /** Arms the grace period a stopping attempt has before its thread is terminated. */
  armGrace(clock: Clock, graceMs: number, onExpiry: () => void): void {
    this.#grace = clock.setTimeout(onExpiry, graceMs);
  }

  /** What its thread is handed once its start is durable. */
  request(task: TaskRecord, agent: Pick<RegisteredAgent, 'name' | 'module'>): AttemptRequest {
    const request: AttemptRequest = { module: agent.module, agent: agent.name, taskId: this.taskId, attemptId: this.attemptId, run: this.run, attempt: this.attempt, token: this.token, input: task.input };
    if (task.workspace !== undefined) request.workspace = task.workspace;
    if (task.followUp !== undefined) request.followUp = task.followUp;
    carryTrace(request, this.trace);
    return request;
  }

  /**
   * Tells the instance actor that counts it where it stands now (`status`: how it ended). A move
   * the actor would not make (a BEGIN that arrives once it is stopping) is not told, and its bucket
   * stays where the actor counts it.
   */
  tell(router: Pick<Router, 'note'>, change: AttemptChange['change'], at: number, status?: AttemptExit): void {
    if (!attemptMoves(this.bucket, change)) return;
    router.note(this.entry.instanceKey, new Told(this.attemptId, change, this.bucket, status), at, this);
    this.bucket = change === 'ended' || change === 'released' ? undefined : change;
  }

  /** Clears its timers (it ended). */
  clearTimers(clock: Clock): void {
    if (this.#timeout) clock.clearTimeout(this.#timeout);
    if (this.#grace) clock.clearTimeout(this.#grace);
    this.#timeout = this.#grace = undefined;
  }
}

/**
 * An attempt change as {@link Attempt.tell} reports it: made by a constructor, not a literal (which
 * V8 pretenured: see src/allocation.ts). It waits in the router until the turn's drain. Only the
 * fields it has are set.
 */
const Told = plainConstructor(function (this: AttemptChange, attemptId: string, change: AttemptChange['change'], from: AttemptBucket | undefined, status: AttemptExit | undefined) {
  this.attemptId = attemptId;
  this.change = change;
  if (from !== undefined) this.from = from;
  if (status !== undefined) this.status = status;
});
