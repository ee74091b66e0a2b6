/**
 * Subtasks on a cluster node, host side: an agent's `ctx.spawn` and `ctx.join` (its thread's
 * `spawn` and `join` calls) on the cluster's task tree (src/store/postgres/children.ts), the LMDB
 * runtime's semantics (src/tasks/interact.ts) across nodes.
 *
 * A spawn is a submit of the spec, checked as `submit` checks it on this runtime, with the
 * parent's id and an idempotency key scoped as LMDB scopes it: `spawn:<parent>:<key>` (the spec's
 * key, or the call's order within the attempt when it has none, scoped to the attempt then).
 *
 * A join parks once its task is durably `waiting`: its attempt gives its slot back, and the call
 * is answered when the joined tasks have all settled, whichever node settles them: each settle of
 * a child NOTIFYs its parent's id, and this node then reads (and changes, fenced by the token)
 * the parent's row. The NOTIFY only wakes: every third of a lease the node also looks at its
 * parked joins, and resumes the cluster's detached joins (waiting with no attempt, their node
 * gone) whose children are done, so a missed NOTIFY costs at most that long.
 */
import type pg from 'pg';
import type { AgentCall, CallAnswer } from '../../actors/wire.js';
import type { RegisteredAgent } from '../agents/registry.js';
import type { TaskSpec } from '../api/tasks.js';
import type { Clock } from '../clock.js';
import { isTroupeError, TroupeError } from '../errors.js';
import { createIdGenerator } from '../ids.js';
import type { Logger } from '../log.js';
import { parkForJoin, readyJoins, resumeDetachedJoins, resumeJoin, spawnChild } from '../store/postgres/children.js';
import { callFailure, endParked, InFlight, leaseOf, startLook, type Look } from './attempt-calls.js';
import { Every } from './every.js';
import type { NodeAttempt } from './node-attempt.js';
import { newTaskOf } from './task-view.js';
import { submitTraced } from './submit-spans.js';
import type { Tracing } from '../telemetry/tracing.js';

/** What the joins need from their node. */
export interface NodeJoinsDeps {
  pool: pg.Pool;
  log: Logger;
  clock: Clock;
  /** How often the NOTIFY's backstop looks (a third of the lease). */
  everyMs: number;
  /** The agents this node runs: a spawn's agent must be one, as `submit` requires on this runtime. */
  agent(name: string): RegisteredAgent | undefined;
  /** The runtime's tracing: a spawn is a `troupe.submit` span, as a submit is. */
  tracing: Tracing | undefined;
  /** The attempt waits on the host: its slot's claim budget comes free. */
  park(attempt: NodeAttempt): void;
  /** It runs again. */
  unpark(attempt: NodeAttempt): void;
  /** The cluster's queued tasks past which a spawn is refused (AT_CAPACITY); undefined: no limit. */
  maxQueued: number | undefined;
  /** A spawn was refused with AT_CAPACITY (the runtime's metrics count it). */
  refused(): void;
}

/** An agent's join call, parked until the tasks it joined have settled. */
interface ParkedJoin extends Look {
  attempt: NodeAttempt;
  /** The park's statement: settled once the task is durably waiting (or the call was answered). */
  ready: Promise<void>;
  answer(answer: CallAnswer): void;
}

/** See the module comment. */
export class NodeJoins {
  readonly #k: NodeJoinsDeps;
  readonly #nextId: () => string;
  /** By task id. */
  readonly #parked = new Map<string, ParkedJoin>();
  /** Each attempt's statements in flight: its settle waits for them. */
  readonly #inFlight = new InFlight();
  readonly #poll: Every;

  constructor(deps: NodeJoinsDeps) {
    this.#k = deps;
    this.#nextId = createIdGenerator(() => Date.now());
    this.#poll = new Every(deps.clock, deps.everyMs, () => this.#backstop());
  }

  start(): void {
    this.#poll.start(false);
  }

  stop(): Promise<void> {
    return this.#poll.stop();
  }

  /** A spawn or join of a live attempt that is not stopping (node-inputs.ts checked both). */
  call(attempt: NodeAttempt, call: AgentCall): Promise<CallAnswer> {
    if (call.method === 'spawn') return this.#spawn(attempt, call.spec, call.key);
    if (call.method === 'join') return this.#join(attempt, call.ids);
    return Promise.resolve(callFailure(new TroupeError('INVALID_INPUT', `unknown agent call ${(call as { method: string }).method}`)));
  }

