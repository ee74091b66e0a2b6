/**
 * `list()` without a store: the sources a page merges, how many task records a page reads (the
 * ones it returns, not every settled task), and the overlay's view of the list() indexes.
 */
import { describe, expect, it } from 'vitest';
import { listTasks, mergeById } from '../../src/tasks/list.js';
import { TaskTable } from '../../src/tasks/task-table.js';
import { compareKeys, Overlay, REMOVED } from '../../src/store/lmdb/overlay.js';
import { settledListOf } from '../../src/store/lmdb/reads.js';
import { createTaskRecord, settledIndexEntries, type TaskRecord } from '../../src/store/records.js';
import type { Key, RangeOptions, SafeDatabase, Store } from '../../src/store/port.js';

function task(id: string, agent: string, state: TaskRecord['state'], labels: Record<string, string> = {}): TaskRecord {
  const record = createTaskRecord({ id, agent, state, input: null, priority: 0, lane: 'default', instanceKey: `${agent}/default/x`, labels, timeoutMs: 0, retry: { maxAttempts: 1, backoff: 'none', baseMs: 0, maxMs: 0 } as never, runReason: 'submit', createdAt: 1 });
  return state === 'done' || state === 'failed' || state === 'dropped' || state === 'cancelled' ? { ...record, settledAt: 2 } : record;
}

/** A read-only database over sorted keys that counts what it hands out. */
function database<K extends Key, V>(entries: Array<[K, V]>, counts: { yielded: number; gets: number }): SafeDatabase<V, K> {
  const sorted = [...entries].sort((a, b) => compareKeys(a[0], b[0]));
  function* range(options: RangeOptions = {}) {
    let left = options.limit ?? Infinity;
    for (const [key, value] of sorted) {
      if (options.start !== undefined && compareKeys(key, options.start) < 0) continue;
      if (options.end !== undefined && compareKeys(key, options.end) >= 0) return;
      if (left-- <= 0) return;
      counts.yielded++;
      yield { key, value };
    }
  }
  return {
    get: (key) => {
      counts.gets++;
      return sorted.find(([k]) => compareKeys(k, key) === 0)?.[1];
    },
    range,
    *keys(options) {
      for (const { key } of range(options)) yield key;
    },
    has: (key) => sorted.some(([k]) => compareKeys(k, key) === 0),
  };
}

describe('listTasks', () => {
  const tasks = [
    ...Array.from({ length: 2_000 }, (_, n) => task(`t${String(n).padStart(5, '0')}`, 'a', 'done', { team: n % 2 ? 'x' : 'y' })),
    task('t00500x', 'b', 'failed', { team: 'x' }),
    task('t01500x', 'a', 'failed'),
    task('t01999x', 'b', 'failed'),
  ];
  const counts = { tasks: { yielded: 0, gets: 0 }, listed: { yielded: 0, gets: 0 }, labelled: { yielded: 0, gets: 0 }, other: { yielded: 0, gets: 0 } };
  const store = {
    read: {
      tasks: database(tasks.map((t) => [t.id, t] as [string, TaskRecord]), counts.tasks),
      active: database<string, true>([], counts.other),
      children: database<[string, string], true>([], counts.other),
      listed: database(tasks.map((t) => [[t.agent, t.state, t.id], true] as [[string, string, string], true]), counts.listed),
      labelled: database(tasks.flatMap((t) => Object.entries(t.labels).map(([k, v]) => [[k, v, t.id], true] as [[string, string, string], true])), counts.labelled),
    },
  } as unknown as Store;
  const table = new TaskTable(() => [], () => true);
  const reset = () => Object.values(counts).forEach((c) => Object.assign(c, { yielded: 0, gets: 0 }));

  it('reads the records a page returns, from the ranges of the state asked for, not every settled task', () => {
    reset();
    const page = listTasks(store, table, { state: 'failed', limit: 2 });
    expect(page.tasks.map((t) => t.id)).toEqual(['t00500x', 't01500x']);
    expect(page.next).toBe('t01500x');
    expect(counts.tasks.gets).toBe(2);
    // Two agents' failed ranges, read ahead by at most one key each, and one probe per agent for the agents.
    expect(counts.listed.yielded).toBeLessThanOrEqual(2 + 2 + 3);
    reset();
    expect(listTasks(store, table, { state: 'failed', after: page.next! }).tasks.map((t) => t.id)).toEqual(['t01999x']);
    expect(counts.tasks.gets).toBe(1);
  });

  it('reads by agent and state from one range, and by label from the label index', () => {
    reset();
    expect(listTasks(store, table, { agent: 'b', state: 'failed' }).tasks.map((t) => t.id)).toEqual(['t00500x', 't01999x']);
    expect(counts.tasks.gets).toBe(2);
    reset();
    const x = listTasks(store, table, { labels: { team: 'x' }, state: 'failed' });
    expect(x.tasks.map((t) => t.id)).toEqual(['t00500x']);
    // The team=x range is 1,001 long: the page reads it all to find the failed one, but no other range.
    expect(counts.labelled.yielded).toBe(1_001);
    expect(counts.listed.yielded).toBe(0);
  });

  it('merges every agent and state in id order when no filter is given', () => {
    reset();
    const page = listTasks(store, table, { limit: 3, after: 't00499' });
    expect(page.tasks.map((t) => t.id)).toEqual(['t00500', 't00500x', 't00501']);
    expect(counts.tasks.gets).toBe(3);
  });
});

