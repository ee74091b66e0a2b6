/**
 * The attempts a cluster node holds, host side, and the host of its agent pool: what the threads
 * report becomes an attempt's end, queued for the turn's settle batch.
 *
 * An attempt is held from its claim until its settle is over (committed, or found stale). Its
 * phase moves as the dispatcher's do (src/tasks/attempt.ts): dispatched (handed to its thread,
 * which queues it until one of its slots is free: the node claims ahead of free slots, see
 * start-ahead.ts), executing (its thread runs it), ended (its end is decided and waits for its
 * settle). The claim budget counts the attempts not yet ended, as the LMDB runtime releases a slot
 * at the settle decision: an ended attempt's slot goes to the next claim while its settle is in
 * flight. Its lease is renewed while it waits on its thread or on its settle, and while it runs
 * and its thread is heard from: any report proves the thread alive, and threads heartbeat every
 * running attempt about three times per lease. Only a running attempt can be stuck: one not heard
 * from for a whole lease is presumed so and stopped, as the LMDB runtime stops it. One still
 * queued on its thread is not: it waits for a slot the thread's running attempts hold.
 */
import type { AbortReason, AgentCall, CallAnswer } from '../../actors/wire.js';
import type { RegisteredAgent } from '../agents/registry.js';
import type { Clock } from '../clock.js';
import type { Logger } from '../log.js';
import type { AgentPool, PoolHost } from '../pool/pool.js';
import type { ClaimedTask, Lease } from '../store/postgres/queue.js';
import type { AttemptPhase } from '../tasks/attempt.js';
import type { AttemptObserver } from './options.js';
import type { AttemptOutcome } from '../tasks/outcome.js';
import type { StartAhead } from '../tasks/start-ahead.js';
import type { Tracing } from '../telemetry/tracing.js';
import { terminateUnstopped, threadLosses } from '../tasks/thread-loss.js';
import { attemptEnd, taskErrorOf } from './attempt-end.js';
import { NodeAttempt } from './node-attempt.js';
import type { LogWriter } from './log-writer.js';
import type { Settler } from './settler.js';

/** How long a thread has to answer the abort of an attempt presumed stuck before it is terminated. */
const STUCK_ANSWER_MS = 250;

/** What the attempts need from their node. */
export interface NodeAttemptsDeps {
  pool: AgentPool;
  settler: Settler;
  logs: LogWriter;
  clock: Clock;
  log: Logger;
  random: () => number;
  leaseMs: number;
  cancelGraceMs: number;
  /** Hears how long attempts execute (it sizes how far ahead of free slots the node claims). */
  ahead: Pick<StartAhead, 'executed'>;
  /** Claim budget came free: an attempt ended, or its settle is over. */
  freed(): void;
  /** Hears each claimed attempt, and each end once settled. */
  observer?: AttemptObserver | undefined;
  /** The runtime's tracing: each attempt is a `troupe.attempt` span, from its claim until its end is decided. */
  tracing?: Tracing | undefined;
  /** Serves agent calls (node-inputs.ts); an attempt's settle waits for what {@link NodeAttemptsDeps.inputs}.ended returns. */
  inputs?: {
    call(attempt: NodeAttempt, call: AgentCall): Promise<CallAnswer>;
    ended(attempt: NodeAttempt): Promise<void> | undefined;
  };
}

/** See the module comment. */
export class NodeAttempts {
  readonly #k: NodeAttemptsDeps;
  readonly #live = new Map<string, NodeAttempt>();
  /** Held attempts not yet ended. */
  #running = 0;
  /** Held attempts whose agents wait on the host (an input). */
  #parked = 0;
  /** Waiters for the next attempt to end or to be settled. */
  readonly #waiters = new Set<() => void>();

  constructor(deps: NodeAttemptsDeps) {
    this.#k = deps;
  }

  /** Attempts held: claimed, and not yet settled. */
  get held(): number {
    return this.#live.size;
  }

  /** Held attempts whose agents wait on the host for an input: they hold no slot. */
  get parked(): number {
    return this.#parked;
  }