  /** A child of `parentId` settled (its NOTIFY): the parent's join, parked here or detached, may be ready. */
  settled(parentId: string): void {
    const parked = this.#parked.get(parentId);
    if (parked) return this.#check(parked);
    // Most parents run elsewhere or wait on nothing: one statement by id, changing nothing then.
    resumeDetachedJoins(this.#k.pool, [parentId]).catch((error: unknown) => this.#k.log.warn({ err: error, taskId: parentId }, 'resuming a detached join failed; the next poll tries again'));
  }

  /** The attempt ended: its parked join, if any, is answered ATTEMPT_ENDED. Resolves once its statements in flight are over. */
  ended(attempt: NodeAttempt): Promise<void> | undefined {
    endParked(this.#parked, attempt);
    return this.#inFlight.of(attempt);
  }

  async #spawn(attempt: NodeAttempt, spec: Record<string, unknown>, key: string): Promise<CallAnswer> {
    try {
      if (typeof spec !== 'object' || spec === null || Array.isArray(spec)) throw new TroupeError('INVALID_INPUT', 'spawn expects a task spec object');
      if ('parentId' in spec) throw new TroupeError('INVALID_INPUT', 'spawn: parentId is set for you');
      const taskId = attempt.claimed.id;
      const idempotencyKey = key.startsWith('#') ? `spawn:${attempt.attemptId}:${key}` : `spawn:${taskId}:${key}`;
      const child = newTaskOf({ ...(spec as unknown as TaskSpec), idempotencyKey }, (name) => this.#k.agent(name), 'spawn', this.#k.clock.now(), this.#nextId());
      // The child's submit span nests under this attempt's span (submit-spans.ts).
      const op = submitTraced(this.#k.tracing, [child], ([row]) => spawnChild(this.#k.pool, leaseOf(attempt), row!, this.#k.maxQueued).then((stored) => [stored]), attempt.trace);
      this.#inFlight.track(attempt, op);
      return { ok: true, value: (await op)[0] };
    } catch (error) {
      if (isTroupeError(error, 'AT_CAPACITY')) this.#k.refused();
      return callFailure(error);
    }
  }

  #join(attempt: NodeAttempt, ids: unknown): Promise<CallAnswer> {
    if (!Array.isArray(ids) || ids.some((id) => typeof id !== 'string' || id.length === 0)) return Promise.resolve(callFailure(new TroupeError('INVALID_INPUT', 'join expects an array of task ids')));
    const taskId = attempt.claimed.id;
    if (this.#parked.has(taskId)) return Promise.resolve(callFailure(new TroupeError('ILLEGAL_TRANSITION', 'the agent is already waiting')));
    return new Promise<CallAnswer>((answer) => {
      // Parked before the statement runs: a child's NOTIFY may come before its answer does.
      let resolveReady!: () => void;
      const parked: ParkedJoin = { attempt, ready: new Promise((resolve) => (resolveReady = resolve)), looking: false, again: false, answer };
      this.#parked.set(taskId, parked);
      const unpark = () => {
        if (this.#parked.get(taskId) === parked) this.#parked.delete(taskId);
      };
      const op = parkForJoin(this.#k.pool, leaseOf(attempt), attempt.attemptId, ids as string[]).then(
        (result) => {
          if (result.kind === 'stale') {
            unpark();
            return answer({ ok: false, error: { code: 'FENCED', message: 'this attempt is no longer current' } });
          }
          if (result.kind === 'ready') {
            unpark();
            return answer({ ok: true, value: result.outcomes });
          }
          // Its end goes through the statement that takes a waiting task (input-ends.ts).
          attempt.handed ??= result.before;
          if (this.#parked.get(taskId) === parked) this.#k.park(attempt);
        },
        (error: unknown) => {
          unpark();
          answer(callFailure(error));
        },
      );
      // A child that settles from now on NOTIFYs after its commit, and finds this call parked: its
      // look waits for the park; one that settled before the park's read is seen by it.
      this.#inFlight.track(attempt, op.finally(resolveReady));
    });
  }

  /** Resumes a parked join whose tasks have all settled, and answers it (one look at a time; asks meanwhile look again after). */
  #check(parked: ParkedJoin): void {
    if (!startLook(parked)) return;
    const { attempt } = parked;
    const taskId = attempt.claimed.id;
    const op = parked.ready
      // A stopping attempt is not resumed: its end settles the task.
      .then(() => (this.#parked.get(taskId) === parked && !attempt.stop && attempt.phase !== 'ended' ? resumeJoin(this.#k.pool, leaseOf(attempt)) : undefined))
      .then(
        (result) => {
          parked.looking = false;
          if (this.#parked.get(taskId) !== parked || result === undefined) return;
          if (result.kind === 'waiting') {
            if (parked.again) this.#check(parked);
            return;
          }
          this.#parked.delete(taskId);
          this.#k.unpark(attempt);
          if (result.kind === 'stale') parked.answer({ ok: false, error: { code: 'FENCED', message: 'this attempt is no longer current' } });
          else parked.answer({ ok: true, value: result.outcomes });
        },
        (error: unknown) => {
          parked.looking = false;
          this.#k.log.warn({ err: error, taskId }, 'resuming a join failed; the next poll tries again');
        },
      );
    this.#inFlight.track(attempt, op);
  }

  /** The NOTIFY's backstop: parked joins that are ready, and detached joins of the cluster whose children are done. */
  async #backstop(): Promise<void> {
    try {
      if (this.#parked.size > 0) {
        for (const id of await readyJoins(this.#k.pool, [...this.#parked.keys()])) {
          const parked = this.#parked.get(id);
          if (parked) this.#check(parked);
        }
      }
      await resumeDetachedJoins(this.#k.pool);
    } catch (error) {
      this.#k.log.warn({ err: error }, 'looking at joins failed; the next poll tries again');
    }
  }
}
