/**
 * Retention: the background sweep removes settled tasks past their rule (age, count), with an
 * agent's rules over the runtime's and a task's own over its agent's, a parent only with its
 * children; a retry takes a task out of the index it settled into; an older data dir gets the
 * index built at open; bad rules are refused before anything is stored. Time is a ManualClock:
 * each sweep runs when the test moves the clock to it.
 */
import { join } from 'node:path';
import { open } from 'lmdb';
import { describe, expect, it } from 'vitest';
import { builtinAgent, createRuntime, ManualClock, type Runtime, type RuntimeOptions } from 'troupe';
import { rejection, scratchDirs } from '../helpers.js';

const scratch = scratchDirs();
const SWEEP = 1_000;

function agents(): NonNullable<RuntimeOptions['agents']> {
  return [builtinAgent('echo'), builtinAgent('echo', { name: 'other' }), builtinAgent('echo', { name: 'brief', retention: { done: SWEEP } }), builtinAgent('fail', { retry: { maxAttempts: 1 } })];
}

async function openRuntime(options: RuntimeOptions & { clock: ManualClock }): Promise<Runtime> {
  return createRuntime({ logger: false, threads: 1, agents: agents(), starvation: false, ...options });
}

/** Moves the clock by `ms` (a whole number of sweeps' worth) and waits for the sweep that falls due at its end. */
async function sweepAfter(rt: Runtime, clock: ManualClock, ms: number): Promise<void> {
  const before = rt.stats().retention!.sweeps;
  clock.advance(ms);
  while (rt.stats().retention!.sweeps === before) await new Promise((resolve) => setTimeout(resolve, 2));
}

/** Whether the task is still stored. */
async function kept(rt: Runtime, id: string): Promise<boolean> {
  try {
    await rt.get(id);
    return true;
  } catch (error) {
    expect(error).toMatchObject({ code: 'NOT_FOUND' });
    return false;
  }
}

/**
 * Opens a data dir an older build left, with done tasks kept two sweeps: `own` (a rule of its own,
 * one sweep) goes at the first sweep and `plain` at the second. `first` checks the runtime before.
 */
async function sweepsAgain(dataDir: string, clock: ManualClock, plain: string, own: string, first?: (rt: Runtime) => Promise<void>): Promise<void> {
  const again = await openRuntime({ dataDir, clock, retention: { done: 2 * SWEEP, sweepMs: SWEEP } });
  try {
    await first?.(again);
    await sweepAfter(again, clock, SWEEP);
    expect([await kept(again, plain), await kept(again, own)]).toEqual([true, false]);
    await sweepAfter(again, clock, SWEEP);
    expect(await kept(again, plain)).toBe(false);
  } finally {
    await again.close();
  }
}

async function settled(rt: Runtime, spec: Parameters<Runtime['submit']>[0]): Promise<string> {
  const task = await rt.submit(spec);
  await rt.wait(task.id);
  return task.id;
}

