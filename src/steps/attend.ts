/**
 * Attend: one supervisor cycle of the starvation ladder over the queued tasks. The ladder is
 * counted in cycles, durably: the cycle counter advances only in a cycle that finds a task queued
 * longer than `minQueuedMs`, and each such task records the cycle it was first seen in, so its rung
 * (`counter - firstCycle + 1`) survives a restart. A task emits `task.starved` once (its state does
 * not change), and later moves to `needs_attention` (reason `starved`) when the policy has that rung.
 *
 * Which tasks may climb is partly a read and stays with the caller: it passes no task of an agent
 * that flow control holds back, none on a degraded instance it drops instead, and calls no cycle
 * while the runtime is frozen (that wait is deliberate).
 */
import type { StarvationPolicy } from '../options.js';
import type { TaskRecord } from '../store/records.js';
import { emit, nextState } from './common.js';
import { nothing, notifyEffect, taskChange, type StepContext, type StepResult } from './types.js';

/** What attend reads. */
export interface AttendView {
  /** The queued tasks the cycle looks at, in governor order (others are skipped). */
  tasks: readonly TaskRecord[];
  /** The durable cycle counter before this cycle. */
  cycle: number;
}

/** Decides one cycle of the ladder (nothing when no task has been queued past `minQueuedMs`). */
export function decideAttend(view: AttendView, ladder: Readonly<StarvationPolicy>, ctx: StepContext): StepResult {
  const { now } = ctx;
  const hungry: TaskRecord[] = [];
  for (const task of view.tasks) {
    if (task.state !== 'queued') continue;
    // A task at the top rung with no attention rung left has nothing to climb: no write for it.
    const climbing = task.ladder === undefined || task.ladder.rung === 0 || ladder.attentionAfterCycles !== 0;
    const queuedSince = Math.max(task.queuedAt ?? task.createdAt, task.runAt ?? 0);
    if (climbing && now - queuedSince >= ladder.minQueuedMs) hungry.push(task);
  }
  const out = nothing();
  if (hungry.length === 0) return out;
  const cycle = view.cycle + 1;
  out.changes.push({ kind: 'cycle', cycle });
  for (const task of hungry) climb(out, task, cycle, ladder, ctx);
  return out;
}

/** Moves a task one cycle up the ladder. */
function climb(out: StepResult, task: TaskRecord, cycle: number, ladder: Readonly<StarvationPolicy>, ctx: StepContext): void {
  const { now } = ctx;
  let rungs = task.ladder;
  let write = false;
  if (rungs === undefined) {
    rungs = { firstCycle: cycle, rung: 0 };
    write = true;
  }
  const rung = cycle - rungs.firstCycle + 1;
  const queuedMs = now - (task.queuedAt ?? task.createdAt);
  if (rungs.rung === 0 && rung >= ladder.starvedAfterCycles) {
    rungs = { firstCycle: rungs.firstCycle, rung: 1 };
    write = true;
    emit(out, ctx, 'task.starved', task.id, undefined, { run: task.runs, agent: task.agent, queuedMs, cycles: rung });
  }
  if (ladder.attentionAfterCycles > 0 && rung >= ladder.attentionAfterCycles) {
    const next: TaskRecord = { ...task, ladder: rungs, state: nextState(task, 'ATTENTION'), updatedAt: now, reason: 'starved' };
    out.changes.push(taskChange(next));
    emit(out, ctx, 'task.needs_attention', task.id, undefined, { run: task.runs, reason: 'starved', agent: task.agent, queuedMs, cycles: rung });
    out.effects.push(notifyEffect(task.id));
    return;
  }
  // The starved rung changes no state (and no updatedAt): only the ladder is written.
  if (write) out.changes.push(taskChange({ ...task, ladder: rungs }));
}
