import { describe, expect, it } from 'vitest';
import { createGovernor, type Governor, type GovernorEntry } from '../../src/governor/governor.js';
import { prng } from '../fixtures/prng.js';

let seq = 0;
function entry(taskId: string, agent = 'a', instanceKey = `i-${taskId}`, priority = 0): GovernorEntry {
  return { taskId, agent, instanceKey, priority, order: ++seq };
}

function harness(slots = 100): { g: Governor; blocked: Set<string> } {
  const blocked = new Set<string>();
  const g = createGovernor({ slots, instanceAdmits: (key) => !blocked.has(key) });
  g.setAgent('a', null);
  return { g, blocked };
}

/** Lets every already-queued promise reaction run (microtasks only: no timers, no clock). */
async function settle(): Promise<void> {
  for (let i = 0; i < 10; i++) await Promise.resolve();
}

/** A promise plus what it has settled to so far, read after {@link settle}. */
function track<T>(promise: Promise<T>): { promise: Promise<T>; value?: T; error?: unknown; settled: boolean } {
  const t: { promise: Promise<T>; value?: T; error?: unknown; settled: boolean } = { promise, settled: false };
  promise.then(
    (value) => Object.assign(t, { value, settled: true }),
    (error: unknown) => Object.assign(t, { error, settled: true }),
  );
  return t;
}

describe('governor tryReserve', () => {
  it('picks exactly what next() picks, and the two share one set of reservations', () => {
    const build = () => {
      const h = harness(3);
      h.g.setAgent('b', 1);
      return h;
    };
    const viaTry = build();
    const viaNext = build();
    const ops = (g: Governor, take: () => GovernorEntry | undefined): string[] => {
      const log: string[] = [];
      seq = 0;
      for (const [id, agent, inst, prio] of [['p', 'a', 'x', 1], ['q', 'b', 'y', 0], ['r', 'a', 'x', 0], ['s', 'b', 'z', 0], ['t', 'a', 'w', 0]] as const) {
        g.enqueue(entry(id, agent, inst, prio));
      }
      for (let i = 0; i < 4; i++) log.push(take()?.taskId ?? '-');
      g.release(entry('q', 'b'));
      for (let i = 0; i < 3; i++) log.push(take()?.taskId ?? '-');
      log.push(`r${g.reserved}q${g.queued}`);
      return log;
    };
    const a = ops(viaTry.g, () => viaTry.g.tryReserve());
    const b = ops(viaNext.g, () => viaNext.g.next());
    expect(a).toEqual(b);
    expect(a).toEqual(['q', 'r', 't', '-', 's', '-', '-', 'r3q1']);

    // Mixed on one governor: an entry next() reserved is released as one tryReserve() reserved.
    const { g } = harness(1);
    g.enqueue(entry('m1'));
    g.enqueue(entry('m2'));
    const first = g.next();
    expect(g.tryReserve()).toBeUndefined();
    g.release(first as GovernorEntry);
    expect(g.tryReserve()?.taskId).toBe('m2');
  });
});

