/**
 * `rt.prune({ before, states })`: removes settled tasks and everything they left, on demand, in
 * bounded batches (one prune step per task, up to {@link BATCH} tasks per commit, a turn given
 * back between batches) so dispatch never waits long. A parent waits for its children: it goes
 * only with all of them, and they go first. Tasks whose settle is still in memory (not yet
 * committed) are left for the next call.
 */
import { isTerminal, TERMINAL_STATES, type TaskState } from '../../machines/index.js';
import { TroupeError } from '../errors.js';
import { checkCallOptions } from '../options.js';
import { decidePrune, type PruneView } from '../steps/prune.js';
import type { TaskRecord } from '../store/records.js';
import { childIdsOf, type EngineParts } from './parts.js';

/**
 * Tasks removed per turn (and commit): at least {@link BATCH}, then more while the turn has taken
 * under {@link TURN_MS}, up to {@link MAX_BATCH}. A removal costs some microseconds; a busy event
 * loop turns a few hundred times a second, so a fixed 100 would cap removals below the rate a
 * saturated runtime settles tasks at, and retention would never catch up.
 */
const BATCH = 100;
const MAX_BATCH = 2_000;
const TURN_MS = 4;
/** Batches committing at once. */
const IN_FLIGHT = 4;
/** Stored tasks read per turn while looking for the ones to remove. */
const SCAN = 1_000;

/** Options of {@link Pruner.prune}. */
export interface PruneOptions {
  /** Only tasks settled before this instant (epoch ms or a Date). Default: now. */
  before?: number | Date;
  /** Only tasks in these settled states. Default: all four (done, failed, dropped, cancelled). */
  states?: readonly TaskState[];
}

/** What a prune removed. */
export interface PruneResult {
  tasks: number;
  runs: number;
  attempts: number;
  logLines: number;
  inputs: number;
}

export const PRUNE_PARTS = ['clock', 'pipeline', 'store', 'table'] as const;
export type PruneDeps = Pick<EngineParts, (typeof PRUNE_PARTS)[number]>;

/** See the module comment. */
export class Pruner {
  readonly #k: PruneDeps;

  constructor(deps: PruneDeps) {
    this.#k = deps;
  }

  /** Validates first (INVALID_OPTIONS, nothing removed), then prunes batch by batch. */
  async prune(options?: PruneOptions): Promise<PruneResult> {
    const { before, states } = checkPruneOptions(options, this.#k.clock.now());
    const result = emptyResult();
    await this.remove(await this.#eligible(before, states), (task) => eligible(task, before, states), result);
    return result;
  }

  /**
   * Removes the tasks `ids` (in that order, children before their parents), a batch per turn and
   * commit (see {@link BATCH}) with a turn given back between batches, each only if `due` still says so of it as
   * stored when its step is decided; adds what went to `result`. Stops between batches once
   * `stop()` says so.
   */
  async remove(ids: readonly string[], due: (task: TaskRecord) => boolean, result: PruneResult, stop?: () => boolean): Promise<void> {
    const inFlight: Array<Promise<void>> = [];
    for (let i = 0; i < ids.length && !stop?.(); ) {
      let committed: Promise<void> | undefined;
      const began = performance.now();
      for (const end = Math.min(ids.length, i + MAX_BATCH); i < end; i++) {
        committed = this.#pruneOne(ids[i]!, due, result) ?? committed;
        if ((i + 1) % BATCH === 0 && performance.now() - began > TURN_MS) {
          i++;
          break;
        }
      }
      // Batches commit while the next are decided: at most IN_FLIGHT of them.
      if (committed) inFlight.push(committed);
      if (inFlight.length >= IN_FLIGHT) await inFlight.shift();
      // Give the turn back: submits and settles go on between batches.
      await new Promise((resolve) => setImmediate(resolve));
    }
    await Promise.all(inFlight);
  }

  /**
   * Ids to prune, children before their parents: every settled task past the horizon whose
   * children (all of them, at any depth: the children index) are too. Tasks are read in id order,
   * which is creation order, {@link SCAN} per turn, up to the first one created at or after the
   * horizon: no later one can have settled before it. Each is checked again when it is removed.
   */
  async #eligible(before: number, states: ReadonlySet<TaskState>): Promise<string[]> {
    const { store } = this.#k;
    const candidates: string[] = [];
    scan: for (let after: string | undefined; ; ) {
      let last: string | undefined;
      for (const { key, value: task } of store.read.tasks.range({ start: after ?? '', limit: SCAN + 1 })) {
        if (key === after) continue;
        if (task.createdAt >= before) break scan;
        last = key;
        if (eligible(task, before, states)) candidates.push(task.id);
      }
      if (last === undefined) break;
      after = last;
      await new Promise((resolve) => setImmediate(resolve));
    }
    return wholeSubtrees(store, candidates);
  }

  /** Prunes one task if it is still due now; returns its batch's promise, or undefined. */
  #pruneOne(id: string, due: (task: TaskRecord) => boolean, result: PruneResult): Promise<void> | undefined {
    const { store, table, pipeline } = this.#k;
    // Still in memory: its settle (or a retry) is in flight. Checked again now, in the turn the step is decided.
    if (table.get(id)) return undefined;
    const task = store.read.tasks.get(id);
    if (!task || !isTerminal(task.state) || !due(task)) return undefined;
    // What the record says there is none of is not looked for: a run record is written when the
    // next run begins, an attempt's when it ends, unless it is the settled task's last (held in
    // the task record); inputs are counted. The common task (one run, one attempt, no input)
    // costs one read, for its log lines.
    const oneAttempt = task.runs === 1 && task.attemptSeq <= 1 && task.attemptExit !== undefined;
    const view: PruneView = {
      task,
      runs: task.runs === 1 ? [] : [...store.read.runs.keys({ start: [id, 0], end: [id, Number.MAX_SAFE_INTEGER] })],
      attempts: oneAttempt ? [] : [...store.read.attempts.keys({ start: [id, 0, 0], end: [id, Number.MAX_SAFE_INTEGER, 0] })],
      logs: [...store.read.logs.keys({ start: [id, 0, 0, 0], end: [id, Number.MAX_SAFE_INTEGER, 0, 0] })],
      inbox: task.inbox ? [...store.read.inbox.range({ start: [id, 0], end: [id, Number.MAX_SAFE_INTEGER] })].map(({ value }) => value) : [],
    };
    const done = pipeline.run(decidePrune, view, undefined);
    table.leftSettled(task.state, task.agent);
    result.tasks++;
    result.runs += view.runs.length;
    result.attempts += view.attempts.length;
    result.logLines += view.logs.length;
    result.inputs += view.inbox.length;
    return done;
  }
}

