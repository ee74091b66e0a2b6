/**
 * The submit path: validate everything first, dedupe by idempotency key, admit against
 * `maxQueued`, then decide one submit step per new task; they join one batch, so they commit in
 * one transaction. The returned promise resolves only after that commit is flushed.
 */
import { join } from 'node:path';
import { types } from 'node:util';
import { messageOf } from '../../actors/wire.js';
import { TroupeError } from '../errors.js';
import type { TaskRecord } from '../store/records.js';
import type { StepWriter } from '../store/port.js';
import { atCapacityMessage } from '../steps/fire.js';
import { decideSubmit } from '../steps/submit.js';
import type { Change } from '../steps/types.js';
import type { EngineParts } from './parts.js';
import { toTask, validateSpec, type Task, type TaskSpec, type ValidSpec } from './spec.js';
import type { SubmitSpans } from '../telemetry/tracing.js';

/** What submitting reads and steps through: the slice of the engine's shared parts it reads. */
export const SUBMIT_PARTS = ['agents', 'clock', 'governor', 'notifier', 'options', 'pipeline', 'store', 'table', 'tracing'] as const;
export type SubmitDeps = Pick<EngineParts, (typeof SUBMIT_PARTS)[number]>;

/** Submits tasks. */
export class Submitter {
  readonly #k: SubmitDeps;
  /** Where per-task workspaces are made: what the submit step reads. */
  readonly #view: { workspacesDir: string };

  constructor(deps: SubmitDeps) {
    this.#k = deps;
    this.#view = { workspacesDir: join(deps.options.dataDir, 'workspaces') };
  }