describe('governor reserve', () => {
  it('resolves at once with a reserved entry when one is eligible', async () => {
    const { g } = harness();
    g.enqueue(entry('e1'));
    const waiting = track(g.reserve());
    // Reserved within the call, before anything awaits.
    expect(g.reserved).toBe(1);
    await settle();
    expect(waiting.value?.taskId).toBe('e1');
    expect(g.has('e1')).toBe(false);
  });

  it('waits while nothing is queued and resolves when an entry is enqueued', async () => {
    const { g } = harness();
    const waiting = track(g.reserve());
    await settle();
    expect(waiting.settled).toBe(false);
    g.enqueue(entry('e1'));
    // Reserved inside enqueue: it is no longer queued on return.
    expect(g.has('e1')).toBe(false);
    expect(g.reserved).toBe(1);
    await settle();
    expect(waiting.value?.taskId).toBe('e1');
  });

  it('waits while the slots are full and resolves when a reservation is released', async () => {
    const { g } = harness(1);
    g.enqueue(entry('e1'));
    g.enqueue(entry('e2'));
    const held = g.tryReserve() as GovernorEntry;
    const waiting = track(g.reserve());
    await settle();
    expect(waiting.settled).toBe(false);
    g.release(held);
    await settle();
    expect(waiting.value?.taskId).toBe('e2');
    expect(g.reserved).toBe(1);
    expect(g.queued).toBe(0);
  });

  it.each([
    ['unfreeze', (g: Governor) => g.freeze(), (g: Governor) => g.unfreeze()],
    ['setAgent', (g: Governor) => g.removeAgent('a'), (g: Governor) => g.setAgent('a', 1)],
    ['setAgent raising a limit', (g: Governor) => g.setAgent('a', 0), (g: Governor) => g.setAgent('a', 1)],
    ['setSlots', (g: Governor) => g.setSlots(0), (g: Governor) => g.setSlots(1)],
    ['pauseAgent(false)', (g: Governor) => g.pauseAgent('a', true), (g: Governor) => g.pauseAgent('a', false)],
  ])('resolves when %s makes an entry eligible', async (_name, block, unblock) => {
    const { g } = harness();
    block(g);
    g.enqueue(entry('e1'));
    const waiting = track(g.reserve());
    await settle();
    expect(waiting.settled).toBe(false);
    expect(g.queued).toBe(1);
    unblock(g);
    await settle();
    expect(waiting.value?.taskId).toBe('e1');
    expect(g.reserved).toBe(1);
  });

  it('serves waiters in the order they called, one entry each', async () => {
    const { g } = harness(1);
    const w = [track(g.reserve()), track(g.reserve()), track(g.reserve())];
    g.enqueue(entry('e1'));
    g.enqueue(entry('e2'));
    g.enqueue(entry('e3'));
    await settle();
    expect(w.map((t) => t.value?.taskId)).toEqual(['e1', undefined, undefined]);
    g.release(w[0]!.value!);
    await settle();
    expect(w.map((t) => t.value?.taskId)).toEqual(['e1', 'e2', undefined]);
    g.release(w[1]!.value!);
    await settle();
    expect(w.map((t) => t.value?.taskId)).toEqual(['e1', 'e2', 'e3']);
    expect(g.reserved).toBe(1);
  });

  it('does not let a later reserve() overtake a pending one', async () => {
    const { g, blocked } = harness();
    blocked.add('i-e1');
    g.enqueue(entry('e1'));
    const first = track(g.reserve());
    await settle();
    expect(first.settled).toBe(false);
    // The gate opens unannounced; a second caller arrives before anyone pokes.
    blocked.delete('i-e1');
    const second = track(g.reserve());
    await settle();
    expect(first.value?.taskId).toBe('e1');
    expect(second.settled).toBe(false);
    g.enqueue(entry('e2'));
    await settle();
    expect(second.value?.taskId).toBe('e2');
  });

  it('rejects with the reason on abort, reserves nothing, and the next waiter gets the entry', async () => {
    const { g } = harness();
    const controller = new AbortController();
    const aborted = track(g.reserve(controller.signal));
    const next = track(g.reserve());
    const reason = new Error('stop waiting');
    controller.abort(reason);
    await settle();
    expect(aborted.error).toBe(reason);
    expect(g.reserved).toBe(0);
    g.enqueue(entry('e1'));
    await settle();
    expect(next.value?.taskId).toBe('e1');
    expect(g.reserved).toBe(1);
  });

  it('rejects at once for an already-aborted signal, even with an entry eligible', async () => {
    const { g } = harness();
    g.enqueue(entry('e1'));
    const controller = new AbortController();
    controller.abort();
    await expect(g.reserve(controller.signal)).rejects.toBe(controller.signal.reason);
    expect(g.reserved).toBe(0);
    expect(g.has('e1')).toBe(true);
  });

  it('keeps an entry reserved for a waiter whose signal aborts after it was served', async () => {
    const { g } = harness();
    const controller = new AbortController();
    const waiting = g.reserve(controller.signal);
    g.enqueue(entry('e1'));
    controller.abort();
    expect((await waiting).taskId).toBe('e1');
    expect(g.reserved).toBe(1);
    expect(g.tryReserve()).toBeUndefined();
  });

  it('leaves pending waiters pending while frozen, and tryReserve() returns nothing', async () => {
    const { g } = harness();
    g.freeze();
    const waiting = track(g.reserve());
    g.enqueue(entry('e1'));
    g.poke();
    await settle();
    expect(waiting.settled).toBe(false);
    expect(g.tryReserve()).toBeUndefined();
    g.unfreeze();
    await settle();
    expect(waiting.value?.taskId).toBe('e1');
  });
});

