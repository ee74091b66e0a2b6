/**
 * Inputs on a cluster node, host side: an agent's `ctx.waitForInput` (its thread's `input` and
 * `unwait` calls) served from the cluster's inbox (src/store/postgres/inbox.ts), the LMDB
 * runtime's semantics (src/tasks/interact.ts) across nodes.
 *
 * A call parks once its task is durably `waiting`: its attempt gives its slot back (the thread
 * runs others meanwhile) and the call is answered when an input is delivered to it. Whichever
 * runtime sends the input delivers it in the database (the task runs again) and NOTIFYs the task's
 * id; this node then reads the input and answers its agent. The database holds the truth and the
 * NOTIFY only wakes: the node's lease renewals return each task's delivered count too, so a missed
 * NOTIFY is caught within a renewal. An input delivered to an attempt that is stopping is not
 * handed over; the attempt's end gives it back (its `handed` count), for the next attempt.
 *
 * A call from a stopping attempt gets ABORTED, as on LMDB: no input is spent on it, and no child
 * is spawned that its cancel would miss. Spawn and join go to the node's joins (node-joins.ts).
 */
import type pg from 'pg';
import { INPUT_TIMED_OUT, type AgentCall, type CallAnswer } from '../../actors/wire.js';
import { TroupeError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Lease } from '../store/postgres/checks.js';
import { parkForInput, readDelivered, unwaitInput } from '../store/postgres/inbox.js';
import { callFailure, endParked, InFlight, leaseOf, startLook, type Look } from './attempt-calls.js';
import type { NodeAttempt } from './node-attempt.js';

/** What the inputs need from their node. */
export interface NodeInputsDeps {
  pool: pg.Pool;
  log: Logger;
  /** The attempt waits on the host: its slot's claim budget comes free. */
  park(attempt: NodeAttempt): void;
  /** It runs again. */
  unpark(attempt: NodeAttempt): void;
  /** Serves spawns and joins (node-joins.ts). */
  children: {
    call(attempt: NodeAttempt, call: AgentCall): Promise<CallAnswer>;
    ended(attempt: NodeAttempt): Promise<void> | undefined;
  };
}

/** An agent's input call, parked until an input is delivered to it. */
interface ParkedCall extends Look {
  attempt: NodeAttempt;
  waitId: number;
  /** The park's statement: settled once the task is durably waiting (or the call was answered). */
  ready: Promise<void>;
  answer(answer: CallAnswer): void;
}

/** See the module comment. */
export class NodeInputs {
  readonly #k: NodeInputsDeps;
  /** By task id. */
  readonly #parked = new Map<string, ParkedCall>();
  /** Each attempt's statements in flight: its settle waits for them (its `handed` count is theirs to set). */
  readonly #inFlight = new InFlight();

  constructor(deps: NodeInputsDeps) {
    this.#k = deps;
  }

  /** An agent call of a live attempt (its token checked); resolves with the answer for its thread. */
  call(attempt: NodeAttempt, call: AgentCall): Promise<CallAnswer> {
    if (attempt.stop && call.method !== 'unwait') return Promise.resolve({ ok: false, error: { code: 'ABORTED', message: `the attempt is stopping (${attempt.stop.reason})` } });
    switch (call.method) {
      case 'input':
        return this.#input(attempt, call.waitId, call.prompt);
      case 'unwait':
        return this.#unwait(attempt, call.waitId);
      default:
        return this.#k.children.call(attempt, call);
    }
  }

  /** An input was delivered to `taskId` (its NOTIFY): its parked agent, if on this node, gets it. */
  delivered(taskId: string): void {
    const parked = this.#parked.get(taskId);
    if (parked) this.#fetch(parked);
  }

  /** Renewed leases with their task's delivered count: a parked agent behind on it has an input (the NOTIFY's backstop). */
  renewed(leases: ReadonlyArray<Lease & { delivered: number }>): void {
    for (const { taskId, token, delivered } of leases) {
      const parked = this.#parked.get(taskId);
      if (parked && parked.attempt.token === token && parked.attempt.handed !== undefined && delivered > parked.attempt.handed) this.#fetch(parked);
    }
  }

