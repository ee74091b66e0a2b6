/**
 * Start: the governor picked a queued task and a slot is reserved; its next attempt begins. The
 * attempt is recorded and its `task.started` committed before the agent runs (the `dispatch`
 * effect), so a crash can never hide an attempt the agent made.
 */
import { createAttemptRecord, type AgentFlowState, type TaskRecord } from '../store/records.js';
import type { EventData } from '../api/events.js';
import { attemptIdOf, emit, nextState } from './common.js';
import { dispatchEffect, nothing, taskChange, type StepContext, type StepResult } from './types.js';

/** What start reads. */
export interface StartView {
  /** The picked task; it must be `queued` (and its agent registered: the caller checks). */
  task: TaskRecord;
  /** Stable id of this data dir's runtime: the owner of the attempts it starts. */
  runtimeId: string;
  /** Lease length granted to a new attempt. */
  leaseMs: number;
}

/** What the caller decided. */
export interface StartInput {
  /** The agent's flow state after this start spent its token and day's unit (none without rate or daily limits). */
  flow?: AgentFlowState;
}

/**
 * Decides an attempt start: queued → running, the next attempt number, counted against the
 * budget; the spent flow state. The task record is the durable record of the start (a rebuild
 * after a crash finds the attempt from it); the attempt record, with its lease, goes with the
 * dispatch and is written when the attempt ends. The seq of `task.started` is the attempt's fencing
 * token: it only ever increases, across restarts too.
 */
export function decideStart(view: StartView, input: StartInput, ctx: StepContext): StepResult {
  const { task } = view;
  const { now } = ctx;
  const state = nextState(task, 'START');
  const attemptSeq = task.attemptSeq + 1;
  const attemptId = attemptIdOf(task.id, task.runs, attemptSeq);
  const out = nothing();
  const { seq } = emit(out, ctx, 'task.started', task.id, attemptId, { ...STARTED, run: task.runs, attempt: attemptSeq, queuedMs: now - (task.queuedAt ?? task.createdAt) });
  const next: TaskRecord = {
    ...task,
    state,
    updatedAt: now,
    attemptSeq,
    attempts: task.attempts + 1,
    startedAt: task.startedAt ?? now,
    runAt: undefined,
    token: seq,
  };
  const attempt = createAttemptRecord({
    taskId: task.id,
    run: task.runs,
    attempt: attemptSeq,
    attemptId,
    token: seq,
    owner: view.runtimeId,
    startedAt: now,
    leaseExpiresAt: now + view.leaseMs,
  });
  out.changes.push(taskChange(next));
  // The spent token and the day's count commit with the start they paid for.
  if (input.flow !== undefined) out.changes.push({ kind: 'flow', agent: task.agent, state: input.flow });
  out.effects.push(dispatchEffect(task.id, attemptId, attempt));
  return out;
}

/** The data of `task.started`: a template spread, not a literal (see src/allocation.ts). */
const STARTED: EventData<'task.started'> = { run: 0, attempt: 0, queuedMs: 0 };