describe('governor poke', () => {
  it('retries pending waiters after the instance gate opens without the governor knowing', async () => {
    const { g, blocked } = harness();
    blocked.add('i-e1');
    g.enqueue(entry('e1'));
    const waiting = track(g.reserve());
    await settle();
    expect(waiting.settled).toBe(false);
    blocked.delete('i-e1');
    await settle();
    expect(waiting.settled).toBe(false);
    g.poke();
    await settle();
    expect(waiting.value?.taskId).toBe('e1');
    expect(g.reserved).toBe(1);
  });

  it('does nothing when nobody waits', () => {
    const { g } = harness();
    g.enqueue(entry('e1'));
    g.poke();
    expect(g.reserved).toBe(0);
    expect(g.queued).toBe(1);
  });
});

describe('governor markUsed', () => {
  it('counts used reservations in stats(), once each, until released', () => {
    const { g } = harness();
    for (const id of ['e1', 'e2', 'e3']) g.enqueue(entry(id));
    const [e1, e2] = [g.tryReserve() as GovernorEntry, g.tryReserve() as GovernorEntry];
    expect(g.stats()).toMatchObject({ reserved: 2, used: 0, queued: 1 });
    g.markUsed(e1);
    g.markUsed(e1);
    expect(g.stats()).toMatchObject({ reserved: 2, used: 1 });
    g.markUsed(e2);
    expect(g.stats().used).toBe(2);
    g.release(e1);
    expect(g.stats()).toMatchObject({ reserved: 1, used: 1 });
    // A second release, and a mark after it, are both ignored.
    g.release(e1);
    g.markUsed(e1);
    expect(g.stats()).toMatchObject({ reserved: 1, used: 1 });
    // A queued entry holds no reservation: nothing to mark.
    g.markUsed(entry('e3'));
    expect(g.stats()).toMatchObject({ reserved: 1, used: 1, queued: 1 });
    g.release(e2);
    expect(g.stats()).toMatchObject({ reserved: 0, used: 0 });
  });

  it('changes no pick', () => {
    const { g } = harness(1);
    g.enqueue(entry('e1'));
    g.enqueue(entry('e2'));
    const e1 = g.tryReserve() as GovernorEntry;
    g.markUsed(e1);
    expect(g.tryReserve()).toBeUndefined();
    g.release(e1);
    expect(g.tryReserve()?.taskId).toBe('e2');
  });

  it('marks and releases a taskId reserved twice one reservation at a time', () => {
    const { g } = harness();
    g.enqueue(entry('t'));
    const first = g.tryReserve() as GovernorEntry;
    g.enqueue(entry('t'));
    g.tryReserve();
    g.markUsed(first);
    g.markUsed(first);
    expect(g.stats()).toMatchObject({ reserved: 2, used: 1 });
    g.release(first);
    expect(g.stats()).toMatchObject({ reserved: 1, used: 0 });
    g.markUsed(first);
    expect(g.stats()).toMatchObject({ reserved: 1, used: 1 });
    g.release(first);
    g.release(first);
    expect(g.stats()).toMatchObject({ reserved: 0, used: 0 });
  });
});