describe('retention', () => {
  it('removes tasks past the age of their state, and keeps younger ones and other states', async () => {
    const clock = new ManualClock();
    const rt = await openRuntime({ dataDir: scratch(), clock, retention: { done: SWEEP, failed: 3 * SWEEP, sweepMs: SWEEP } });
    try {
      const oldDone = await settled(rt, { agent: 'echo', input: 1 });
      const failed = await settled(rt, { agent: 'fail', input: { mode: 'result' } });
      expect((await rt.get(failed)).state).toBe('failed');
      clock.advance(SWEEP / 2);
      const youngDone = await settled(rt, { agent: 'echo', input: 2 });

      await sweepAfter(rt, clock, SWEEP / 2);
      expect([await kept(rt, oldDone), await kept(rt, youngDone), await kept(rt, failed)]).toEqual([false, true, true]);
      await sweepAfter(rt, clock, SWEEP);
      expect([await kept(rt, youngDone), await kept(rt, failed)]).toEqual([false, true]);
      // Three sweeps' worth after it failed: its age.
      await sweepAfter(rt, clock, SWEEP);
      expect(await kept(rt, failed)).toBe(false);
      expect(rt.stats().retention).toMatchObject({ sweeps: 3, removed: 3, lastSweepAt: clock.now(), nextSweepAt: clock.now() + SWEEP });
      expect(Object.values(rt.stats().tasks).every((n) => n === 0)).toBe(true);
    } finally {
      await rt.close();
    }
  });

  it('keeps the count most recently settled of each agent in a state', async () => {
    const clock = new ManualClock();
    const rt = await openRuntime({ dataDir: scratch(), clock, retention: { done: { count: 2 }, sweepMs: SWEEP } });
    try {
      const echo: string[] = [];
      for (let n = 0; n < 4; n++) {
        echo.push(await settled(rt, { agent: 'echo', input: n }));
        clock.advance(1);
      }
      const other = [await settled(rt, { agent: 'other', input: 'a' }), await settled(rt, { agent: 'other', input: 'b' })];
      await sweepAfter(rt, clock, SWEEP);
      expect(await Promise.all(echo.map((id) => kept(rt, id)))).toEqual([false, false, true, true]);
      expect(await Promise.all(other.map((id) => kept(rt, id)))).toEqual([true, true]);
      // No age: the two kept stay, however old.
      await sweepAfter(rt, clock, 100 * SWEEP);
      expect(await Promise.all(echo.map((id) => kept(rt, id)))).toEqual([false, false, true, true]);
    } finally {
      await rt.close();
    }
  });

  it('goes by the settle instant, not the submit: a task submitted first that settled again later is younger', async () => {
    const clock = new ManualClock();
    const rt = await openRuntime({ dataDir: scratch(), clock, retention: { failed: 2 * SWEEP + SWEEP / 2, sweepMs: SWEEP } });
    try {
      const late = await settled(rt, { agent: 'fail', input: { mode: 'result' } });
      clock.advance(1);
      const early = await settled(rt, { agent: 'fail', input: { mode: 'result' } });
      await sweepAfter(rt, clock, SWEEP);
      await sweepAfter(rt, clock, SWEEP);
      // The task with the older id fails again, two sweeps after the other failed.
      await rt.retry(late);
      expect((await rt.wait(late)).runs).toBe(2);
      await sweepAfter(rt, clock, SWEEP);
      expect([await kept(rt, late), await kept(rt, early)]).toEqual([true, false]);
      await sweepAfter(rt, clock, SWEEP);
      expect(await kept(rt, late)).toBe(true);
      await sweepAfter(rt, clock, SWEEP);
      expect(await kept(rt, late)).toBe(false);
    } finally {
      await rt.close();
    }
  });

  it('keeps the most recently settled by count, whatever the order of their ids', async () => {
    const clock = new ManualClock();
    const rt = await openRuntime({ dataDir: scratch(), clock, retention: { failed: { count: 1 }, sweepMs: SWEEP } });
    try {
      const first = await settled(rt, { agent: 'fail', input: { mode: 'result' } });
      clock.advance(1);
      const second = await settled(rt, { agent: 'fail', input: { mode: 'result' } });
      clock.advance(1);
      await rt.retry(first);
      expect((await rt.wait(first)).runs).toBe(2);
      await sweepAfter(rt, clock, SWEEP);
      expect([await kept(rt, first), await kept(rt, second)]).toEqual([true, false]);
    } finally {
      await rt.close();
    }
  });

  it('applies an agent’s rule over the runtime’s, and a task’s own over its agent’s', async () => {
    const clock = new ManualClock();
    const rt = await openRuntime({ dataDir: scratch(), clock, retention: { done: 10 * SWEEP, sweepMs: SWEEP } });
    try {
      const plain = await settled(rt, { agent: 'echo', input: 'runtime rule' });
      const brief = await settled(rt, { agent: 'brief', input: 'agent rule' });
      const own = await settled(rt, { agent: 'echo', input: 'own rule', retention: { done: 2 * SWEEP } });
      const forever = await settled(rt, { agent: 'brief', input: 'kept for good', retention: { done: Infinity } });
      expect((await rt.get(own)).retention).toEqual({ done: 2 * SWEEP });

      await sweepAfter(rt, clock, SWEEP);
      expect([await kept(rt, plain), await kept(rt, brief), await kept(rt, own), await kept(rt, forever)]).toEqual([true, false, true, true]);
      await sweepAfter(rt, clock, SWEEP);
      expect([await kept(rt, plain), await kept(rt, own), await kept(rt, forever)]).toEqual([true, false, true]);
      for (let n = 0; n < 8; n++) await sweepAfter(rt, clock, SWEEP);
      expect([await kept(rt, plain), await kept(rt, forever)]).toEqual([false, true]);
    } finally {
      await rt.close();
    }
  });

  it('keeps a parent until its children can go, and removes them first', async () => {
    const clock = new ManualClock();
    const rt = await openRuntime({ dataDir: scratch(), clock, retention: { done: SWEEP, sweepMs: SWEEP } });
    try {
      const parent = await settled(rt, { agent: 'echo', input: 'parent' });
      const child = await settled(rt, { agent: 'echo', input: 'child', parentId: parent, retention: { done: 3 * SWEEP } });
      const grandchild = await settled(rt, { agent: 'echo', input: 'grandchild', parentId: child });
      await sweepAfter(rt, clock, SWEEP);
      // The grandchild is due but its parent is not: it goes alone; the parent waits for the child.
      expect([await kept(rt, parent), await kept(rt, child), await kept(rt, grandchild)]).toEqual([true, true, false]);
      await sweepAfter(rt, clock, SWEEP);
      expect([await kept(rt, parent), await kept(rt, child)]).toEqual([true, true]);
      await sweepAfter(rt, clock, SWEEP);
      expect([await kept(rt, parent), await kept(rt, child)]).toEqual([false, false]);
    } finally {
      await rt.close();
    }
  });

  it('takes a retried task out of the index it settled into: it is kept by the rule of where it settles next', async () => {
    const clock = new ManualClock();
    const dataDir = join(scratch(), 'data');
    const rt = await openRuntime({ dataDir, clock, retention: { failed: 2 * SWEEP, sweepMs: SWEEP } });
    const id = await settled(rt, { agent: 'fail', input: { mode: 'result' } });
    clock.advance(SWEEP / 2);
    await rt.retry(id);
    expect((await rt.wait(id)).runs).toBe(2);
    await sweepAfter(rt, clock, SWEEP / 2);
    await rt.close();
    // One listed entry, valued with its second settle instant.
    expect(indexEntries(dataDir)).toEqual({ listed: [[['fail', 'failed', id], clock.now() - SWEEP / 2]], expiry: [] });
  });

  it('is built at open for a data dir from schema 4, and then removes what is due', async () => {
    const clock = new ManualClock();
    const dataDir = join(scratch(), 'data');
    const first = await openRuntime({ dataDir, clock, retention: false });
    const plain = await settled(first, { agent: 'echo', input: 1 });
    const own = await settled(first, { agent: 'echo', input: 2, retention: { done: SWEEP } });
    await first.close();
    // What a schema 4 build left: no retention indexes, no flag.
    const env = open({ path: dataDir, noSubdir: false, maxDbs: 24 });
    for (const name of ['settled', 'expiry', 'listed']) await env.openDB({ name, sharedStructuresKey: Symbol.for('troupe.structures') }).clearAsync();
    const meta = env.openDB({ name: 'meta', sharedStructuresKey: Symbol.for('troupe.structures') });
    await meta.put('schemaVersion', 4);
    await meta.remove('settledIndexed');
    await env.close();
    expect(indexEntries(dataDir)).toEqual({ listed: [], expiry: [] });

    await sweepsAgain(dataDir, clock, plain, own);
  });

  it('moves a data dir from schema 8 (an index by settle instant beside list()’s) to listed entries holding the settle instant', async () => {
    const clock = new ManualClock();
    const dataDir = join(scratch(), 'data');
    const first = await openRuntime({ dataDir, clock, retention: false });
    const plain = await settled(first, { agent: 'echo', input: 1, labels: { team: 'a' } });
    const own = await settled(first, { agent: 'echo', input: 2, retention: { done: SWEEP } });
    const settledAt = (await first.get(plain)).settledAt!;
    await first.close();
    // What a schema 8 build left: [agent, state, settledAt, id] in `settled`, `true` in `listed`.
    const structures = Symbol.for('troupe.structures');
    const env = open({ path: dataDir, noSubdir: false, maxDbs: 24 });
    const listed = env.openDB({ name: 'listed', sharedStructuresKey: structures });
    for (const { key } of [...listed.getRange()]) await listed.put(key, true);
    await env.openDB({ name: 'settled', sharedStructuresKey: structures }).put(['echo', 'done', settledAt, plain], true);
    const meta = env.openDB({ name: 'meta', sharedStructuresKey: structures });
    await meta.put('schemaVersion', 8);
    await meta.put('settledIndexed', true);
    await meta.put('listedIndexed', true);
    await meta.remove('settledEntriesIndexed');
    await env.close();

    await sweepsAgain(dataDir, clock, plain, own, async (again) => {
      expect(again.stats().tasks.done).toBe(2);
      expect(await again.list({ labels: { team: 'a' } })).toMatchObject({ tasks: [{ id: plain }] });
    });
    const after = open({ path: dataDir, noSubdir: false, maxDbs: 24, readOnly: true });
    try {
      expect([...after.openDB({ name: 'settled', sharedStructuresKey: structures }).getKeys()]).toEqual([]);
      expect(after.openDB({ name: 'meta', sharedStructuresKey: structures }).get('schemaVersion')).toBe(9);
    } finally {
      await after.close();
    }
  });

  it('counts the stored settled tasks at open from its indexes: those under their agent’s rule, their own, or kept for good', async () => {
    const clock = new ManualClock();
    const dataDir = join(scratch(), 'data');
    const first = await openRuntime({ dataDir, clock });
    await settled(first, { agent: 'echo', input: 1 });
    await settled(first, { agent: 'other', input: 2 });
    await settled(first, { agent: 'echo', input: 3, retention: { done: 5 * SWEEP } });
    await settled(first, { agent: 'echo', input: 4, retention: { done: Infinity } });
    await settled(first, { agent: 'fail', input: { mode: 'result' }, retention: { failed: Infinity } });
    await first.close();
    const again = await openRuntime({ dataDir, clock });
    try {
      const stats = again.stats();
      expect(stats.tasks).toMatchObject({ done: 4, failed: 1 });
      expect(stats.agents.echo!.tasks).toEqual({ done: 3 });
      expect(stats.agents.other!.tasks).toEqual({ done: 1 });
      expect(stats.agents.fail!.tasks).toEqual({ failed: 1 });
    } finally {
      await again.close();
    }
  });

  it('with retention: false arms nothing and reports null', async () => {
    const clock = new ManualClock();
    const rt = await openRuntime({ dataDir: scratch(), clock, retention: false });
    try {
      const id = await settled(rt, { agent: 'echo', input: 1 });
      expect(rt.stats().retention).toBeNull();
      expect(clock.pending).toBe(0);
      clock.advance(365 * 86_400_000);
      expect(await kept(rt, id)).toBe(true);
    } finally {
      await rt.close();
    }
  });

  it('refuses bad rules before anything is stored: runtime, agent and task', async () => {
    const clock = new ManualClock();
    const dataDir = scratch();
    for (const retention of [{ done: -1 }, { done: { ageMs: 1.5 } }, { finished: 1 }, { done: { count: -2 } }, { done: { age: 1 } }, { sweepMs: 0 }, 'forever', [1]]) {
      await expect(openRuntime({ dataDir, clock, retention: retention as never })).rejects.toMatchObject({ code: 'INVALID_OPTIONS', message: expect.stringContaining('options.retention') });
    }
    const rt = await openRuntime({ dataDir, clock });
    try {
      expect(() => rt.agents.register(builtinAgent('echo', { name: 'bad', retention: { queued: 1 } as never }))).toThrow(expect.objectContaining({ code: 'INVALID_OPTIONS', message: expect.stringContaining('agent bad: retention.queued is not a settled state') }));
      for (const retention of [{ done: { count: 1 } }, { done: -5 }, { running: 1 }, 7]) {
        const error = await rejection(rt.submit({ agent: 'echo', retention: retention as never }));
        expect(error).toMatchObject({ code: 'INVALID_INPUT', message: expect.stringContaining('retention') });
      }
      expect((await rt.list()).tasks).toEqual([]);
      expect(rt.stats().retention).toMatchObject({ sweeps: 0, removed: 0, nextSweepAt: clock.now() + 60_000 });
    } finally {
      await rt.close();
    }
  });
});