  /**
   * The attempt ended: its parked call, if any, is answered ATTEMPT_ENDED (its thread no longer
   * waits). Resolves once its statements in flight are over, so its `handed` count is final.
   */
  ended(attempt: NodeAttempt): Promise<void> | undefined {
    endParked(this.#parked, attempt);
    const joins = this.#k.children.ended(attempt);
    const busy = this.#inFlight.of(attempt);
    return joins && busy ? Promise.all([joins, busy]).then(() => undefined) : (joins ?? busy);
  }

  #input(attempt: NodeAttempt, waitId: number, prompt: unknown): Promise<CallAnswer> {
    const taskId = attempt.claimed.id;
    if (this.#parked.has(taskId)) return Promise.resolve(callFailure(new TroupeError('ILLEGAL_TRANSITION', 'the agent is already waiting')));
    return new Promise<CallAnswer>((answer) => {
      // Parked before the statement runs: a delivery's NOTIFY may come before its answer does.
      let resolveReady!: () => void;
      const parked: ParkedCall = { attempt, waitId, ready: new Promise((resolve) => (resolveReady = resolve)), looking: false, again: false, answer };
      this.#parked.set(taskId, parked);
      const unpark = () => {
        if (this.#parked.get(taskId) === parked) this.#parked.delete(taskId);
      };
      const op = parkForInput(this.#k.pool, leaseOf(attempt), attempt.attemptId, prompt).then(
        (result) => {
          if (result.kind === 'stale') {
            unpark();
            return answer({ ok: false, error: { code: 'FENCED', message: 'this attempt is no longer current' } });
          }
          attempt.handed = result.before;
          if (result.kind === 'delivered') {
            unpark();
            // Not to an attempt that stopped meanwhile: its end gives the input back.
            if (attempt.stop || attempt.phase === 'ended') return answer({ ok: false, error: { code: 'ABORTED', message: 'the attempt is stopping' } });
            attempt.handed = result.seq;
            return answer({ ok: true, value: result.message });
          }
          if (this.#parked.get(taskId) === parked) this.#k.park(attempt);
        },
        (error: unknown) => {
          unpark();
          answer(callFailure(error));
        },
      );
      this.#inFlight.track(attempt, op.finally(resolveReady));
    });
  }

  async #unwait(attempt: NodeAttempt, waitId: number): Promise<CallAnswer> {
    const taskId = attempt.claimed.id;
    const parked = this.#parked.get(taskId);
    if (!parked || parked.attempt !== attempt || parked.waitId !== waitId) return { ok: true, value: 'delivered' };
    await parked.ready;
    if (this.#parked.get(taskId) !== parked) return { ok: true, value: 'delivered' };
    const op = unwaitInput(this.#k.pool, leaseOf(attempt));
    this.#inFlight.track(attempt, op.then(() => undefined));
    try {
      if (!(await op)) {
        // An input reached it first: it is answered with that input.
        this.#fetch(parked);
        return { ok: true, value: 'delivered' };
      }
    } catch (error) {
      return callFailure(error);
    }
    if (this.#parked.get(taskId) === parked) {
      this.#parked.delete(taskId);
      this.#k.unpark(attempt);
      // The input call is over too: its thread counts it as waiting, slot given back, until answered.
      parked.answer(INPUT_TIMED_OUT);
    }
    return { ok: true, value: 'unwaited' };
  }

  /** Reads the input delivered to a parked call and answers it (once: later asks while one read runs go after it). */
  #fetch(parked: ParkedCall): void {
    if (!startLook(parked)) return;
    const { attempt } = parked;
    const taskId = attempt.claimed.id;
    const op = parked.ready
      .then(() => (this.#parked.get(taskId) === parked && attempt.handed !== undefined ? readDelivered(this.#k.pool, leaseOf(attempt), attempt.handed) : undefined))
      .then(
        (item) => {
          parked.looking = false;
          if (this.#parked.get(taskId) !== parked) return;
          if (!item) {
            if (parked.again) this.#fetch(parked);
            return;
          }
          // A stopping attempt does not take it: its end gives it back for the next attempt.
          if (attempt.stop || attempt.phase === 'ended') return;
          this.#parked.delete(taskId);
          attempt.handed = item.seq;
          this.#k.unpark(attempt);
          parked.answer({ ok: true, value: item.message });
        },
        (error: unknown) => {
          parked.looking = false;
          this.#k.log.warn({ err: error, taskId }, 'reading a delivered input failed; the lease renewal tries again');
        },
      );
    this.#inFlight.track(attempt, op);
  }
}