describe('governor reserve against a reference model', () => {
  it.each([1, 2, 3, 4, 5])('never hands an entry out twice and never loses one (seed %i)', async (seed) => {
    const rnd = prng(seed);
    const { g, blocked } = harness(3);
    g.setAgent('b', 1);
    const instances = ['x', 'y', 'z'];
    type Pending = { t: ReturnType<typeof track<GovernorEntry>>; controller: AbortController; aborted: boolean };
    const pending: Pending[] = [];
    const queued = new Set<string>();
    const held = new Map<string, GovernorEntry>();
    const used = new Set<string>();
    const everHanded = new Set<string>();
    let nextId = 0;
    let served = 0;
    const takeHanded = (e: GovernorEntry) => {
      // A fresh taskId every enqueue, so a repeat hand-out of one is a double hand-out.
      expect(everHanded.has(e.taskId)).toBe(false);
      expect(queued.delete(e.taskId)).toBe(true);
      everHanded.add(e.taskId);
      held.set(e.taskId, e);
    };
    for (let step = 0; step < 400; step++) {
      const r = rnd();
      if (r < 0.3) {
        const id = `t${nextId++}`;
        g.enqueue(entry(id, rnd() < 0.5 ? 'a' : 'b', instances[Math.floor(rnd() * 3)]));
        queued.add(id);
      } else if (r < 0.5) {
        const controller = new AbortController();
        pending.push({ t: track(g.reserve(controller.signal)), controller, aborted: false });
      } else if (r < 0.6) {
        const e = g.tryReserve();
        if (e) takeHanded(e);
      } else if (r < 0.8 && held.size > 0) {
        const ids = [...held.keys()];
        const id = ids[Math.floor(rnd() * ids.length)]!;
        if (rnd() < 0.5 && !used.has(id)) {
          g.markUsed(held.get(id)!);
          used.add(id);
        } else {
          g.release(held.get(id)!);
          held.delete(id);
          used.delete(id);
        }
      } else if (r < 0.88) {
        const live = pending.filter((p) => !p.t.settled && !p.aborted);
        const victim = live[Math.floor(rnd() * live.length)];
        if (victim) {
          victim.aborted = true;
          victim.controller.abort();
        }
      } else if (r < 0.96) {
        const key = instances[Math.floor(rnd() * 3)]!;
        if (blocked.has(key)) blocked.delete(key);
        else blocked.add(key);
        if (rnd() < 0.5) g.poke();
      } else if (queued.size > 0 && rnd() < 0.5) {
        const id = [...queued][0]!;
        expect(g.remove(id)).toBe(true);
        queued.delete(id);
      }
      await settle();
      for (const p of pending) {
        if (!p.t.settled || p.t.value === undefined || everHanded.has(p.t.value.taskId)) continue;
        // A waiter aborted after it was served still got its entry: that one must be counted too.
        takeHanded(p.t.value);
        served++;
      }
      for (const p of pending) if (p.aborted && p.t.settled && p.t.value === undefined) expect((p.t.error as Error).name).toBe('AbortError');
      expect(g.reserved).toBe(held.size);
      expect(g.queued).toBe(queued.size);
      expect(g.stats().used).toBe(used.size);
      for (const id of queued) expect(g.has(id)).toBe(true);
    }
    expect(served).toBeGreaterThan(20);
    // Open everything and queue enough work: every waiter still pending is served, each its own entry.
    blocked.clear();
    g.setAgent('b', null);
    g.setSlots(1000);
    const stillWaiting = pending.filter((p) => !p.t.settled && !p.aborted);
    const fill = stillWaiting.length - queued.size;
    for (let i = 0; i < fill; i++) {
      const id = `f${i}`;
      g.enqueue(entry(id));
      queued.add(id);
    }
    await settle();
    expect(stillWaiting.every((p) => p.t.settled)).toBe(true);
    for (const p of stillWaiting) takeHanded(p.t.value!);
    expect(g.reserved).toBe(held.size);
  });
});
