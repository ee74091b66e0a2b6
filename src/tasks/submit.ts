/**
 * The submit path: validate everything first, dedupe by idempotency key, admit against
 * `maxQueued`, then store every new task and its `task.queued` event in one transaction. The
 * returned promise resolves only after that commit is flushed.
 */
import { TroupeError } from '../errors.js';
import type { TaskRecord, TimerRecord } from '../store/records.js';
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

  async submitMany(specs: readonly TaskSpec[], where?: string): Promise<Task[]> {
    if (!Array.isArray(specs)) throw new TroupeError('INVALID_INPUT', 'submitMany expects an array of task specs');
    const { agents, table, options, clock } = this.#k;
    const now = clock.now();
    const valid = specs.map((spec, i) => validateSpec(spec, (name) => agents.get(name), where ?? `tasks[${i}]`, now));
    const results: Array<Task | TaskRecord | undefined> = new Array(valid.length);
    const fresh: Array<{ index: number; spec: ValidSpec }> = [];
    const batchKeys = new Map<string, number>();
    for (let i = 0; i < valid.length; i++) {
      const spec = valid[i]!;
      if (spec.parentId !== undefined && !table.get(spec.parentId) && !this.#k.store.read.tasks.has(spec.parentId)) {
        throw new TroupeError('NOT_FOUND', `${where ?? `tasks[${i}]`}.parentId: no task ${spec.parentId}`);
      }
      const key = spec.idempotencyKey;
      if (key !== undefined) {
        const existing = this.#existing(key);
        if (existing) {
          results[i] = existing;
          continue;
        }
        const earlier = batchKeys.get(key);
        if (earlier !== undefined) {
          results[i] = undefined; // filled from the earlier entry below
          continue;
        }
        batchKeys.set(key, i);
      }
      fresh.push({ index: i, spec });
    }
    if (fresh.length > 0 && table.count('queued') + fresh.length > options.maxQueued) {
      throw new TroupeError('AT_CAPACITY', `admission is full: ${table.count('queued')} tasks queued, maxQueued is ${options.maxQueued}`);
    }
    const records = fresh.map(({ index, spec }) => {
      const record = this.#record(spec, now);
      results[index] = record;
      return record;
    });
    for (let i = 0; i < valid.length; i++) {
      const key = valid[i]!.idempotencyKey;
      if (results[i] === undefined && key !== undefined) results[i] = results[batchKeys.get(key)!];
    }
    if (records.length > 0) await this.#store(records, now);
    // Views are taken as committed (queued), before the dispatcher may start the tasks.
    const views = results.map((r) => (r && 'token' in r ? toTask(r as TaskRecord) : (r as Task)));
    this.#enqueue(records);
    return views;
  }

  #existing(key: string): Task | undefined {
    const { table, store } = this.#k;
    const id = table.idOfKey(key) ?? store.read.idempotency.get(key);
    if (id === undefined) return undefined;
    const record = table.get(id) ?? store.read.tasks.get(id);
    return record ? toTask(record) : undefined;
  }

  #record(spec: ValidSpec, now: number): TaskRecord {
    const record: TaskRecord = {
      id: this.#nextId(),
      agent: spec.agent.name,
      state: 'queued',
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
    if (spec.workspace !== undefined) record.workspace = spec.workspace;
    if (spec.parentId !== undefined) record.parentId = spec.parentId;
    if (spec.idempotencyKey !== undefined) record.idempotencyKey = spec.idempotencyKey;
    if (spec.runAt !== undefined) record.runAt = spec.runAt;
    return record;
  }

  async #store(records: TaskRecord[], now: number): Promise<void> {
    const { table, store } = this.#k;
    for (const record of records) table.add(record);
    try {
      await store.commit((w) => {
        for (const task of records) {
          w.putActive(task.id);
          if (task.idempotencyKey !== undefined) w.putIdempotency(task.idempotencyKey, task.id);
          if (task.runAt !== undefined) w.putTimer(startTimerOf(task));
          writeQueued(w, task, { run: 1, agent: task.agent, priority: task.priority, ...(task.runAt === undefined ? {} : { runAt: task.runAt }) }, now);
        }
      });
    } catch (error) {
      for (const record of records) table.retire(record);
      throw error;
    }
  }

  #enqueue(records: readonly TaskRecord[]): void {
    const { governor, timers } = this.#k;
    for (const record of records) {
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
