/**
 * The submit path: validate everything first, dedupe by idempotency key, admit against
 * `maxQueued`, then store every new task and its `task.queued` event in one transaction. The
 * returned promise resolves only after that commit is flushed.
 */
import { join } from 'node:path';
import { TroupeError } from '../errors.js';
import type { TaskRecord, TimerRecord } from '../store/records.js';
import type { StepWriter } from '../store/port.js';
import { entryOf, timerIdOf, writeQueued, type Kernel } from './kernel.js';
import { toTask, validateSpec, type Task, type TaskSpec, type ValidSpec } from './spec.js';

/** Submits tasks for a kernel. */
export class Submitter {
  readonly #k: Kernel;
  readonly #nextId: () => string;

  constructor(kernel: Kernel, nextId: () => string) {
    this.#k = kernel;
    this.#nextId = nextId;
  }

  async submit(spec: TaskSpec): Promise<Task> {
    const [task] = await this.submitMany([spec], 'task');
    return task!;
  }

  /**
   * Validates, dedupes and stores specs in one step. `extra` writes more into that same step (a
   * schedule advancing its tick); it sees the record of each spec, new or existing.
   */
  async submitMany(specs: readonly TaskSpec[], where?: string, extra?: (w: StepWriter, picked: readonly TaskRecord[]) => void): Promise<Task[]> {
    if (!Array.isArray(specs)) throw new TroupeError('INVALID_INPUT', 'submitMany expects an array of task specs');
    const { agents, table, options, clock, governor } = this.#k;
    const now = clock.now();
    // Tasks routed by `requires` in this batch count toward their agent's load for the next pick.
    let routed: Map<string, number> | undefined;
    const route = (requires: readonly string[]) => {
      const name = governor.pickAgent(agents.covering(requires).map((a) => a.name), routed);
      if (name !== undefined) (routed ??= new Map()).set(name, (routed.get(name) ?? 0) + 1);
      return name === undefined ? undefined : agents.get(name);
    };
    const valid = specs.map((spec, i) => validateSpec(spec, (name) => agents.get(name), where ?? `tasks[${i}]`, now, route));
    // One record per spec: an existing task for a known key, the batch's first task for a key
    // repeated in the batch, or a new one.
    const picked: TaskRecord[] = new Array(valid.length);
    const records: TaskRecord[] = [];
    const firstOfKey = new Map<string, TaskRecord>();
    for (let i = 0; i < valid.length; i++) {
      const spec = valid[i]!;
      if (spec.parentId !== undefined && !table.get(spec.parentId) && !this.#k.store.read.tasks.has(spec.parentId)) {
        throw new TroupeError('NOT_FOUND', `${where ?? `tasks[${i}]`}.parentId: no task ${spec.parentId}`);
      }
      const key = spec.idempotencyKey;
      const existing = key === undefined ? undefined : (this.#existing(key) ?? firstOfKey.get(key));
      if (existing) {
        picked[i] = existing;
        continue;
      }
      const record = this.#record(spec, now);
      picked[i] = record;
      records.push(record);
      if (key !== undefined) firstOfKey.set(key, record);
    }
    let admitted = 0;
    for (const record of records) if (record.state === 'queued') admitted++;
    if (admitted > 0 && table.count('queued') + admitted > options.maxQueued) {
      throw new TroupeError('AT_CAPACITY', `admission is full: ${table.count('queued')} tasks queued, maxQueued is ${options.maxQueued}`);
    }
    if (records.length > 0 || extra) await this.#store(records, now, extra && ((w) => extra(w, picked)));
    // Views are taken as committed (queued), before the dispatcher may start the tasks.
    const views = picked.map(toTask);
    this.#enqueue(records);
    return views;
  }

  /** Validates a spec the way submit would (schedule templates), storing nothing. */
  check(spec: TaskSpec): void {
    validateSpec(spec, (name) => this.#k.agents.get(name), 'schedule.task', this.#k.clock.now());
  }

  #existing(key: string): TaskRecord | undefined {
    const { table, store } = this.#k;
    const id = table.idOfKey(key) ?? store.read.idempotency.get(key);
    return id === undefined ? undefined : (table.get(id) ?? store.read.tasks.get(id));
  }

  #record(spec: ValidSpec, now: number): TaskRecord {
    const record: TaskRecord = {
      id: this.#nextId(),
      agent: spec.agentName,
      state: spec.unmatched ? 'needs_attention' : 'queued',
      input: spec.input,
      priority: spec.priority,
      lane: spec.lane,
      instanceKey: spec.instanceKey,
      labels: spec.labels,
      timeoutMs: spec.timeoutMs,
      retry: { ...spec.retry },
      runs: 1,
      runReason: 'submit',
      runCreatedAt: now,
      attempts: 0,
      attemptSeq: 0,
      token: 0,
      queuedOrder: 0,
      createdAt: now,
      updatedAt: now,
    };
    if (spec.unmatched) record.reason = 'unmatched';
    if (spec.requires !== undefined) record.requires = spec.requires;
    if (spec.unrouted !== undefined) record.unrouted = spec.unrouted;
    if (spec.workspaceKeep !== undefined) {
      record.workspace = join(this.#k.options.dataDir, 'workspaces', record.id);
      record.workspaceKeep = spec.workspaceKeep;
    } else if (spec.workspace !== undefined) record.workspace = spec.workspace;
    if (spec.parentId !== undefined) record.parentId = spec.parentId;
    if (spec.idempotencyKey !== undefined) record.idempotencyKey = spec.idempotencyKey;
    if (spec.runAt !== undefined) record.runAt = spec.runAt;
    return record;
  }

  async #store(records: TaskRecord[], now: number, extra?: (w: StepWriter) => void): Promise<void> {
    const { table, store } = this.#k;
    for (const record of records) table.add(record);
    try {
      await store.commit((w) => {
        for (const task of records) {
          w.putActive(task.id);
          if (task.idempotencyKey !== undefined) w.putIdempotency(task.idempotencyKey, task.id);
          if (task.state === 'needs_attention') {
            w.putTask(task);
            w.event('task.needs_attention', { at: now, taskId: task.id, data: { run: 1, reason: 'unmatched', agent: task.agent, requires: task.requires } });
            continue;
          }
          if (task.runAt !== undefined) w.putTimer(startTimerOf(task));
          writeQueued(w, task, { run: 1, agent: task.agent, priority: task.priority, ...(task.runAt === undefined ? {} : { runAt: task.runAt }) }, now);
        }
        extra?.(w);
      });
    } catch (error) {
      for (const record of records) table.retire(record);
      throw error;
    }
  }

  #enqueue(records: readonly TaskRecord[]): void {
    const { governor, timers, table } = this.#k;
    for (const record of records) {
      if (record.state === 'needs_attention') table.notify(record);
      if (record.state !== 'queued') continue;
      // A delayed task waits for its durable timer, not in the governor.
      if (record.runAt !== undefined) timers.add(startTimerOf(record));
      else if (!governor.has(record.id)) governor.enqueue(entryOf(record));
    }
    this.#k.pump();
  }
}

/** The durable timer that holds a delayed task until its `runAt`. */
function startTimerOf(task: TaskRecord): TimerRecord {
  return { id: timerIdOf(task, 'start'), due: task.runAt!, kind: 'start', taskId: task.id, run: task.runs };
}
