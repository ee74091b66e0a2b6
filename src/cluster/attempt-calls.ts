/**
 * What the node's agent-call servers (node-inputs.ts: inputs; node-joins.ts: spawn and join) share:
 * the statements each attempt has in flight, which its settle waits for, the lease an attempt's
 * statements are fenced by, the answer an agent gets for a call that failed, one look at a time at
 * a parked call, and the answer to a parked call whose attempt ended.
 */
import type { CallAnswer } from '../../actors/wire.js';
import { TroupeError } from '../errors.js';
import type { Lease } from '../store/postgres/checks.js';
import type { NodeAttempt } from './node-attempt.js';

/** The statements of each attempt still in flight, by attempt id. */
export class InFlight {
  readonly #busy = new Map<string, Promise<void>>();

  /** Counts `op` among the attempt's statements in flight (its failure is the caller's to handle). */
  track(attempt: NodeAttempt, op: Promise<unknown>): void {
    const id = attempt.attemptId;
    const before = this.#busy.get(id);
    const settled = op.then(
      () => undefined,
      () => undefined,
    );
    const all = before ? Promise.all([before, settled]).then(() => undefined) : settled;
    this.#busy.set(id, all);
    void all.then(() => {
      if (this.#busy.get(id) === all) this.#busy.delete(id);
    });
  }

  /** Resolves once the attempt's statements in flight are over; undefined when none is. */
  of(attempt: NodeAttempt): Promise<void> | undefined {
    return this.#busy.get(attempt.attemptId);
  }
}

/** The lease an attempt's statements are fenced by. */
export function leaseOf(attempt: NodeAttempt): Lease {
  return { taskId: attempt.claimed.id, token: attempt.token };
}

/** The answer to an agent call that failed: a TroupeError's code, else AGENT_CALL_FAILED. */
export function callFailure(error: unknown): CallAnswer {
  if (error instanceof TroupeError) return { ok: false, error: { code: error.code, message: error.message } };
  return { ok: false, error: { code: 'AGENT_CALL_FAILED', message: error instanceof Error ? error.message : String(error) } };
}

/**
 * One look at a time at a parked call (a join's settled children, an input's delivery): `looking`
 * while one runs; `again` when another was asked for meanwhile, so the look that finds nothing
 * yet runs once more.
 */
export interface Look {
  looking: boolean;
  again: boolean;
}

/** Starts a look (true), or, while one runs, asks it to look once more should it find nothing (false). */
export function startLook(look: Look): boolean {
  if (look.looking) {
    look.again = true;
    return false;
  }
  look.looking = true;
  look.again = false;
  return true;
}

/** Forgets `attempt`'s call parked in `parked` (by task id), if any, answering it ATTEMPT_ENDED: its thread no longer waits. */
export function endParked(parked: Map<string, { attempt: NodeAttempt; answer(answer: CallAnswer): void }>, attempt: NodeAttempt): void {
  const taskId = attempt.claimed.id;
  const call = parked.get(taskId);
  if (call?.attempt !== attempt) return;
  parked.delete(taskId);
  call.answer({ ok: false, error: { code: 'ATTEMPT_ENDED', message: 'the attempt has ended' } });
}