  /**
   * Takes claimed tasks: each goes to the pool, or, when `run` is false (the node is closing or
   * lost), ends at once as interrupted: it never ran, and its budget is not spent.
   */
  accept(claimed: readonly ClaimedTask[], agents: ReadonlyMap<string, RegisteredAgent>, run: boolean): void {
    const now = this.#k.clock.now();
    for (const task of claimed) {
      this.#k.observer?.started(task.queuedMs);
      const attempt = new NodeAttempt(task, agents.get(task.agent)!, now);
      // A child of the trace context its submit stored, as on LMDB (a root when it has none).
      if (this.#k.tracing?.active()) attempt.trace = this.#k.tracing.startAttempt(task, task);
      this.#live.set(attempt.attemptId, attempt);
      this.#running++;
      if (run) this.#k.pool.send(attempt.request());
      else {
        attempt.stop = { reason: 'shutdown', detail: 'claimed as the node stopped' };
        this.#finish(attempt, { kind: 'abandoned' });
      }
    }
  }

  /** What the threads report (this is the pool's host). */
  readonly host: PoolHost = {
    began: (attemptId, token) => {
      const attempt = this.#current(attemptId, token);
      if (attempt?.phase !== 'dispatched') return;
      attempt.phase = 'executing';
      attempt.heardAt = this.#k.clock.now();
      attempt.beganAt = performance.now();
      const { timeoutMs } = attempt;
      if (timeoutMs > 0 && !attempt.stop) attempt.timer = this.#k.clock.setTimeout(() => this.stop(attempt, 'timeout', `attempt exceeded timeoutMs ${timeoutMs}`, this.#k.cancelGraceMs), timeoutMs);
    },
    ended: (attemptId, token, result, ran) => {
      const attempt = this.#current(attemptId, token);
      if (!attempt) return this.#stale(attemptId, 'result');
      if (attempt.phase === 'executing') this.#k.ahead.executed(performance.now() - attempt.beganAt);
      // It ran and ended within one turn of its thread (its BEGIN was left out): next to no time.
      else if (ran) this.#k.ahead.executed(0);
      // Aborted while still queued on its thread: it never ran.
      this.#finish(attempt, attempt.phase === 'dispatched' && !ran ? { kind: 'abandoned' } : { kind: 'result', wire: result });
    },
    log: (attemptId, token, lines) => {
      const attempt = this.#heard(attemptId, token, 'log');
      if (attempt) attempt.lines = this.#k.logs.add(attempt.claimed, attempt.lines, lines);
    },
    progress: (attemptId, token, value, message, at) => {
      const attempt = this.#heard(attemptId, token, 'progress');
      if (attempt) this.#k.logs.progress(attempt.claimed, value, message, at);
    },
    heartbeat: (attemptId, token) => void this.#heard(attemptId, token, undefined),
    stray: (attemptId, message) => this.#k.log.warn({ attemptId: attemptId || undefined }, message),
    exiting: (attemptId, token, code) => {
      const attempt = this.#current(attemptId, token);
      if (attempt) attempt.endedThread = code;
    },
    // Inputs, spawns and joins (node-inputs.ts, which hands spawns and joins to node-joins.ts); every node has them, unit tests may leave them out.
    call: async (attemptId, token, call) => {
      const attempt = this.#current(attemptId, token);
      if (!attempt) return { ok: false, error: { code: 'FENCED', message: 'this attempt is no longer current' } };
      if (this.#k.inputs) return this.#k.inputs.call(attempt, call);
      return { ok: false, error: { code: 'ILLEGAL_STATE', message: `ctx ${call.method} is not available on a cluster node yet (issue #15)` } };
    },
    threadExit: (attemptIds, reason) => {
      const lost = attemptIds.map((id) => this.#live.get(id)).filter((a): a is NodeAttempt => a !== undefined && a.phase !== 'ended');
      // As in the LMDB runtime: one not begun, or a bystander of an agent that ended the thread, is interrupted; the rest crashed.
      for (const [attempt, outcome] of threadLosses(lost, reason)) this.#finish(attempt, outcome);
    },
  };

  /**
   * Asks an attempt to stop through its thread (ctx.signal aborts). With `graceMs`, its thread is
   * terminated if it has not ended by then (0: at once, for a thread presumed stuck); without, the
   * caller decides (shutdown).
   */
  stop(attempt: NodeAttempt, reason: AbortReason, detail: string, graceMs?: number): void {
    if (attempt.stop || attempt.phase === 'ended') return;
    attempt.stop = { reason, detail };
    this.#clearTimer(attempt);
    const answerWithinMs = graceMs === 0 ? STUCK_ANSWER_MS : Math.max(50, this.#k.cancelGraceMs);
    attempt.abortAnswer = this.#k.pool.abort(attempt.attemptId, attempt.token, reason, answerWithinMs);
    if (graceMs === undefined) return;
    if (graceMs === 0) void this.#forceStop(attempt);
    else attempt.timer = this.#k.clock.setTimeout(() => void this.#forceStop(attempt), graceMs);
  }

  /** Stops every attempt not yet ended (`phase`: only those in it). */
  stopAll(reason: AbortReason, detail: string, graceMs?: number, phase?: AttemptPhase): void {
    for (const attempt of [...this.#live.values()]) if (phase === undefined || attempt.phase === phase) this.stop(attempt, reason, detail, graceMs);
  }

  /** Ends every attempt not yet ended without waiting for its thread any more (its stop decides how: interrupted for a shutdown). */
  abandonAll(): void {
    for (const attempt of [...this.#live.values()]) this.#finish(attempt, { kind: 'abandoned' });
  }

  /** How many attempts have not ended: queued on their threads or running (the ended ones may still wait for their settle). */
  get running(): number {
    return this.#running;
  }

  /** Resolves once no attempt is held. */
  async idle(): Promise<void> {
    while (this.#live.size > 0) await this.#change();
  }

  /** Resolves once no attempt runs (their settles may still be in flight). */
  async ended(): Promise<void> {
    while (this.running > 0) await this.#change();
  }

  /**
   * The leases to renew now: attempts waiting on their thread or on their settle, and running ones
   * heard from within two thirds of a lease. A running one not heard from for a whole lease is
   * presumed stuck: it is stopped, and its thread terminated.
   */
  due(): Lease[] {
    const now = this.#k.clock.now();
    const { leaseMs } = this.#k;
    const leases: Lease[] = [];
    for (const attempt of this.#live.values()) {
      const silentMs = now - attempt.heardAt;
      if (attempt.phase === 'executing' && silentMs >= leaseMs && !attempt.stop) {
        this.stop(attempt, 'lease_expired', `its thread was not heard from for ${silentMs} ms`, 0);
        continue;
      }
      if (attempt.phase !== 'executing' || silentMs < (leaseMs * 2) / 3) leases.push({ taskId: attempt.claimed.id, token: attempt.token });
    }
    return leases;
  }

  /** Leases the cluster took back (a sweeper ended their attempts): those still running are stopped. */
  lost(leases: readonly Lease[]): void {
    for (const lease of leases) {
      for (const attempt of this.#live.values()) {
        if (attempt.claimed.id !== lease.taskId || attempt.token !== lease.token || attempt.phase === 'ended') continue;
        this.#k.log.warn({ taskId: lease.taskId, attemptId: attempt.attemptId }, 'the cluster took the lease of a running attempt back; stopping it');
        this.stop(attempt, 'lease_expired', 'the cluster took its lease back', this.#k.cancelGraceMs);
      }
    }
  }

  /**
   * A user cancelled the task of `lease` (its NOTIFY or a lease renewal said so): its attempt, if
   * this node still runs it, is stopped and ends `cancelled`. Returns whether it was.
   */
  cancel(lease: Lease, reason: string): boolean {
    for (const attempt of this.#live.values()) {
      if (attempt.claimed.id !== lease.taskId || attempt.token !== lease.token || attempt.phase === 'ended') continue;
      this.#k.log.info({ taskId: lease.taskId, attemptId: attempt.attemptId }, 'the task was cancelled; stopping its attempt');
      this.stop(attempt, 'cancelled', reason, this.#k.cancelGraceMs);
      return true;
    }
    return false;
  }

  /** The leases of the attempts not yet ended (queued on their threads or running). */
  leases(): Lease[] {
    const leases: Lease[] = [];
    for (const attempt of this.#live.values()) if (attempt.phase !== 'ended') leases.push({ taskId: attempt.claimed.id, token: attempt.token });
    return leases;
  }

  /**
   * rt.kill() stopped the cluster: the attempts of `leases` this node still runs are stopped, as
   * the LMDB runtime's kill stops its own (cooperatively, then by terminating their thread after
   * `cancelGraceMs`), and end interrupted: requeued without spending their budget.
   */
  kill(leases: readonly Lease[], reason: string): void {
    const wanted = new Set(leases.map((lease) => `${lease.taskId}\u0000${lease.token}`));
    for (const attempt of [...this.#live.values()]) {
      if (attempt.phase === 'ended' || !wanted.has(`${attempt.claimed.id}\u0000${attempt.token}`)) continue;
      this.stop(attempt, 'killed', reason, this.#k.cancelGraceMs);
    }
  }

  /** The attempt's agent waits on the host: it holds no slot of the claim budget meanwhile (as on LMDB). */
  park(attempt: NodeAttempt): void {
    if (attempt.parked || attempt.phase === 'ended') return;
    attempt.parked = true;
    this.#running--;
    this.#parked++;
    this.#k.freed();
  }

  /** It runs again (it may briefly exceed the slots, as its thread does). */
  unpark(attempt: NodeAttempt): void {
    if (!attempt.parked) return;
    attempt.parked = false;
    this.#running++;
    this.#parked--;
  }

  /** The lease of this task's attempt that has not ended, if this node holds one. */
  leaseOf(taskId: string): Lease | undefined {
    for (const attempt of this.#live.values()) if (attempt.claimed.id === taskId && attempt.phase !== 'ended') return { taskId, token: attempt.token };
    return undefined;
  }

  /** The held attempt with this id and token that has not ended. */
  #current(attemptId: string, token: number): NodeAttempt | undefined {
    const attempt = this.#live.get(attemptId);
    return attempt !== undefined && attempt.token === token && attempt.phase !== 'ended' ? attempt : undefined;
  }

  /** The running attempt a report (`kind`, or a heartbeat when undefined) comes from, now heard from. */
  #heard(attemptId: string, token: number, kind: string | undefined): NodeAttempt | undefined {
    const attempt = this.#current(attemptId, token);
    if (attempt?.phase !== 'executing') {
      if (kind !== undefined) this.#stale(attemptId, kind);
      return undefined;
    }
    attempt.heardAt = this.#k.clock.now();
    return attempt;
  }

  #stale(attemptId: string, kind: string): void {
    this.#k.log.warn({ attemptId, kind }, 'stale report from an attempt this node no longer runs');
  }

  async #forceStop(attempt: NodeAttempt): Promise<void> {
    if (await terminateUnstopped(attempt, this.#k.pool, this.#k.log)) this.#finish(attempt, { kind: 'abandoned' });
  }

  /** Decides the attempt's end and queues its settle; its slot's claim budget comes free now, its row once the settle is over. */
  #finish(attempt: NodeAttempt, outcome: AttemptOutcome): void {
    if (attempt.phase === 'ended') return;
    attempt.phase = 'ended';
    if (attempt.parked) {
      attempt.parked = false;
      this.#parked--;
    } else this.#running--;
    this.#clearTimer(attempt);
    const end = attemptEnd(attempt.claimed, attempt.retry, outcome, attempt.stop, this.#k.random);
    // Ended with the exit and the error the task gets, as the LMDB runtime ends it at its settle decision.
    attempt.trace?.end(end.exit, taskErrorOf(attempt.claimed, end));
    const attemptMs = this.#k.clock.now() - attempt.claimedAt;
    if (attempt.claimed.backoff) end.backoff = { agent: attempt.claimed.agent, ms: attemptMs };
    const inputs = this.#k.inputs?.ended(attempt);
    const settle = () => {
      // An attempt that asked for input: inputs delivered to it beyond what it took are given back.
      if (attempt.handed !== undefined) end.handed = attempt.handed;
      this.#k.settler.add(end, (settled) => {
        // Only an end that settled its task counts: a stale one was ended by a sweeper, not by this node.
        if ('state' in settled) this.#k.observer?.ended(end.exit, attemptMs);
        this.#live.delete(attempt.attemptId);
        this.#k.freed();
        this.#changed();
      });
    };
    // Its lines and progress are stored before its end is: a reader who sees the task settled sees them all.
    const written = this.#k.logs.written(attempt.attemptId);
    if (written || inputs) void Promise.all([written, inputs]).then(settle);
    else settle();
    this.#k.freed();
    this.#changed();
  }

  #change(): Promise<void> {
    return new Promise((resolve) => this.#waiters.add(resolve));
  }

  #changed(): void {
    for (const resolve of this.#waiters) resolve();
    this.#waiters.clear();
  }

  #clearTimer(attempt: NodeAttempt): void {
    if (attempt.timer !== undefined) this.#k.clock.clearTimeout(attempt.timer);
    attempt.timer = undefined;
  }
}