  /** A submit refused with AT_CAPACITY (the metrics count them). */
  #atCapacity(): TroupeError {
    this.#k.notifier.refused();
    return new TroupeError('AT_CAPACITY', atCapacityMessage(this.#k.table.count('queued'), this.#k.options.maxQueued));
  }

  /**
   * One spec: the same rules as {@link Submitter.submitMany}, without its batch bookkeeping (the hot
   * path). Throws a bad spec at once; resolves once the task is durable. (Not an async function: its
   * frame would stay alive until the commit, for every task in flight.)
   */
  submit(spec: TaskSpec): Promise<Task> {
    const { table, options, clock, pipeline } = this.#k;
    const now = clock.now();
    const valid = validateSpec(spec, this.#lookup, 'task', now, this.#route);
    if (valid.parentId !== undefined && !table.get(valid.parentId) && !this.#k.store.read.tasks.has(valid.parentId)) {
      throw new TroupeError('NOT_FOUND', `task.parentId: no task ${valid.parentId}`);
    }
    const existing = valid.idempotencyKey === undefined ? undefined : this.#existing(valid.idempotencyKey);
    if (existing) return Promise.resolve(toTask(existing));
    if (!valid.unmatched && table.count('queued') + 1 > options.maxQueued) throw this.#atCapacity();
    const { tracing } = this.#k;
    if (tracing !== undefined && tracing.active()) return this.#traced(tracing.submits(), valid, now);
    const result = pipeline.decide(decideSubmit, this.#view, { spec: valid }, now);
    const task = (result.changes[0] as Extract<Change, { kind: 'task' }>).task;
    return pipeline.apply(result).then(() => toTask(task));
  }

  /** {@link Submitter.submit}'s step inside a `troupe.submit` span, which ends once the task is durable. */
  #traced(spans: SubmitSpans, spec: ValidSpec, now: number): Promise<Task> {
    const { pipeline } = this.#k;
    let task: TaskRecord;
    let durable: Promise<void>;
    try {
      const trace = spans.start();
      const result = pipeline.decide(decideSubmit, this.#view, trace === undefined ? { spec } : { spec, trace }, now);
      task = (result.changes[0] as Extract<Change, { kind: 'task' }>).task;
      spans.decided(task);
      durable = pipeline.apply(result);
    } catch (error) {
      spans.end(error);
      throw error;
    }
    return durable.then(
      () => {
        spans.end();
        return toTask(task);
      },
      (error: unknown) => {
        spans.end(error);
        throw error;
      },
    );
  }

  readonly #lookup = (name: string) => this.#k.agents.get(name);
  /** The least-loaded agent covering `requires`, for a spec that names none. */
  readonly #route = (requires: readonly string[]) => {
    const { agents, governor } = this.#k;
    const name = governor.pickAgent(agents.covering(requires).map((a) => a.name));
    return name === undefined ? undefined : agents.get(name);
  };

  /**
   * Validates, dedupes and stores specs in one step. `extra` writes more into that same step (a
   * schedule advancing its tick); it sees the record of each spec, new or existing.
   */
  async submitMany(specs: readonly TaskSpec[], where?: string, extra?: (w: StepWriter, picked: readonly TaskRecord[]) => void): Promise<Task[]> {
    if (!Array.isArray(specs) || types.isProxy(specs)) throw new TroupeError('INVALID_INPUT', 'submitMany expects an array of task specs');
    const { agents, table, options, clock, governor, pipeline, store } = this.#k;
    const now = clock.now();
    // Tasks routed by `requires` in this batch count toward their agent's load for the next pick.
    let routed: Map<string, number> | undefined;
    const route = (requires: readonly string[]) => {
      const name = governor.pickAgent(agents.covering(requires).map((a) => a.name), routed);
      if (name !== undefined) (routed ??= new Map()).set(name, (routed.get(name) ?? 0) + 1);
      return name === undefined ? undefined : agents.get(name);
    };
    const valid: ValidSpec[] = [];
    for (let i = 0; i < specs.length; i++) {
      let spec: TaskSpec | undefined;
      try {
        spec = specs[i];
      } catch (error) {
        throw new TroupeError('INVALID_INPUT', `${where ?? `tasks[${i}]`} could not be read: ${messageOf(error)}`);
      }
      valid.push(validateSpec(spec!, (name) => agents.get(name), where ?? `tasks[${i}]`, now, route));
    }
    // One record per spec: an existing task for a known key, the batch's first task for a key
    // repeated in the batch, or a new one (decided below, once all of them are known to be good).
    const picked: TaskRecord[] = new Array(valid.length);
    const fresh: ValidSpec[] = [];
    /** For each fresh spec, the positions in `specs` that get its task (a key repeated in the batch). */
    const picks: number[][] = [];
    const freshOfKey = new Map<string, number>();
    for (let i = 0; i < valid.length; i++) {
      const spec = valid[i]!;
      if (spec.parentId !== undefined && !table.get(spec.parentId) && !this.#k.store.read.tasks.has(spec.parentId)) {
        throw new TroupeError('NOT_FOUND', `${where ?? `tasks[${i}]`}.parentId: no task ${spec.parentId}`);
      }
      const key = spec.idempotencyKey;
      const existing = key === undefined ? undefined : this.#existing(key);
      if (existing) {
        picked[i] = existing;
        continue;
      }
      const repeated = key === undefined ? undefined : freshOfKey.get(key);
      if (repeated !== undefined) {
        picks[repeated]!.push(i);
        continue;
      }
      if (key !== undefined) freshOfKey.set(key, fresh.length);
      fresh.push(spec);
      picks.push([i]);
    }
    let admitted = 0;
    for (const spec of fresh) if (!spec.unmatched) admitted++;
    if (admitted > 0 && table.count('queued') + admitted > options.maxQueued) throw this.#atCapacity();
    // Every spec's step joins the turn's batch: all of them commit in one transaction, or none.
    const spans = this.#k.tracing?.active() ? this.#k.tracing.submits() : undefined;
    try {
      let durable: Promise<void> | undefined;
      for (const [i, spec] of fresh.entries()) {
        const trace = spans?.start();
        const result = pipeline.decide(decideSubmit, this.#view, trace === undefined ? { spec } : { spec, trace }, now);
        const task = (result.changes[0] as Extract<Change, { kind: 'task' }>).task;
        spans?.decided(task);
        for (const at of picks[i]!) picked[at] = task;
        durable = pipeline.apply(result);
      }
      if (extra) durable = store.stage((w) => extra(w, picked));
      if (durable) await durable;
    } catch (error) {
      spans?.end(error);
      throw error;
    }
    spans?.end();
    return picked.map(toTask);
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
}