describe('mergeById', () => {
  it('merges ascending sources into one ascending sequence, each id once', () => {
    expect([...mergeById([['a', 'c', 'e'], ['b', 'c', 'f'], [], ['a', 'g']])]).toEqual(['a', 'b', 'c', 'e', 'f', 'g']);
  });

  it('lets go of every source when the reader stops early', () => {
    const closed: string[] = [];
    const source = (name: string, ids: string[]) => ({
      *[Symbol.iterator]() {
        try {
          yield* ids;
        } finally {
          closed.push(name);
        }
      },
    });
    for (const id of mergeById([source('one', ['a', 'b', 'c']), source('two', ['b', 'd'])])) if (id === 'b') break;
    expect(closed.sort()).toEqual(['one', 'two']);
  });
});

describe('settledListOf', () => {
  it('gives the overlay’s settled tasks under their index keys, in key order and bounds, and nothing for the others', () => {
    const overlay = new Overlay(1);
    const listed = settledListOf(overlay, 0, 'listed');
    const labelled = settledListOf(overlay, 0, 'labelled');
    overlay.set(0, 't2', task('t2', 'a', 'failed', { team: 'x' }), 1);
    overlay.set(0, 't1', task('t1', 'a', 'done', { team: 'x' }), 1);
    overlay.set(0, 't3', task('t3', 'a', 'queued', { team: 'x' }), 1);
    overlay.set(0, 't4', REMOVED, 1);
    expect(listed.entries({}).map((e) => e.key)).toEqual([['a', 'done', 't1'], ['a', 'failed', 't2']]);
    expect(listed.entries({ start: ['a', 'failed', ''], end: ['a', 'failed', '\uffff'] }).map((e) => e.key)).toEqual([['a', 'failed', 't2']]);
    expect(listed.entries({ reverse: true }).map((e) => e.key)).toEqual([['a', 'failed', 't2'], ['a', 'done', 't1']]);
    expect(labelled.entries({}).map((e) => e.key)).toEqual([['team', 'x', 't1'], ['team', 'x', 't2']]);
    // A listed entry holds the task's settle instant (the helper's tasks settled at 2).
    expect(listed.get(['a', 'done', 't1'])).toBe(2);
    expect(labelled.get(['team', 'x', 't1'])).toBe(true);
    // The database may hold an entry of an earlier state, or of a task since removed: not any more.
    expect(listed.get(['a', 'failed', 't1'])).toBe(REMOVED);
    expect(listed.get(['a', 'done', 't3'])).toBe(REMOVED);
    expect(listed.get(['a', 'done', 't4'])).toBe(REMOVED);
    expect(listed.get(['a', 'done', 't9'])).toBeUndefined();
    // A change to the overlay is seen by the next read.
    overlay.set(0, 't0', task('t0', 'a', 'done'), 2);
    expect(listed.entries({}).map((e) => e.key)).toEqual([['a', 'done', 't0'], ['a', 'done', 't1'], ['a', 'failed', 't2']]);
  });
});

describe('settledIndexEntries', () => {
  it('gives the listed entry (valued with the settle instant, or false under a rule of its own, which has its expiry entry) and the labelled ones', () => {
    const base = task('t1', 'echo', 'failed', { model: 'opus', huge: 'x'.repeat(2_000), 'bad\u0001': 'v' });
    expect(settledIndexEntries(base)).toEqual([
      ['listed', ['echo', 'failed', 't1'], 2],
      ['labelled', ['model', 'opus', 't1'], true],
    ]);
    expect(settledIndexEntries({ ...base, labels: {}, retention: { failed: 60_000 } })).toEqual([
      ['expiry', [60_002, 't1'], true],
      ['listed', ['echo', 'failed', 't1'], false],
    ]);
    expect(settledIndexEntries({ ...base, labels: {}, retention: { failed: Infinity } })[0]).toEqual(['expiry', [Infinity, 't1'], true]);
    // A rule for another state is not this one's.
    expect(settledIndexEntries({ ...base, labels: {}, retention: { done: 1 } })).toEqual([['listed', ['echo', 'failed', 't1'], 2]]);
    expect(settledIndexEntries(task('t2', 'echo', 'queued'))).toEqual([]);
  });
});