/** The retention index entries of a closed data dir. */
function indexEntries(dataDir: string): { listed: unknown[]; expiry: unknown[] } {
  const env = open({ path: dataDir, noSubdir: false, maxDbs: 24, readOnly: true });
  try {
    const db = (name: string) => env.openDB({ name, sharedStructuresKey: Symbol.for('troupe.structures') });
    return { listed: [...db('listed').getRange()].map(({ key, value }) => [key, value]), expiry: [...db('expiry').getKeys()] };
  } finally {
    void env.close();
  }
}

describe('event log retention', () => {
  it('removes events past eventsMs; an older cursor is CURSOR_EXPIRED naming the oldest one left, across a restart', async () => {
    const clock = new ManualClock();
    const dataDir = scratch();
    const options = { dataDir, clock, retention: { done: Infinity, eventsMs: 2 * SWEEP, sweepMs: SWEEP } };
    const rt = await openRuntime(options);
    let reopened: Runtime | undefined;
    try {
      const early = await settled(rt, { agent: 'echo', input: 'early' });
      const earlyEvents = await collect(rt, {}, early);
      await sweepAfter(rt, clock, SWEEP);
      clock.advance(SWEEP / 2);
      const late = await settled(rt, { agent: 'echo', input: 'late' });
      // Two sweeps' worth after the early task's events: nothing older than that yet.
      await sweepAfter(rt, clock, SWEEP / 2);
      expect(rt.stats().retention!.eventsRemoved).toBe(0);
      // Past them, not past the late task's.
      await sweepAfter(rt, clock, SWEEP);
      expect(rt.stats().retention!.eventsRemoved).toBeGreaterThanOrEqual(earlyEvents.length);
      expect(await kept(rt, early)).toBe(true);
      const left = await collect(rt, {}, late);
      expect(left.some((e) => e.taskId === early)).toBe(false);
      expect(left.some((e) => e.taskId === late)).toBe(true);

      const expired = await rejection(collect(rt, { after: earlyEvents[0]!.cursor }, late));
      expect(expired).toMatchObject({ code: 'CURSOR_EXPIRED', message: expect.stringMatching(/the oldest cursor still available is \d+/) });
      const oldest = /the oldest cursor still available is (\d+)/.exec(expired.message)![1]!;
      expect(Number(oldest)).toBeGreaterThanOrEqual(earlyEvents.at(-1)!.seq);
      expect(await collect(rt, { after: oldest }, late)).toEqual(left);
      await rt.close();

      reopened = await openRuntime({ ...options, retention: false });
      expect(await rejection(collect(reopened, { after: 0 }, late))).toMatchObject({ code: 'CURSOR_EXPIRED' });
      expect(await collect(reopened, { after: Number(oldest) }, late)).toEqual(left);
    } finally {
      await rt.close();
      await reopened?.close();
    }
  });
});

/** The stored events of `rt` after `after`, up to the `task.done` of task `until`. */
async function collect(rt: Runtime, options: { after?: string | number }, until: string): Promise<Array<{ seq: number; cursor: string; taskId?: string }>> {
  const out: Array<{ seq: number; cursor: string; taskId?: string }> = [];
  for await (const event of rt.events(options)) {
    out.push({ seq: event.seq, cursor: event.cursor, taskId: event.taskId });
    if (event.type === 'task.done' && event.taskId === until) break;
  }
  return out;
}
