/**
 * The pipeline: every durable step goes through here. `run(decide, view, input)` decides the step
 * with a fresh context (time, seqs, ids and randomness come in), applies its changes to memory at
 * once, so a later step in the same turn sees them, and stages its records and events into the
 * store's current batch. Every step staged in one turn (or while the previous batch is flushed)
 * shares that batch's one transaction. Once it is durable, one executor runs the batch's effects,
 * in the order the steps decided them: resolve, dispatch, notify, arm. Nothing outside the store
 * learns of a change before its commit.
 */
import type { Clock } from '../clock.js';
import type { Logger } from '../log.js';
import type { StepWriter, Store } from '../store/port.js';
import type { TaskRecord } from '../store/records.js';
import type { Change, Effect, StepContext, StepResult } from '../steps/types.js';
import { isTerminal } from '../../machines/index.js';
import { arrayForBatch } from '../allocation.js';

/** A step's decision function. */
export type Decide<V, I> = (view: V, input: I, ctx: StepContext) => StepResult;

/** What the pipeline changes in memory when a step joins a batch. */
export interface Memory {
  /** A task's new record: replace it in the table (and its counts), derive its governor membership. */
  putTask(task: TaskRecord): void;
}

/** Runs effects once their batch is durable; or learns that it failed. */
export interface Executor {
  run(effects: readonly Effect[]): void;
  failed(effects: readonly Effect[], error: unknown): void;
}

/** What the pipeline is built from. */
export interface PipelineDeps {
  store: Store;
  clock: Clock;
  random: () => number;
  /** Mints an id; given a time, mints at it instead of reading the clock. */
  nextId: (at?: number) => string;
  memory: Memory;
  executor: Executor;
  log: Logger;
}

/** See the module comment. */
export class Pipeline {
  readonly #store: Store;
  readonly #clock: Clock;
  readonly #memory: Memory;
  readonly #executor: Executor;
  readonly #ctx: { now: number; seq: () => number; random: () => number; id: () => string };
  /** The store batch the effects below belong to (its promise), and its effects in decision order. */
  #batch: Promise<void> | undefined;
  #effects: Effect[] = [];
  #changes: readonly Change[] = NONE;
  #events: StepResult['events'] = NONE;
  readonly #stage = (w: StepWriter) => {
    for (const change of this.#changes) write(w, change);
    for (const event of this.#events) w.putEvent(event);
  };

  constructor(deps: PipelineDeps) {
    this.#store = deps.store;
    this.#clock = deps.clock;
    this.#memory = deps.memory;
    this.#executor = deps.executor;
    const store = deps.store;
    const ctx = { now: 0, seq: () => store.allocateSeq(), random: deps.random, id: () => deps.nextId(ctx.now) };
    // Ids are minted at the time the step decides at: one clock read per step, not two.
    this.#ctx = ctx;
  }

  /**
   * Decides a step and joins it to the current batch. Returns the batch's promise: it resolves once
   * the step is durable (after its batch's effects ran) and rejects with STORE_FAILED if the commit
   * failed. A step that throws changes nothing and takes no seq.
   */
  run<V, I>(decide: Decide<V, I>, view: V, input: I): Promise<void> {
    return this.apply(this.decide(decide, view, input));
  }

  /**
   * Decides a step without joining it yet (the caller reads the result, then applies it). `now`
   * defaults to the clock's; a caller that already read the time for the same decision passes it.
   */
  decide<V, I>(decide: Decide<V, I>, view: V, input: I, now = this.#clock.now()): StepResult {
    const mark = this.#store.nextSeq;
    this.#ctx.now = now;
    try {
      return decide(view, input, this.#ctx);
    } catch (error) {
      this.#store.rewindSeq(mark);
      throw error;
    }
  }

  /** The time steps decide at now (for callers that need it to build their input). */
  get now(): number {
    return this.#clock.now();
  }

  /** Joins an already decided result to the current batch (see {@link Pipeline.run}). */
  apply(result: StepResult): Promise<void> {
    // A stopped store takes no more steps: memory must not move ahead of what can be made durable.
    const failure = this.#store.failure;
    if (failure) return Promise.reject(failure);
    const { changes, events, effects } = result;
    for (let i = 0; i < changes.length; i++) {
      const change = changes[i]!;
      if (change.kind === 'task') this.#memory.putTask(change.task);
    }
    this.#changes = changes;
    this.#events = events;
    let done: Promise<void>;
    try {
      done = this.#store.stage(this.#stage);
    } finally {
      this.#changes = NONE;
      this.#events = NONE;
    }
    // The first step of a batch attaches its executor, so the batch's effects run before any
    // caller that awaits one of its steps.
    if (done !== this.#batch) {
      this.#batch = done;
      const list: Effect[] = (this.#effects = arrayForBatch());
      done.then(
        () => list.length > 0 && this.#executor.run(list),
        (error: unknown) => this.#executor.failed(list, error),
      );
    }
    for (let i = 0; i < effects.length; i++) this.#effects.push(effects[i]!);
    return done;
  }
}

/** What the stager holds between steps: nothing. */
const NONE: never[] = [];

/** Writes one change into the store's batch. */
function write(w: StepWriter, change: Change): void {
  switch (change.kind) {
    case 'task':
      // A settled task is done changing: its record goes to its database in this very commit.
      return w.putTask(change.task, isTerminal(change.task.state));
    case 'attempt':
      return w.putAttempt(change.attempt);
    case 'run':
      return w.putRun(change.run);
    case 'timer':
      return change.armed ? w.putTimer(change.timer) : w.removeTimer(change.timer);
    case 'idempotency':
      return w.putIdempotency(change.key, change.taskId);
    case 'inbox':
      return w.putInbox(change.taskId, change.item);
    case 'input-key':
      return w.putIdempotency(change.key, String(change.seq));
    case 'schedule':
      return w.putSchedule(change.schedule);
    case 'cycle':
      return w.putControl('supervisor', { cycle: change.cycle });
    case 'flow':
      return w.putControl(`agent:${change.agent}`, change.state);
    case 'remove':
      return w.remove(change.db, change.key);
    case 'unindex':
      return w.unindexSettled(change.task);
    case 'child':
      return w.putChild(change.parentId, change.childId);
  }
}
