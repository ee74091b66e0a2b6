/**
 * Submit: one validated spec becomes one new task, `queued` (or `needs_attention` when no agent
 * covers its `requires`). Validation, idempotency dedupe, the parent check and `maxQueued`
 * admission are reads and stay with the caller; this step decides the record and what it writes.
 */
import { join } from 'node:path';
import { createTaskRecord, type TraceCarrier } from '../store/records.js';
import type { ValidSpec } from '../tasks/spec.js';
import type { EventData } from '../api/events.js';
import { queue, timerOf, arm, emit } from './common.js';
import { nothing, notifyEffect, taskChange, type StepContext, type StepResult } from './types.js';

/** What submit reads. */
export interface SubmitView {
  /** Where per-task workspaces are made (`<dataDir>/workspaces`). */
  workspacesDir: string;
}

/** What the caller decided: the spec, validated, routed and not a duplicate. */
export interface SubmitInput {
  spec: ValidSpec;
  /** The W3C trace context of the submit's span (tracing on), stored with the task. */
  trace?: TraceCarrier;
}

/**
 * Decides a new task. Queued: the record (its FIFO order is the seq of its `task.queued`), the
 * idempotency key, and a start timer when it has a delayed start. Unmatched: the
 * record in `needs_attention` with its event, and waiters woken.
 */
export function decideSubmit(view: SubmitView, input: SubmitInput, ctx: StepContext): StepResult {
  const { spec } = input;
  const { now } = ctx;
  const task = createTaskRecord({
    id: ctx.id(),
    agent: spec.agentName,
    state: spec.unmatched ? 'needs_attention' : 'queued',
    input: spec.input,
    priority: spec.priority,
    lane: spec.lane,
    instanceKey: spec.instanceKey,
    labels: spec.labels,
    timeoutMs: spec.timeoutMs,
    retry: spec.retry,
    runReason: 'submit',
    createdAt: now,
  });
  if (spec.unmatched) task.reason = 'unmatched';
  if (spec.requires !== undefined) task.requires = spec.requires;
  if (spec.unrouted !== undefined) task.unrouted = spec.unrouted;
  if (spec.workspaceKeep !== undefined) {
    task.workspace = join(view.workspacesDir, task.id);
    task.workspaceKeep = spec.workspaceKeep;
  } else if (spec.workspace !== undefined) task.workspace = spec.workspace;
  if (spec.parentId !== undefined) task.parentId = spec.parentId;
  if (spec.idempotencyKey !== undefined) task.idempotencyKey = spec.idempotencyKey;
  if (spec.runAt !== undefined) task.runAt = spec.runAt;
  if (spec.retention !== undefined) task.retention = spec.retention;
  if (input.trace !== undefined) task.trace = input.trace;

  const out = nothing();
  out.changes.push(taskChange(task));
  if (task.idempotencyKey !== undefined) out.changes.push({ kind: 'idempotency', key: task.idempotencyKey, taskId: task.id });
  if (task.parentId !== undefined) out.changes.push({ kind: 'child', parentId: task.parentId, childId: task.id });
  if (task.state === 'needs_attention') {
    emit(out, ctx, 'task.needs_attention', task.id, undefined, { run: 1, reason: 'unmatched', agent: task.agent, requires: task.requires });
    out.effects.push(notifyEffect(task.id));
  } else {
    // A delayed task waits for its durable timer, not in the governor.
    if (task.runAt !== undefined) arm(out, timerOf(task, 'start', task.runAt));
    queue(out, ctx, task, task.runAt === undefined ? { ...QUEUED, agent: task.agent, priority: task.priority } : { run: 1, agent: task.agent, priority: task.priority, runAt: task.runAt });
  }
  // The record (the change above holds this very object) keeps where its events begin.
  task.firstSeq = out.events[0]!.seq;
  return out;
}

/** The data of a task's first `task.queued`: a template spread, not a literal (see src/allocation.ts). */
const QUEUED: EventData<'task.queued'> = { run: 1, agent: '', priority: 0 };
