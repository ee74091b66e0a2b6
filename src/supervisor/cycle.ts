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
 * climb: that wait is deliberate. The ladder itself is the attend step (src/steps/attend.ts), the
 * drop the drop step; this module picks which tasks each of them sees.
 */
import type { TaskRecord } from '../store/records.js';
import { decideAttend } from '../steps/attend.js';
import { decideDrop } from '../steps/drop.js';
import type { EngineParts } from '../tasks/parts.js';

/** What the supervisor cycle reads and steps through: the slice of the engine's shared parts it reads. */
export const CYCLE_PARTS = ['governor', 'options', 'pipeline', 'router', 'store', 'table'] as const;
export type CycleDeps = Pick<EngineParts, (typeof CYCLE_PARTS)[number]>;

/** The `control` key of the durable cycle counter. */
export const CYCLE_KEY = 'supervisor';

/** What one cycle did. */
export interface CycleReport {
  starved: number;
  attention: number;
  dropped: number;
}

/** Runs supervisor cycles; keeps the counter in memory after reading it once. */
export class SupervisorCycle {
  readonly #k: CycleDeps;
  #cycle: number;

  constructor(deps: CycleDeps) {
    this.#k = deps;
    const stored = deps.store.read.control.get(CYCLE_KEY) as { cycle?: number } | undefined;
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

  /** Looks at every queued task once: the ladder as one attend step, each drop as a drop step, in one batch. */
  async run(): Promise<CycleReport> {
    const { options, governor, table, router, pipeline } = this.#k;
    const report: CycleReport = { starved: 0, attention: 0, dropped: 0 };
    const now = pipeline.now;
    const ladder = governor.frozen ? null : options.starvation;
    const dropMs = options.degradedDropMs;
    const degraded = new Map<string, number | undefined>();
    // Agents that flow control holds back (rate, daily budget, backoff) are throttled on purpose,
    // like a frozen runtime: their tasks do not climb the ladder.
    const held = ladder ? new Set(Object.entries(governor.stats().agents).filter(([, a]) => a.paused).map(([name]) => name)) : undefined;
    const climbing: TaskRecord[] = [];
    const stuck: TaskRecord[] = [];
    for (const entry of governor.queuedEntries()) {
      const task = table.get(entry.taskId);
      if (!task || task.state !== 'queued') continue;
      if (dropMs > 0) {
        const queuedSince = Math.max(task.queuedAt ?? task.createdAt, task.runAt ?? 0);
        if (!degraded.has(entry.instanceKey)) degraded.set(entry.instanceKey, router.degradedSince(entry.instanceKey));
        const since = degraded.get(entry.instanceKey);
        if (since !== undefined && now - Math.max(since, queuedSince) >= dropMs) {
          stuck.push(task);
          continue;
        }
      }
      if (ladder && !held?.has(task.agent)) climbing.push(task);
    }
    const durable: Array<Promise<void>> = [];
    if (ladder && climbing.length > 0) {
      const result = pipeline.decide(decideAttend, { tasks: climbing, cycle: this.#cycle }, ladder, now);
      if (result.changes.length > 0) {
        for (const change of result.changes) if (change.kind === 'cycle') this.#cycle = change.cycle;
        for (const event of result.events) {
          if (event.type === 'task.starved') report.starved++;
          else if (event.type === 'task.needs_attention') report.attention++;
        }
        durable.push(pipeline.apply(result));
      }
    }
    for (const task of stuck) {
      durable.push(pipeline.apply(pipeline.decide(decideDrop, { task }, { degradedDropMs: dropMs }, now)));
      report.dropped++;
    }
    await Promise.all(durable);
    return report;
  }
}
