/**
 * The background retention sweep: every `sweepMs`, the settled tasks past their rule (retention-
 * rules.ts) go, with everything they left, through the pruner: in batches of its size with a turn
 * given back between them, a parent only with all of its children. A pass looks at most
 * {@link PASS} tasks; one that found a backlog is followed by the next at once, so a backlog
 * drains without one long stall.
 *
 * Where the tasks are found (the store's indexes of settled tasks, see `settledIndexEntries`):
 * - a task under its agent's or the runtime's rule, per agent and state, from its `listed` entry,
 *   which holds its settle instant: by age up to the horizon (in id order, among the tasks
 *   submitted by then), and by count beyond the `count` most recently settled;
 * - a task with a rule of its own, by the instant it expires (the `expiry` index).
 */
import type { ClockTimer } from '../clock.js';
import { idTimePrefix } from '../ids.js';
import { emptyResult, type Pruner } from './prune.js';
import { childIdsOf, type EngineParts } from './parts.js';
import type { ResolvedRetention, ResolvedRule, SettledState } from './retention-rules.js';

/** Tasks one pass looks at, at most. */
const PASS = 10_000;
/** A pass that removed at least this many is followed by another at once. */
const BACKLOG = 1_000;
/** Event log records (one per committed batch) removed per commit. */
const EVENT_RECORDS = 1_000;
/** The greatest string key part: an upper bound after every number and id. */
const AFTER = '\uffff';

/** What `rt.stats().retention` shows. */
export interface RetentionStats {
  /** Sweeps finished since the runtime started. */
  sweeps: number;
  /** Tasks they removed. */
  removed: number;
  /** Events they removed from the event log. */
  eventsRemoved: number;
  /**
   * On PostgreSQL only: sweeps this runtime skipped because another runtime of the cluster was
   * sweeping (one sweeps at a time); they are not counted in `sweeps`.
   */
  skipped?: number;
  lastSweepAt?: number;
  nextSweepAt?: number;
}

export const RETENTION_PARTS = ['agents', 'clock', 'log', 'store'] as const;
export type RetentionDeps = Pick<EngineParts, (typeof RETENTION_PARTS)[number]>;

/** See the module comment. */
export class Retention {
  readonly #k: RetentionDeps;
  readonly #pruner: Pruner;
  readonly #policy: ResolvedRetention | null;
  #timer: ClockTimer | undefined;
  #running: Promise<void> | undefined;
  #stopped = true;
  readonly #stats: RetentionStats = { sweeps: 0, removed: 0, eventsRemoved: 0 };

  /** `policy` null: retention is off, and nothing is ever armed. */
  constructor(deps: RetentionDeps, pruner: Pruner, policy: ResolvedRetention | null) {
    this.#k = deps;
    this.#pruner = pruner;
    this.#policy = policy;
  }

