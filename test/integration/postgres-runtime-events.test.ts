/**
 * `events()` on PostgreSQL at two edges: a replay from a cursor inside a batch of many events with
 * more than a page after it, and a runtime opened on a log that retention emptied.
 */
import { describe, expect, it } from 'vitest';
import { builtinAgent, type RuntimeEvent } from 'troupe';
import { sweepRetention } from '../../src/store/postgres/retention.js';
import { scratchPools } from '../helpers.js';
import { pgRuntimes } from '../pg-runtime.js';

const pools = scratchPools();
const runtime = pgRuntimes();

/** Reads `events` until `stop` says so (it must: the caller wrote the event it waits for). */
async function readUntil(iterable: AsyncIterable<RuntimeEvent>, stop: (e: RuntimeEvent) => boolean): Promise<RuntimeEvent[]> {
  const got: RuntimeEvent[] = [];
  for await (const event of iterable) {
    got.push(event);
    if (stop(event)) break;
  }
  return got;
}

describe('events() on PostgreSQL', () => {
  it('replays every event after a cursor inside a batch, with more than a page of them after it', async () => {
    const { url } = await pools({ max: 4 });
    const rt = await runtime(url, { agents: [builtinAgent('echo')] });
    await rt.freeze('only submits in the log');
    // One statement, one batch of ten task.queued; then 600 more in batches of ten. A page of 500
    // from the fifth event is chosen as fifty whole batches, the first five of their events before
    // the cursor: 495 events, and a short page is not the end of the log.
    const first = await rt.submitMany(Array.from({ length: 10 }, (_, i) => ({ agent: 'echo', input: i })));
    for (let n = 0; n < 60; n++) await rt.submitMany(Array.from({ length: 10 }, (_, i) => ({ agent: 'echo', input: 100 * n + i })));
    await rt.unfreeze();
    const all = await readUntil(rt.events(), (e) => e.type === 'runtime.unfrozen');
    const fifth = all.findIndex((e) => e.type === 'task.queued' && e.taskId === first[4]!.id);
    expect(fifth).toBeGreaterThan(0);
    const after = await readUntil(rt.events({ after: all[fifth]!.cursor }), (e) => e.type === 'runtime.unfrozen');
    expect(after.map((e) => e.cursor)).toEqual(all.slice(fifth + 1).map((e) => e.cursor));
  });

  it('streams live events on a runtime opened after retention emptied the log', async () => {
    const { url, pool } = await pools({ max: 4 });
    const before = await runtime(url, { agents: [builtinAgent('echo')] });
    await before.freeze('old');
    await before.unfreeze();
    await before.close();
    const keep = { ageMs: Number.POSITIVE_INFINITY, count: Number.POSITIVE_INFINITY };
    await sweepRetention(pool, { rules: { done: keep, failed: keep, dropped: keep, cancelled: keep }, eventsMs: 0 });
    expect((await pool.query('SELECT count(*)::int AS n FROM troupe_event_batches')).rows[0].n).toBe(0);
    const rt = await runtime(url, { agents: [builtinAgent('echo')] });
    const live = readUntil(rt.events(), (e) => e.type === 'task.done');
    const task = await rt.submit({ agent: 'echo', input: 'after the sweep' });
    await rt.wait(task.id);
    expect((await live).map((e) => e.type)).toEqual(['task.queued', 'task.started', 'task.done']);
  });
});
