/**
 * The attempt lifecycle: governor pick → durable start → its thread → outcome → durable settle.
 *
 * An attempt is recorded (the task's start, `task.started`) and flushed before the agent runs, so
 * a crash can never hide an attempt the agent made. To keep slots busy while that commit is in
 * flight, attempts are started ahead of free slots (start-ahead.ts); once durable, each goes to its
 * thread at once, which queues it until one of its slots is free.
 */
import type { AbortReason } from '../../actors/wire.js';
import type { EffectExecutor } from '../pipeline/executor.js';
import type { PoolHost } from '../pool/pool.js';
import type { GovernorEntry } from '../governor/governor.js';
import type { TaskRecord } from '../store/records.js';
import { makePrivateDir } from '../store/private-files.js';
import { Attempt } from './attempt.js';
import { StartAhead } from './start-ahead.js';
import type { EngineParts } from './parts.js';
import type { AttemptOutcome } from './outcome.js';
import { terminateUnstopped, threadLosses } from './thread-loss.js';
import { decideStart } from '../steps/start.js';
import type { Effect } from '../steps/types.js';
import { recordStale, writeLogLines, writeProgress, writeSettlement } from './attempt-writes.js';
import { ChurnMap } from '../collections.js';
import { within } from '../within.js';

/** What the dispatcher uses: the slice of the engine's shared parts it reads. */
export const DISPATCHER_PARTS = ['agents', 'clock', 'flow', 'governor', 'log', 'logs', 'notifier', 'options', 'pipeline', 'pool', 'router', 'store', 'table', 'tracing'] as const;
export type DispatcherDeps = Pick<EngineParts, (typeof DISPATCHER_PARTS)[number]>;

/** How long a thread has to answer an abort after its attempt's lease expired before it counts as stuck. */
const LEASE_ANSWER_MS = 250;

/** An attempt in flight, host side (see attempt.ts). */
export type LiveAttempt = Attempt;

/** See the module comment. */
export class Dispatcher {
  readonly #k: DispatcherDeps;
  readonly #live = new ChurnMap<string, LiveAttempt>();
  /** Attempts handed to a thread that has not started them yet. */
  #dispatched = 0;
  readonly #slots: number;
  #executing = 0;
  /** Attempts parked on the host (waiting for an input or a join): they hold no slot. */
  #parked = 0;
  readonly #ahead: StartAhead;
  #accepting = true;
  #pumpQueued = false;
  readonly #idle = new Set<() => void>();
  /** Runs its effects (starts, start failures, stops) and fills free slots whenever there may be work. */
  constructor(deps: DispatcherDeps, executor: Pick<EffectExecutor, 'handle'>) {
    this.#k = deps;
    this.#slots = deps.options.threads * deps.options.slotsPerThread;
    this.#ahead = new StartAhead(this.#slots, deps.options.prefetch);
    executor.handle({
      dispatch: (attemptId) => this.started(attemptId),
      startFailed: (attemptId, error) => this.startFailed(attemptId, error),
      stop: (attemptId, reason, detail) => this.stopById(attemptId, reason, detail),
    });
    deps.notifier.onWork(() => this.pump());
  }