  /** Arms the first sweep, one `sweepMs` from now. */
  start(): void {
    if (!this.#policy || !this.#stopped) return;
    this.#stopped = false;
    this.#arm();
  }

  /** Disarms the sweep, and waits for one under way to stop at its next batch. */
  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer !== undefined) this.#k.clock.clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#stats.nextSweepAt = undefined;
    await this.#running;
  }

  /** Null while retention is off. */
  get stats(): RetentionStats | null {
    return this.#policy ? { ...this.#stats } : null;
  }

  #arm(): void {
    const { clock } = this.#k;
    const ms = this.#policy!.sweepMs;
    this.#stats.nextSweepAt = clock.now() + ms;
    this.#timer = clock.setTimeout(() => {
      this.#timer = undefined;
      this.#running = this.#sweep().finally(() => {
        this.#running = undefined;
        if (!this.#stopped) this.#arm();
      });
    }, ms);
  }

  async #sweep(): Promise<void> {
    const result = emptyResult();
    const started = this.#k.clock.now();
    try {
      for (let full = true; full && !this.#stopped; ) {
        // Each pass at its own time: what fell due while the last one ran is its backlog too.
        const due = this.#due(this.#k.clock.now());
        const before = result.tasks;
        // Newest first, so children go before their parents; a parent whose children are not all
        // gone by its turn waits for a later sweep (it is looked at when its batch is decided, not
        // all at once here: a pass stays a string of short turns).
        const ids = [...due.keys()].sort().reverse();
        const { store } = this.#k;
        await this.#pruner.remove(ids, (task) => task.settledAt === due.get(task.id) && firstOf(childIdsOf(store, task.id)) === undefined, result, () => this.#stopped);
        // Another pass at once while there is a backlog: one that removed a batch's worth or more
        // (a runtime that settles faster than a pass removes would never catch up at one pass a
        // sweep). Tasks that wait (parents of younger children) are removed by none: the next
        // sweep looks again.
        full = result.tasks - before >= BACKLOG;
      }
      await this.#truncateEvents(this.#k.clock.now());
      this.#stats.sweeps++;
      this.#stats.lastSweepAt = started;
    } catch (error) {
      this.#k.log.error({ err: error }, 'the retention sweep failed; the next one tries again');
    } finally {
      this.#stats.removed += result.tasks;
      if (result.tasks > 0) this.#k.log.info({ ...result }, 'retention removed settled tasks');
    }
  }

  /** Removes the events older than `eventsMs`, {@link EVENT_RECORDS} log records per commit. */
  async #truncateEvents(now: number): Promise<void> {
    const { eventsMs } = this.#policy!;
    if (eventsMs === Infinity) return;
    for (let removed = -1; removed !== 0 && !this.#stopped; ) {
      removed = await this.#k.store.truncateEvents(now - eventsMs, EVENT_RECORDS);
      this.#stats.eventsRemoved += removed;
    }
  }

  /** The tasks due at `now` (up to {@link PASS}), each with the settle instant it was found under. */
  #due(now: number): Map<string, number> {
    const { store } = this.#k;
    const due = new Map<string, number>();
    const add = (id: string, settledAt: number) => due.size < PASS && due.set(id, settledAt).size < PASS;
    // Tasks under a rule of their own, by expiry; the task's settle instant is read when it is removed.
    for (const [, id] of store.read.expiry.keys({ end: [now, AFTER] })) {
      const task = store.read.tasks.get(id);
      if (task?.settledAt !== undefined && !add(id, task.settledAt)) return due;
    }
    // Tasks under their agent's rule, one agent and state at a time, by their `listed` entries:
    // valued with the settle instant (false for a task under a rule of its own).
    for (let from: string[] = []; due.size < PASS; ) {
      const first = firstOf(store.read.listed.keys({ start: from, limit: 1 }));
      if (first === undefined) break;
      const [agent, state] = first;
      from = [agent, state, AFTER];
      const rule = this.#ruleOf(agent, state as SettledState);
      if (rule.count < Infinity) {
        // The most recently settled first (the same instant: the later id first); those past `count` are due.
        const settled: Array<[settledAt: number, id: string]> = [];
        for (const { key, value } of store.read.listed.range({ start: [agent, state], end: [agent, state, AFTER] })) if (typeof value === 'number') settled.push([value, key[2]]);
        settled.sort((a, b) => b[0] - a[0] || (a[1] < b[1] ? 1 : a[1] > b[1] ? -1 : 0));
        for (let i = rule.count; i < settled.length; i++) if (!add(settled[i]![1], settled[i]![0])) return due;
      }
      if (rule.ageMs < Infinity) {
        // A task's id is minted at its submit, never after its settle: every task settled by the
        // horizon has an id minted by then, so the read stops at the first id minted after it.
        // (An id minted while the clock stood behind the previous id's time carries that later
        // time: such a task is found once the horizon passes it.)
        const horizon = now - rule.ageMs;
        for (const { key, value } of store.read.listed.range({ start: [agent, state], end: [agent, state, idTimePrefix(horizon) + AFTER] })) {
          if (typeof value === 'number' && value <= horizon && !add(key[2], value)) return due;
        }
      }
    }
    return due;
  }

  /** The rule for an agent's tasks settled in `state`: the agent's own, else the runtime's. */
  #ruleOf(agent: string, state: SettledState): ResolvedRule {
    return this.#k.agents.get(agent)?.retention?.[state] ?? this.#policy!.rules[state];
  }
}

function firstOf<T>(items: Iterable<T>): T | undefined {
  for (const item of items) return item;
  return undefined;
}
