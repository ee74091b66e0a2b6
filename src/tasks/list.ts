/**
 * `rt.list()`: tasks by state, agent, parent and labels, a page at a time in id (submit) order.
 *
 * Each page is read from indexes, so that its cost does not grow with the settled tasks a data dir
 * keeps: a parent's children from the children index; tasks not settled from the active index
 * (as many as the work in hand); settled ones from the `listed` index, one range per agent and
 * state asked for, or from the `labelled` index under one of the labels asked for. The ranges are
 * merged by id, and every id is checked against its task, whose record has the last word (an
 * index entry may be stale for a moment, as a retried task's).
 */
import { isTerminal, TASK_STATES, type TaskState } from '../../machines/index.js';
import { TroupeError } from '../errors.js';
import { checkId } from '../ids.js';
import { checkCallOptions } from '../options.js';
import type { Store } from '../store/port.js';
import { isIndexedLabel, type TaskRecord } from '../store/records.js';
import { childIdsOf } from './parts.js';
import { labelsOf, toTask, type Task } from './spec.js';
import type { TaskTable } from './task-table.js';

export type { ListOptions, TaskPage } from '../api/tasks.js';
import type { ListOptions, TaskPage } from '../api/tasks.js';

const LIST_OPTIONS = ['state', 'agent', 'parentId', 'labels', 'limit', 'after'] as const satisfies ReadonlyArray<keyof ListOptions>;
const SETTLED_STATES = TASK_STATES.filter((state) => isTerminal(state));
/** After every string key part (ids, names, states). */
const AFTER = '\uffff';

/** One page of tasks (see the module comment). Throws INVALID_OPTIONS / INVALID_INPUT for a bad filter. */
export function listTasks(store: Store, table: TaskTable, options: ListOptions = {}): TaskPage {
  const { state, agent, parentId, after, limit, labels } = checkListOptions(options);
  const keep = (t: TaskRecord) =>
    (!state || t.state === state) && (!agent || t.agent === agent) && (!parentId || t.parentId === parentId) && labels.every(([label, value]) => t.labels?.[label] === value);
  const tasks: Task[] = [];
  for (const id of mergeById(sources(store, { state, agent, parentId, labels, after: after ?? '' }))) {
    if (after !== undefined && id <= after) continue;
    const record = table.get(id) ?? store.read.tasks.get(id);
    if (!record || !keep(record)) continue;
    tasks.push(toTask(record));
    if (tasks.length === limit) return { tasks, next: id };
  }
  return { tasks, next: null };
}

/** `rt.list()`'s options, checked (INVALID_OPTIONS / INVALID_INPUT naming the bad one), with the default limit and the labels as entries. */
export function checkListOptions(options: ListOptions = {}): Omit<ListOptions, 'labels' | 'limit'> & { limit: number; labels: Array<[string, string]> } {
  checkCallOptions(options, LIST_OPTIONS, 'list');
  const { state, agent, parentId, after } = options;
  if (agent !== undefined) checkId(agent, 'list: agent');
  if (parentId !== undefined) checkId(parentId, 'list: parentId');
  const limit = options.limit ?? 100;
  if (!Number.isInteger(limit) || limit < 1 || limit > 1000) throw new TroupeError('INVALID_INPUT', 'list: limit must be an integer in 1..1000');
  if (state !== undefined && !TASK_STATES.includes(state)) throw new TroupeError('INVALID_INPUT', `list: unknown state ${JSON.stringify(state)}`);
  if (after !== undefined) checkId(after, 'list: after (a cursor)');
  const labels = options.labels === undefined ? [] : Object.entries(labelsOf(options.labels, 'list'));
  return { state, agent, parentId, after, limit, labels };
}

interface Filter {
  state: TaskState | undefined;
  agent: string | undefined;
  parentId: string | undefined;
  labels: Array<[string, string]>;
  after: string;
}

/** The id ranges a page is read from, each in id order from `after` on. */
function sources(store: Store, { state, agent, parentId, labels, after }: Filter): Array<Iterable<string>> {
  if (parentId !== undefined) return [childIdsOf(store, parentId, after)];
  const out: Array<Iterable<string>> = [];
  if (state === undefined || !isTerminal(state)) out.push(store.read.active.keys({ start: after }));
  if (state !== undefined && !isTerminal(state)) return out;
  if (labels.length > 0) {
    const [label, value] = indexedLabel(labels);
    out.push(idsOf(store.read.labelled.keys({ start: [label, value, after], end: [label, value, AFTER] })));
    return out;
  }
  for (const name of agent !== undefined ? [agent] : agentsListed(store)) {
    for (const settled of state !== undefined ? [state] : SETTLED_STATES) out.push(idsOf(store.read.listed.keys({ start: [name, settled, after], end: [name, settled, AFTER] })));
  }
  return out;
}

/**
 * The label a filter's settled tasks are read by: one short enough for the `labelled` index, or
 * INVALID_INPUT. A filter of a state not settled needs none (the active tasks are read whole).
 */
export function indexedLabel(labels: ReadonlyArray<[string, string]>): [string, string] {
  const indexed = labels.find(([label, value]) => isIndexedLabel(label, value));
  if (!indexed) throw new TroupeError('INVALID_INPUT', 'list: labels must include one short enough to be indexed (a label and its value within 1,024 bytes together, without control characters)');
  return indexed;
}

/** Refuses a label filter as {@link listTasks} does (for a store that reads labels otherwise, and must refuse alike). */
export function checkLabelFilter(state: TaskState | undefined, labels: ReadonlyArray<[string, string]>): void {
  if (labels.length > 0 && (state === undefined || isTerminal(state))) indexedLabel(labels);
}

/** The agents that have settled tasks in the `listed` index, one range read per agent. */
function agentsListed(store: Store): string[] {
  const agents: string[] = [];
  for (let from: [string, string] | [] = []; ; ) {
    let first: [string, string, string] | undefined;
    for (const key of store.read.listed.keys({ start: from, limit: 1 })) first = key;
    if (first === undefined) return agents;
    agents.push(first[0]);
    from = [first[0], AFTER];
  }
}

function* idsOf(keys: Iterable<[string, string, string]>): Generator<string> {
  for (const key of keys) yield key[2];
}

/** Ids of several ascending sources in one ascending sequence, each id once. */
export function* mergeById(sources: ReadonlyArray<Iterable<string>>): Generator<string> {
  const iterators = sources.map((source) => source[Symbol.iterator]());
  const heads: Array<string | undefined> = iterators.map((it) => it.next().value as string | undefined);
  try {
    for (;;) {
      let min: string | undefined;
      for (const head of heads) if (head !== undefined && (min === undefined || head < min)) min = head;
      if (min === undefined) return;
      yield min;
      for (let i = 0; i < heads.length; i++) {
        while (heads[i] !== undefined && heads[i]! <= min) heads[i] = iterators[i]!.next().value as string | undefined;
      }
    }
  } finally {
    // A page ends before its sources do: let go of their read transactions.
    for (const it of iterators) it.return?.();
  }
}