  /** Attempts by phase. */
  get counts(): { starting: number; ready: number; executing: number } {
    return { starting: this.#live.size - this.#dispatched - this.#executing - this.#parked, ready: this.#dispatched, executing: this.#executing };
  }

  /** The current start-ahead window and the moving averages (ms) that size it. */
  get prefetch(): { window: number; startMs: number; execMs: number } {
    return { window: this.#ahead.window, ...this.#ahead.averages };
  }

  /** The live attempt of a task, if it has one. */
  attemptOf(task: TaskRecord): LiveAttempt | undefined {
    return this.#live.get(`${task.id}:${task.runs}:${task.attemptSeq}`);
  }

  /** Fills free slots soon (coalesced into one pass per microtask). */
  pump(): void {
    if (this.#pumpQueued || !this.#accepting) return;
    this.#pumpQueued = true;
    queueMicrotask(() => {
      this.#pumpQueued = false;
      this.#fill();
    });
  }

  #fill(): void {
    const { governor } = this.#k;
    // Attempts beyond the slots start ahead: their start commits while the slots are busy, and
    // their threads queue them, so a freed slot takes the next at once.
    const ahead = this.#ahead.window;
    while (this.#accepting) {
      if (this.#live.size - this.#parked >= this.#slots + ahead) break;
      const entry = governor.tryReserve();
      if (!entry) break;
      this.#begin(entry);
    }
  }

  #begin(entry: GovernorEntry): void {
    const { table, agents, clock, store, pipeline, governor, options } = this.#k;
    const task = table.get(entry.taskId);
    const agent = task && agents.get(task.agent);
    if (!task || !agent || task.state !== 'queued') {
      governor.release(entry);
      return;
    }
    const now = clock.now();
    const flowState = this.#k.flow.started(task.agent, now);
    const result = pipeline.decide(decideStart, { task, runtimeId: store.runtimeId, leaseMs: options.leaseMs }, flowState === undefined ? {} : { flow: flowState }, now);
    const record = (result.effects[0] as Extract<Effect, { kind: 'dispatch' }>).attempt;
    const attempt = new Attempt(record, entry, task, this.#k.log);
    if (this.#k.tracing?.active()) attempt.trace = this.#k.tracing.startAttempt(task, record);
    this.#live.set(attempt.attemptId, attempt);
    attempt.tell(this.#k.router, 'pending', now);
    pipeline.apply(result);
  }

  /** An attempt's start is durable (the dispatch effect): hand it to its thread. */
  started(attemptId: string): void {
    const attempt = this.#live.get(attemptId);
    if (!attempt || attempt.phase !== 'starting') return;
    const t = performance.now();
    this.#ahead.started(t - attempt.mark);
    attempt.mark = t;
    if (attempt.stop || !this.#accepting) {
      attempt.stop ??= { reason: 'shutdown' };
      this.#settle(attempt, { kind: 'abandoned' });
      return;
    }
    const { table, agents, pool } = this.#k;
    const task = table.get(attempt.taskId)!;
    const agent = agents.get(task.agent)!;
    attempt.phase = 'dispatched';
    this.#dispatched++;
    // The reservation now holds a durable start: in use until the attempt ends (or parks).
    this.#k.governor.markUsed(attempt.entry);
    if (task.workspaceKeep !== undefined && task.workspace !== undefined) {
      try {
        makePrivateDir(task.workspace);
      } catch (error) {
        this.#settle(attempt, { kind: 'crash', code: 'WORKSPACE_FAILED', message: `cannot create workspace ${task.workspace}: ${(error as Error).message}` });
        return;
      }
    }
    pool.send(attempt.request(task, agent));
  }

  /** An attempt's start did not commit: it never ran. */
  startFailed(attemptId: string, error: unknown): void {
    const attempt = this.#live.get(attemptId);
    if (!attempt || attempt.phase !== 'starting') return;
    if (error !== this.#k.store.failure) this.#k.log.error({ err: error, attemptId }, 'recording an attempt start failed');
    this.#settle(attempt, { kind: 'crash', code: 'STORE_FAILED', message: (error as Error).message });
  }

  /** Its thread took the attempt from its queue: it runs now, and its lease and timeout start. */
  #began(attempt: LiveAttempt, at: number): void {
    const { table, clock } = this.#k;
    const task = table.get(attempt.taskId)!;
    attempt.phase = 'executing';
    attempt.mark = performance.now();
    attempt.renewLease(clock.now(), this.#k.options.leaseMs);
    this.#dispatched--;
    this.#executing++;
    this.#k.notifier.busy();
    attempt.tell(this.#k.router, 'running', at);
    attempt.armTimeout(clock, task.timeoutMs, () => this.stop(attempt, 'timeout', `attempt exceeded timeoutMs ${task.timeoutMs}`));
  }

  /**
   * What the threads report (the dispatcher is the pool's host). Only the live attempt holding the
   * current token may write: anything else comes from a fenced (zombie) attempt and is recorded as
   * `task.stale_result` without touching the task.
   */
  readonly host: Omit<PoolHost, 'call'> = {
    began: (attemptId, token, at) => {
      const attempt = this.#current(attemptId, token);
      if (attempt?.phase === 'dispatched') this.#began(attempt, at);
    },
    ended: (attemptId, token, result, ran) => {
      const attempt = this.#current(attemptId, token);
      if (!attempt || attempt.phase === 'starting' || attempt.phase === 'ended') return this.#stale(attemptId, 'result');
      // Ended in the turn it began (its end says both), or aborted while queued on its thread.
      if (attempt.phase === 'dispatched' && !ran) return this.#settle(attempt, { kind: 'abandoned' });
      this.#settle(attempt, { kind: 'result', wire: result });
    },
    log: (attemptId, token, lines) => {
      const attempt = this.#runningAttempt(attemptId, token, 'log');
      if (attempt) attempt.lines = writeLogLines(this.#k, this.#k.table.get(attempt.taskId)!, attempt, lines, attempt.lines);
    },
    progress: (attemptId, token, value, message, at) => {
      const attempt = this.#runningAttempt(attemptId, token, 'progress');
      if (attempt) writeProgress(this.#k, this.#k.table.get(attempt.taskId)!, attemptId, value, message, at);
    },
    heartbeat: (attemptId, token) => {
      this.#runningAttempt(attemptId, token, undefined);
    },
    stray: (attemptId, message) => {
      this.#k.log.warn({ attemptId: attemptId || undefined }, message);
    },
    exiting: (attemptId, token, code) => {
      const attempt = this.#current(attemptId, token);
      if (attempt) attempt.endedThread = code;
    },
    threadExit: (attemptIds, reason) => {
      const lost = attemptIds.map((id) => this.#live.get(id)).filter((attempt) => attempt !== undefined);
      for (const [attempt, outcome] of threadLosses(lost, reason)) this.#settle(attempt, outcome);
    },
  };

  /**
   * The attempt an agent call comes from, if it runs and is current (its lease renewed); else the
   * call is stale and recorded so.
   */
  caller(attemptId: string, token: number): LiveAttempt | undefined {
    return this.#runningAttempt(attemptId, token, 'call');
  }

  /** The live attempt with this id and token, if it is current. */
  #current(attemptId: string, token: number): LiveAttempt | undefined {
    const attempt = this.#live.get(attemptId);
    return attempt !== undefined && attempt.token === token ? attempt : undefined;
  }

  /**
   * The attempt a report (`kind`, or a heartbeat when undefined) comes from, if it runs and is
   * current; its lease is renewed, since any traffic proves its thread is alive. Else the report
   * is stale.
   */
  #runningAttempt(attemptId: string, token: number, kind: 'log' | 'progress' | 'call' | undefined): LiveAttempt | undefined {
    const attempt = this.#current(attemptId, token);
    if (attempt?.phase !== 'executing') {
      if (kind !== undefined) this.#stale(attemptId, kind);
      return undefined;
    }
    attempt.renewLease(this.#k.clock.now(), this.#k.options.leaseMs);
    return attempt;
  }

  #stale(attemptId: string, kind: string): void {
    this.#k.log.warn({ attemptId, kind }, 'stale report from a fenced attempt');
    recordStale(this.#k, attemptId.slice(0, attemptId.indexOf(':')), attemptId, kind);
  }

  /** Executing attempts whose lease has run out (the supervisor ends them). */
  *expiredLeases(now: number): Generator<LiveAttempt> {
    for (const attempt of this.#live.values()) {
      if (attempt.phase === 'executing' && !attempt.stop && attempt.leaseExpiresAt < now) yield attempt;
    }
  }

  /** Whether any attempt is executing (the supervisor only sweeps then). */
  get busy(): boolean {
    return this.#executing > 0 || this.#parked > 0;
  }

  /** Asks the live attempt with this id to stop (the stop effect of a cancel). */
  stopById(attemptId: string, reason: AbortReason, detail?: string): void {
    const attempt = this.#live.get(attemptId);
    if (attempt) this.stop(attempt, reason, detail);
  }

  /**
   * Asks an attempt to stop. Cancellation is cooperative (`ctx.signal` aborts through the thread's
   * channel); if the attempt has not ended after `cancelGraceMs`, its thread is terminated.
   */
  stop(attempt: LiveAttempt, reason: AbortReason, detail?: string): void {
    if (attempt.phase === 'ended') return;
    if (attempt.stop) {
      // Already stopping (a timeout, lease, kill, shutdown): a cancel still ends the task, so the
      // attempt's end settles it as cancelled; the stop under way carries on.
      if (reason === 'cancelled' && attempt.stop.reason !== 'cancelled') attempt.stop = detail === undefined ? { reason } : { reason, detail };
      return;
    }
    attempt.stop = detail === undefined ? { reason } : { reason, detail };
    // starting: `started` settles it once the start is durable. dispatched: its thread ends it
    // at once from its queue (the abort below); executing: the agent is asked to stop.
    if (attempt.phase !== 'executing' && attempt.phase !== 'dispatched') return;
    const { router, pool, clock, options } = this.#k;
    attempt.tell(router, 'stopping', clock.now());
    const answerWithinMs = reason === 'lease_expired' ? LEASE_ANSWER_MS : Math.max(50, options.cancelGraceMs);
    attempt.abortAnswer = pool.abort(attempt.attemptId, attempt.token, reason, answerWithinMs);
    if (reason === 'shutdown') return;
    // An expired lease gets no grace: its thread is presumed stuck, so reclaim the slot now.
    if (reason === 'lease_expired') void this.#forceStop(attempt);
    else attempt.armGrace(clock, options.cancelGraceMs, () => void this.#forceStop(attempt));
  }

  async #forceStop(attempt: LiveAttempt): Promise<void> {
    // (The pool has headroom for parked attempts: see terminateUnstopped on why the slot waits.)
    if (await terminateUnstopped(attempt, this.#k.pool, this.#k.log)) this.#settle(attempt, { kind: 'abandoned' });
  }

  #settle(attempt: LiveAttempt, outcome: AttemptOutcome): void {
    if (attempt.phase === 'ended') return;
    const { table, governor, clock } = this.#k;
    attempt.clearTimers(clock);
    if (attempt.parked) {
      attempt.parked = false;
      this.#parked--;
    } else if (attempt.phase === 'dispatched') {
      this.#dispatched--;
      // It ran and ended within one turn of its thread (its BEGIN was left out): next to no time.
      if (outcome.kind === 'result') this.#ahead.executed(0);
    } else if (attempt.phase === 'executing') {
      this.#executing--;
      this.#ahead.executed(performance.now() - attempt.mark);
      if (this.#executing === 0) this.#k.notifier.busy();
    }
    attempt.phase = 'ended';
    this.#live.delete(attempt.attemptId);
    this.#k.notifier.attemptEnded(attempt.taskId, attempt.attemptId);
    governor.release(attempt.entry);
    const task = table.get(attempt.taskId);
    if (!task || task.token !== attempt.token) {
      attempt.tell(this.#k.router, 'released', clock.now());
      attempt.trace?.end('stale');
      recordStale(this.#k, attempt.taskId, attempt.attemptId, 'result');
    } else writeSettlement(this.#k, task, attempt, outcome);
    if (this.#live.size === 0) for (const resolve of this.#idle) resolve();
    this.pump();
  }

  /**
   * An agent waits on the host (input, join): its attempt gives its slot, its governor reservation
   * and its place under its instance's dispatch target back, so waiting parents cannot starve the
   * children they wait for. Its Piscina task stays (the pool has headroom for parked ones).
   */
  park(attempt: LiveAttempt): void {
    if (attempt.parked || attempt.phase !== 'executing') return;
    attempt.parked = true;
    this.#executing--;
    this.#parked++;
    this.#k.governor.release(attempt.entry);
    attempt.tell(this.#k.router, 'released', this.#k.clock.now());
    this.pump();
  }

  /**
   * A parked attempt runs again. It takes its slot and its reservation back at once, whatever the
   * limits, so slots, agent limits and a dispatch target can be exceeded briefly by resumed
   * attempts; new work waits until they are back under. (Its task is never queued meanwhile: the
   * check only keeps an input's delivery from throwing if it were.)
   */
  unpark(attempt: LiveAttempt): void {
    if (!attempt.parked || attempt.phase !== 'executing') return;
    attempt.parked = false;
    this.#parked--;
    this.#executing++;
    if (!this.#k.governor.has(attempt.taskId)) this.#k.governor.reclaim(attempt.entry);
    attempt.tell(this.#k.router, 'running', this.#k.clock.now());
  }

  /** Stops every live attempt (kill): each is requeued without spending its budget. */
  stopAll(reason: AbortReason, detail?: string): void {
    for (const attempt of [...this.#live.values()]) this.stop(attempt, reason, detail);
  }

  /** Resolves once no attempt is live. */
  idle(): Promise<void> {
    if (this.#live.size === 0) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const done = () => {
        this.#idle.delete(done);
        resolve();
      };
      this.#idle.add(done);
    });
  }

  /** Starts nothing more (the store stopped: see Store.failure); attempts already running carry on. */
  halt(): void {
    this.#accepting = false;
  }

  /**
   * Stops dispatching, lets running attempts finish until `deadline` resolves, then interrupts the
   * rest: they are requeued without counting against their retry budget.
   */
  async drain(deadline: Promise<void>): Promise<void> {
    this.#accepting = false;
    this.#k.governor.freeze();
    // Only running attempts may finish; those queued on their threads, or waiting for input (none comes), end now.
    for (const attempt of [...this.#live.values()]) if (attempt.phase === 'dispatched' || attempt.parked) this.stop(attempt, 'shutdown');
    if (this.#live.size > 0) {
      await Promise.race([deadline, new Promise<void>((resolve) => this.#idle.add(resolve))]);
    }
    for (const attempt of [...this.#live.values()]) this.stop(attempt, 'shutdown');
    // Aborted agents get `cancelGraceMs` (wall time: close must end) to clean up, e.g. the shell
    // agent killing its process group, before their threads are destroyed under them.
    if (this.#live.size > 0 && this.#k.options.cancelGraceMs > 0) {
      await within(this.#k.options.cancelGraceMs, this.idle());
    }
    for (const attempt of [...this.#live.values()]) if (attempt.phase === 'executing' || attempt.phase === 'dispatched') this.#settle(attempt, { kind: 'abandoned' });
    // Attempts still starting settle as interrupted as soon as their start commit lands.
    if (this.#live.size > 0) await new Promise<void>((resolve) => this.#idle.add(resolve));
  }
}