/** What a prune that removed nothing reports. */
export function emptyResult(): PruneResult {
  return { tasks: 0, runs: 0, attempts: 0, logLines: 0, inputs: 0 };
}

/**
 * The candidates that can go with all of their children (at any depth, from the children index),
 * children first: a parent waits for its children. Ids are time-ordered and a child is created
 * after its parent, so newest first puts every child before its parent.
 */
export function wholeSubtrees(store: PruneDeps['store'], candidates: Iterable<string>): string[] {
  const ok = new Set(candidates);
  const keeps = new Map<string, boolean>();
  const keep = (id: string): boolean => {
    const known = keeps.get(id);
    if (known !== undefined) return known;
    keeps.set(id, false);
    let result = ok.has(id);
    if (result) for (const child of childIdsOf(store, id)) if (!(result = keep(child))) break;
    keeps.set(id, result);
    return result;
  };
  return [...ok].sort().reverse().filter(keep);
}

function eligible(task: TaskRecord, before: number, states: ReadonlySet<TaskState>): boolean {
  return states.has(task.state) && task.settledAt !== undefined && task.settledAt < before;
}

/** `rt.prune()`'s options, checked (INVALID_OPTIONS), `before` defaulting to `now`; the runtime on PostgreSQL checks them with this too. */
export function checkPruneOptions(options: PruneOptions | undefined, now: number): { before: number; states: ReadonlySet<TaskState> } {
  checkCallOptions(options, ['before', 'states'], 'prune');
  const raw = options?.before;
  const before = raw === undefined ? now : raw instanceof Date ? raw.getTime() : raw;
  if (typeof before !== 'number' || !Number.isFinite(before) || before < 0) throw new TroupeError('INVALID_OPTIONS', 'prune: before must be epoch milliseconds (a non-negative number) or a valid Date');
  const list = options?.states;
  if (list === undefined) return { before, states: TERMINAL_STATES };
  if (!Array.isArray(list) || list.length === 0 || !list.every((s) => TERMINAL_STATES.has(s))) {
    throw new TroupeError('INVALID_OPTIONS', `prune: states must be a non-empty list of ${[...TERMINAL_STATES].join(', ')}`);
  }
  return { before, states: new Set(list) };
}
