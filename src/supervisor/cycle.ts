/**
 * One supervisor cycle over the queued tasks: the starvation ladder and the drop of tasks stuck on
 * a degraded instance.
 *
 * The ladder is counted in cycles, durably, at a few writes per starving task: a global cycle
 * counter (`control` key `supervisor`) advances only in cycles that find a task queued longer than
 * `minQueuedMs`, and each such task records the cycle it was first seen in. Its rung is then
 * `counter - firstCycle + 1`, which a restart cannot reset. A task emits `task.starved` once, and
 * later moves to `needs_attention` (reason `starved`), where an operator retries or cancels it.
 * Tasks of an agent that flow control holds back, and all tasks while the runtime is frozen, do not
 * climb: that wait is deliberate.
 */
import { isTerminal } from '../../machines/index.js';
import type { TaskRecord } from '../store/records.js';
import type { StepWriter } from '../store/port.js';
import { cleanWorkspace, transition, type Kernel } from '../tasks/kernel.js';

/** The `control` key of the durable cycle counter. */
export const CYCLE_KEY = 'supervisor';

/** What one cycle did. */
export interface CycleReport {
  starved: number;
  attention: number;
  dropped: number;
}

/** Runs cycles for a kernel; keeps the counter in memory after reading it once. */
export class SupervisorCycle {
  readonly #k: Kernel;
  #cycle: number;

  constructor(kernel: Kernel) {
    this.#k = kernel;
    const stored = kernel.store.read.control.get(CYCLE_KEY) as { cycle?: number } | undefined;
    this.#cycle = typeof stored?.cycle === 'number' ? stored.cycle : 0;
  }

  /** Cycles that found a task past `minQueuedMs`: the durable clock of the starvation ladder. */
  get cycles(): number {
    return this.#cycle;
  }

  /** Whether a cycle has anything to look at. */
  get enabled(): boolean {
    const { options } = this.#k;
    return options.starvation !== null || options.degradedDropMs > 0;
  }

  /** Looks at every queued task once; commits what changed in one step. */
  async run(): Promise<CycleReport> {
    const { options, governor, table, router, clock } = this.#k;
    const report: CycleReport = { starved: 0, attention: 0, dropped: 0 };
    const now = clock.now();
    const ladder = governor.frozen ? null : options.starvation;
    const dropMs = options.degradedDropMs;
    const degraded = new Map<string, number | undefined>();
    // Agents that flow control holds back (rate, daily budget, backoff) are throttled on purpose,
    // like a frozen runtime: their tasks do not climb the ladder.
    const held = ladder ? new Set(Object.entries(governor.stats().agents).filter(([, a]) => a.paused).map(([name]) => name)) : undefined;
    const hungry: TaskRecord[] = [];
    const stuck: TaskRecord[] = [];
    for (const entry of governor.queuedEntries()) {
      const task = table.get(entry.taskId);
      if (!task || task.state !== 'queued') continue;
      const queuedSince = Math.max(task.queuedAt ?? task.createdAt, task.runAt ?? 0);
      if (dropMs > 0) {
        if (!degraded.has(entry.instanceKey)) degraded.set(entry.instanceKey, router.degradedSince(entry.instanceKey));
        const since = degraded.get(entry.instanceKey);
        if (since !== undefined && now - Math.max(since, queuedSince) >= dropMs) {
          stuck.push(task);
          continue;
        }
      }
      // A task at the top rung with no attention rung left has nothing to climb: no write for it.
      const climbing = !task.ladder || task.ladder.rung === 0 || ladder?.attentionAfterCycles !== 0;
      if (ladder && climbing && !held?.has(task.agent) && now - queuedSince >= ladder.minQueuedMs) hungry.push(task);
    }
    if (hungry.length === 0 && stuck.length === 0) return report;
    const changed: TaskRecord[] = [];
    const settled: TaskRecord[] = [];
    await this.#k.store.commit((w) => {
      if (hungry.length > 0 && ladder) {
        const cycle = ++this.#cycle;
        w.putControl(CYCLE_KEY, { cycle });
        for (const task of hungry) {
          const moved = this.#climb(w, task, cycle, ladder, now, report);
          if (moved === 'attention') settled.push(task);
          if (moved) changed.push(task);
        }
      }
      for (const task of stuck) {
        this.#drop(w, task, now);
        report.dropped++;
        settled.push(task);
      }
    });
    for (const task of settled) {
      if (isTerminal(task.state)) {
        table.retire(task);
        cleanWorkspace(this.#k, task);
      }
      table.notify(task);
    }
    return report;
  }

  /** Moves a task one cycle up the ladder; returns what changed (nothing, a write, or attention). */
  #climb(w: StepWriter, task: TaskRecord, cycle: number, ladder: NonNullable<Kernel['options']['starvation']>, now: number, report: CycleReport): false | 'write' | 'attention' {
    let write = false;
    if (!task.ladder) {
      task.ladder = { firstCycle: cycle, rung: 0 };
      write = true;
    }
    const rung = cycle - task.ladder.firstCycle + 1;
    const queuedMs = now - (task.queuedAt ?? task.createdAt);
    if (task.ladder.rung === 0 && rung >= ladder.starvedAfterCycles) {
      task.ladder.rung = 1;
      write = true;
      report.starved++;
      w.event('task.starved', { at: now, taskId: task.id, data: { run: task.runs, agent: task.agent, queuedMs, cycles: rung } });
    }
    if (ladder.attentionAfterCycles > 0 && rung >= ladder.attentionAfterCycles) {
      const { table, governor } = this.#k;
      transition(task, 'ATTENTION', now);
      table.moved(task, 'queued');
      governor.remove(task.id);
      task.reason = 'starved';
      report.attention++;
      w.putTask(task);
      w.event('task.needs_attention', { at: now, taskId: task.id, data: { run: task.runs, reason: 'starved', agent: task.agent, queuedMs, cycles: rung } });
      return 'attention';
    }
    if (write) w.putTask(task);
    return write ? 'write' : false;
  }

  /** Drops a task that sat on a degraded instance past `degradedDropMs`. */
  #drop(w: StepWriter, task: TaskRecord, now: number): void {
    const { table, governor, options } = this.#k;
    transition(task, 'DROP', now);
    table.moved(task, 'queued');
    governor.remove(task.id);
    task.reason = 'instance_degraded';
    task.error = {
      code: 'INSTANCE_DEGRADED',
      message: `instance ${task.instanceKey} stayed degraded for ${options.degradedDropMs} ms while the task was queued`,
      retryable: false,
      fault: 'infrastructure',
    };
    task.settledAt = now;
    w.removeActive(task.id);
    w.putRun({ taskId: task.id, run: task.runs, reason: task.runReason, createdAt: task.runCreatedAt, settledAt: now, outcome: 'dropped', attempts: task.attempts, error: task.error });
    w.putTask(task);
    w.event('task.dropped', { at: now, taskId: task.id, data: { run: task.runs, reason: task.reason, error: task.error, instanceKey: task.instanceKey } });
  }
}
