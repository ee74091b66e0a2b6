/**
 * A filtered events() iteration (taskId, types) keeps only the live events it will yield: one
 * read slowly, or not at all for a while, holds nothing for the other tasks' events, and one
 * waiting is not woken by them. Before, every live event was buffered and only then filtered, so a
 * dashboard page following one task held every event of a busy runtime.
 */
import { describe, expect, it } from 'vitest';
import { EventBus, type RuntimeEvent } from '../../src/events/event-bus.js';
import type { SafeDatabase } from '../../src/store/port.js';
import type { EventRecord } from '../../src/store/records.js';

const emptyLog = {
  get: () => undefined,
  has: () => false,
  keys: () => [],
  *range() {},
} satisfies SafeDatabase<EventRecord, number>;

/** Events of other tasks; `touched` counts reads of their seq once `counting` is on. */
function otherTasks(from: number, n: number) {
  const seen = { touched: 0, counting: false };
  const records = Array.from({ length: n }, (_, i) => {
    const seq = from + i;
    const record = { at: 1_000 + seq, type: 'task.queued', taskId: `other${seq}` } as EventRecord;
    Object.defineProperty(record, 'seq', {
      enumerable: true,
      get: () => {
        if (seen.counting) seen.touched++;
        return seq;
      },
    });
    return record;
  });
  return { records, seen };
}

const mine = (seq: number): EventRecord => ({ seq, at: 1_000 + seq, type: 'task.queued', taskId: 'mine' }) as EventRecord;

describe('EventBus: a filtered live iteration', () => {
  it('holds none of the events it filters out while its reader is away, and yields the next one it wants', async () => {
    const bus = new EventBus(emptyLog, () => () => undefined);
    const stream = bus.iterate({ taskId: 'mine' });
    const first = stream.next();
    bus.publish([mine(1)]);
    expect((await first).value).toMatchObject({ seq: 1, taskId: 'mine' });
    // The reader is away: 10,000 events of other tasks are published meanwhile.
    const others = otherTasks(2, 10_000);
    bus.publish(others.records);
    bus.publish([mine(10_002)]);
    // A stream reads the seq of every event it kept (to skip what its replay gave): it kept none of theirs.
    others.seen.counting = true;
    expect((await stream.next()).value).toMatchObject({ seq: 10_002, taskId: 'mine' });
    expect(others.seen.touched).toBe(0);
    await stream.return(undefined);
  });

  it('is not woken, nor holds the process again, for events it filters out', async () => {
    let holds = 0;
    const bus = new EventBus(emptyLog, () => (holds++, () => undefined));
    const stream = bus.iterate({ types: ['task.done'] });
    const next = stream.next();
    // One at a time, each let run to its end: a woken iteration would wait (and hold) again after each.
    for (const record of otherTasks(1, 1_000).records) {
      bus.publish([record]);
      await new Promise(setImmediate);
    }
    bus.publish([{ seq: 1_001, at: 1, type: 'task.done', taskId: 't', data: {} } as unknown as EventRecord]);
    expect((await next).value).toMatchObject({ seq: 1_001, type: 'task.done' } satisfies Partial<RuntimeEvent>);
    expect(holds).toBe(1);
    await stream.return(undefined);
  });
});
