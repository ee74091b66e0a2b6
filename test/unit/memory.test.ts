/**
 * TaskMemory: a step's task record goes into the table, and the task's governor membership follows
 * from it (queued with no `runAt` waits there, anything else does not). It asks the governor only
 * about tasks whose version before this one waited: the others cannot be there.
 */
import { describe, expect, it } from 'vitest';
import { createGovernor, type Governor } from '../../src/governor/governor.js';
import { TaskMemory } from '../../src/pipeline/memory.js';
import { createTaskRecord, type TaskRecord } from '../../src/store/records.js';
import { TaskTable } from '../../src/tasks/task-table.js';

/** A governor that counts the membership lookups TaskMemory makes. */
function counted(): { governor: Governor; calls: { has: number; remove: number; enqueue: number } } {
  const governor = createGovernor({ slots: 10, instanceAdmits: () => true });
  governor.setAgent('a', null);
  const calls = { has: 0, remove: 0, enqueue: 0 };
  const has = governor.has.bind(governor);
  const remove = governor.remove.bind(governor);
  const enqueue = governor.enqueue.bind(governor);
  governor.has = (taskId) => (calls.has++, has(taskId));
  governor.remove = (taskId) => (calls.remove++, remove(taskId));
  governor.enqueue = (entry) => (calls.enqueue++, enqueue(entry));
  return { governor, calls };
}

function setup() {
  const { governor, calls } = counted();
  const table = new TaskTable(() => [], () => false);
  let queuedSignals = 0;
  const memory = new TaskMemory(table, governor, () => queuedSignals++);
  return { governor, calls, table, memory, queued: () => queuedSignals };
}

let order = 0;
function task(id: string, patch: Partial<TaskRecord> = {}): TaskRecord {
  const record = createTaskRecord({ id, agent: 'a', state: 'queued', input: null, priority: 0, lane: 'default', instanceKey: 'i', labels: {}, timeoutMs: 0, retry: { maxAttempts: 1, backoff: 'fixed', delayMs: 0, maxDelayMs: 0, jitter: 0 }, runReason: 'submit', createdAt: 1 });
  return { ...record, queuedOrder: ++order, ...patch };
}

describe('TaskMemory', () => {
  it('queues a new queued task without asking the governor whether it holds it', () => {
    const { governor, calls, memory, queued } = setup();
    memory.putTask(task('t1'));
    expect(calls).toEqual({ has: 0, enqueue: 1, remove: 0 });
    expect(governor.has('t1')).toBe(true);
    expect(queued()).toBe(1);
  });

  it('takes a task that leaves queued out of the governor, and asks nothing for one that never waited', () => {
    const { governor, calls, memory } = setup();
    const queuedTask = task('t1');
    memory.putTask(queuedTask);
    const running = { ...queuedTask, state: 'running' as const };
    memory.putTask(running);
    expect(calls.remove).toBe(1);
    memory.putTask({ ...running, state: 'done' as const });
    expect(calls.remove).toBe(1);
    expect(governor.stats().queued).toBe(0);
  });

  it('leaves a waiting task queued once when a later version still waits', () => {
    const { governor, calls, memory, queued } = setup();
    const first = task('t1');
    memory.putTask(first);
    memory.putTask({ ...first, priority: 0, updatedAt: 5 });
    expect(calls).toEqual({ has: 1, enqueue: 1, remove: 0 });
    expect(governor.stats().queued).toBe(1);
    expect(queued()).toBe(1);
  });

  it('queues a task again once its delayed start is over, and not while it lasts', () => {
    const { governor, calls, memory } = setup();
    const delayed = task('t1', { runAt: 1_000 });
    memory.putTask(delayed);
    expect(governor.stats().queued).toBe(0);
    expect(calls).toEqual({ has: 0, enqueue: 0, remove: 0 });
    memory.putTask({ ...delayed, runAt: undefined });
    expect(governor.stats().queued).toBe(1);
    memory.putTask({ ...delayed, runAt: 2_000 });
    expect(governor.stats().queued).toBe(0);
    expect(calls.remove).toBe(1);
  });

  it('queues a settled task a retry brings back, whether the table still held it or not', () => {
    const { governor, table, memory } = setup();
    const done = task('t1', { state: 'done', settledAt: 3 });
    memory.putTask(done);
    memory.putTask({ ...done, state: 'queued', settledAt: undefined });
    expect(governor.has('t1')).toBe(true);
    const other = task('t2', { state: 'failed', settledAt: 3 });
    memory.putTask(other);
    table.retire(other);
    memory.putTask({ ...other, state: 'queued', settledAt: undefined });
    expect(governor.has('t2')).toBe(true);
    expect(governor.stats().queued).toBe(2);
  });
});
