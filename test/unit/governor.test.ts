import { describe, expect, it } from 'vitest';
import { createGovernor, type Governor, type GovernorEntry } from '../../src/governor/governor.js';
import { prng } from '../fixtures/prng.js';

let seq = 0;
/** An entry with `order` taken from a rising counter unless given. */
function entry(taskId: string, agent: string, instanceKey: string, priority = 0, order = ++seq): GovernorEntry {
  return { taskId, agent, instanceKey, priority, order };
}

interface Harness {
  g: Governor;
  blocked: Set<string>;
  gateCalls: string[];
}

function harness(slots = 100, agents: Record<string, number | null> = { a: null }): Harness {
  const blocked = new Set<string>();
  const gateCalls: string[] = [];
  const g = createGovernor({
    slots,
    instanceAdmits: (key) => {
      gateCalls.push(key);
      return !blocked.has(key);
    },
  });
  for (const [name, limit] of Object.entries(agents)) g.setAgent(name, limit);
  return { g, blocked, gateCalls };
}

/** Picks until next() says no, without releasing. */
function drain(g: Governor): string[] {
  const ids: string[] = [];
  for (let e = g.next(); e; e = g.next()) ids.push(e.taskId);
  return ids;
}

describe('governor ordering', () => {
  it('runs a lower priority number before an earlier-queued higher one', () => {
    const { g } = harness();
    g.enqueue(entry('late-urgent', 'a', 'i', 0, 10));
    g.enqueue(entry('early-lazy', 'a', 'i', 5, 1));
    g.enqueue(entry('mid', 'a', 'j', 2, 5));
    expect(drain(g)).toEqual(['late-urgent', 'mid', 'early-lazy']);
  });

  it('is FIFO by order within one instance and priority', () => {
    const { g } = harness();
    for (const id of ['t1', 't2', 't3', 't4']) g.enqueue(entry(id, 'a', 'i'));
    expect(drain(g)).toEqual(['t1', 't2', 't3', 't4']);
  });

  it('places out-of-order inserts by order, ties in insertion order', () => {
    const { g } = harness();
    for (const [id, order] of [['o5', 5], ['o1', 1], ['o3', 3], ['o3b', 3], ['o2', 2], ['o4', 4], ['o0', 0]] as const) {
      g.enqueue(entry(id, 'a', 'i', 0, order));
    }
    expect(drain(g)).toEqual(['o0', 'o1', 'o2', 'o3', 'o3b', 'o4', 'o5']);
  });

  it('round-robins across instances of one agent', () => {
    const { g } = harness();
    for (const id of ['A1', 'A2', 'A3']) g.enqueue(entry(id, 'a', 'A'));
    for (const id of ['B1', 'B2']) g.enqueue(entry(id, 'a', 'B'));
    expect(drain(g)).toEqual(['A1', 'B1', 'A2', 'B2', 'A3']);
  });

  it('round-robins across agents, then across each agent’s instances', () => {
    const { g } = harness(100, { x: null, y: null });
    g.enqueue(entry('xa1', 'x', 'xa'));
    g.enqueue(entry('xa2', 'x', 'xa'));
    g.enqueue(entry('xb1', 'x', 'xb'));
    g.enqueue(entry('yc1', 'y', 'yc'));
    g.enqueue(entry('yc2', 'y', 'yc'));
    expect(drain(g)).toEqual(['xa1', 'yc1', 'xb1', 'yc2', 'xa2']);
  });

  it('keeps a refused instance in its place in the cycle', () => {
    const { g, blocked } = harness();
    for (const key of ['A', 'B', 'C', 'D']) for (const n of [1, 2]) g.enqueue(entry(`${key}${n}`, 'a', key));
    blocked.add('B');
    expect([g.next()?.taskId, g.next()?.taskId]).toEqual(['A1', 'C1']);
    blocked.delete('B');
    expect(drain(g)).toEqual(['D1', 'A2', 'B1', 'C2', 'D2', 'B2']);
  });
});

describe('governor capacity', () => {
  it('respects global slots and frees one on release', () => {
    const { g } = harness(2);
    const picked = [entry('t1', 'a', 'i'), entry('t2', 'a', 'i'), entry('t3', 'a', 'i')];
    for (const e of picked) g.enqueue(e);
    const first = g.next();
    expect(first?.taskId).toBe('t1');
    expect(g.next()?.taskId).toBe('t2');
    expect(g.next()).toBeUndefined();
    expect(g.hasEligible()).toBe(false);
    expect(g.reserved).toBe(2);
    g.release(first as GovernorEntry);
    expect(g.reserved).toBe(1);
    expect(g.next()?.taskId).toBe('t3');
    expect(g.reserved).toBe(2);
    expect(g.queued).toBe(0);
  });

  it('blocks only the agent at its limit', () => {
    const { g } = harness(100, { x: 1, y: null });
    for (const id of ['x1', 'x2']) g.enqueue(entry(id, 'x', 'xi'));
    for (const id of ['y1', 'y2']) g.enqueue(entry(id, 'y', 'yi'));
    const x1 = g.next();
    expect(x1?.taskId).toBe('x1');
    expect(drain(g)).toEqual(['y1', 'y2']);
    g.release(x1 as GovernorEntry);
    expect(drain(g)).toEqual(['x2']);
  });

  it('does not ask the instance gate for an agent without room', () => {
    const { g, gateCalls } = harness(100, { x: 0 });
    g.enqueue(entry('x1', 'x', 'xi'));
    expect(g.next()).toBeUndefined();
    expect(gateCalls).toEqual([]);
    g.setAgent('x', 1);
    expect(g.next()?.taskId).toBe('x1');
    expect(gateCalls).toEqual(['xi']);
  });

  it('lowers slots below reserved without losing count, and setSlots raises them again', () => {
    const { g } = harness(3);
    for (const id of ['t1', 't2', 't3']) g.enqueue(entry(id, 'a', 'i'));
    const t1 = g.next() as GovernorEntry;
    g.next();
    g.setSlots(1);
    expect(g.next()).toBeUndefined();
    g.release(t1);
    expect(g.next()).toBeUndefined();
    g.setSlots(3);
    expect(g.next()?.taskId).toBe('t3');
  });

  it('rejects invalid slots and limits', () => {
    expect(() => createGovernor({ slots: -1, instanceAdmits: () => true })).toThrow(/slots/);
    const { g } = harness();
    expect(() => g.setSlots(1.5)).toThrow(/slots/);
    expect(() => g.setAgent('a', -2)).toThrow(/limit/);
  });

  it('ignores a second release of the same reservation and releases of unknown entries', () => {
    const { g } = harness(10);
    g.enqueue(entry('t1', 'a', 'i'));
    g.enqueue(entry('t2', 'a', 'i'));
    const t1 = g.next() as GovernorEntry;
    g.next();
    g.release(t1);
    g.release(t1);
    g.release(entry('never', 'a', 'i'));
    expect(g.reserved).toBe(1);
    expect(g.stats().agents['a']?.reserved).toBe(1);
  });
});

describe('governor gating', () => {
  it('skips an instance the gate refuses and resumes it once admitted', () => {
    const { g, blocked } = harness();
    g.enqueue(entry('A1', 'a', 'A'));
    g.enqueue(entry('A2', 'a', 'A'));
    g.enqueue(entry('B1', 'a', 'B'));
    blocked.add('A');
    expect(drain(g)).toEqual(['B1']);
    expect(g.queued).toBe(2);
    blocked.delete('A');
    expect(drain(g)).toEqual(['A1', 'A2']);
  });

  it('picks a lower priority when every higher-priority entry is ineligible', () => {
    const { g, blocked } = harness(100, { x: 1, y: null });
    const running = entry('x0', 'x', 'xi', 0);
    g.enqueue(running);
    expect(g.next()).toBe(running);
    g.enqueue(entry('x-urgent', 'x', 'xi', 0));
    g.enqueue(entry('y-urgent', 'y', 'blocked', 0));
    g.enqueue(entry('y-lazy', 'y', 'yi', 9));
    blocked.add('blocked');
    expect(g.next()?.taskId).toBe('y-lazy');
    expect(g.next()).toBeUndefined();
    blocked.delete('blocked');
    expect(g.next()?.taskId).toBe('y-urgent');
  });

  it('keeps an unregistered agent’s entries queued until setAgent, and stops picks after removeAgent', () => {
    const { g } = harness(100, {});
    g.enqueue(entry('g1', 'ghost', 'gi'));
    g.enqueue(entry('g2', 'ghost', 'gi'));
    expect(g.next()).toBeUndefined();
    expect(g.hasEligible()).toBe(false);
    expect(g.stats().agents['ghost']).toEqual({ queued: 2, reserved: 0, limit: 0 });
    g.setAgent('ghost', null);
    expect(g.hasEligible()).toBe(true);
    const g1 = g.next() as GovernorEntry;
    expect(g1.taskId).toBe('g1');
    g.removeAgent('ghost');
    expect(g.next()).toBeUndefined();
    g.release(g1);
    expect(g.reserved).toBe(0);
    g.setAgent('ghost', 1);
    expect(drain(g)).toEqual(['g2']);
  });

  it('never picks while frozen, and resumes on unfreeze', () => {
    const { g } = harness();
    g.enqueue(entry('t1', 'a', 'i'));
    g.freeze();
    expect(g.frozen).toBe(true);
    expect(g.next()).toBeUndefined();
    expect(g.hasEligible()).toBe(false);
    g.unfreeze();
    expect(g.frozen).toBe(false);
    expect(g.next()?.taskId).toBe('t1');
  });

  it('asks the gate once per pick with a thousand instances, and at most once per instance when all refuse', () => {
    const { g, blocked, gateCalls } = harness(10_000);
    for (let i = 0; i < 1000; i++) for (let k = 0; k < 3; k++) g.enqueue(entry(`t${i}.${k}`, 'a', `i${i}`));
    for (let n = 0; n < 1500; n++) expect(g.next()).toBeDefined();
    expect(gateCalls.length).toBe(1500);
    gateCalls.length = 0;
    for (let i = 0; i < 1000; i++) blocked.add(`i${i}`);
    expect(g.next()).toBeUndefined();
    expect(gateCalls.length).toBe(1000);
  });

  it('re-asks a refused instance about once per cycle, not on every pick', () => {
    const { g, blocked, gateCalls } = harness(100_000);
    for (let i = 0; i < 500; i++) {
      blocked.add(`no${i}`);
      for (let k = 0; k < 10; k++) {
        g.enqueue(entry(`no${i}.${k}`, 'a', `no${i}`));
        g.enqueue(entry(`ok${i}.${k}`, 'a', `ok${i}`));
      }
    }
    for (let n = 0; n < 2000; n++) expect(g.next()?.taskId.startsWith('ok')).toBe(true);
    expect(gateCalls.length).toBeLessThan(2000 * 3);
  });
});

describe('governor queue bookkeeping', () => {
  it('removes a queued entry before it is picked', () => {
    const { g } = harness();
    for (const id of ['t1', 't2', 't3']) g.enqueue(entry(id, 'a', 'i'));
    expect(g.remove('t2')).toBe(true);
    expect(g.remove('t2')).toBe(false);
    expect(g.remove('nope')).toBe(false);
    expect(g.has('t2')).toBe(false);
    expect(g.has('t3')).toBe(true);
    expect(g.queued).toBe(2);
    expect(drain(g)).toEqual(['t1', 't3']);
    expect(g.has('t1')).toBe(false);
  });

  it('throws on a duplicate queued taskId but accepts it again after removal or pick', () => {
    const { g } = harness();
    g.enqueue(entry('t1', 'a', 'i'));
    expect(() => g.enqueue(entry('t1', 'a', 'j'))).toThrow(Error);
    g.remove('t1');
    g.enqueue(entry('t1', 'a', 'j'));
    const picked = g.next() as GovernorEntry;
    expect(picked.instanceKey).toBe('j');
    g.enqueue(entry('t1', 'a', 'j'));
    expect(g.has('t1')).toBe(true);
    g.release(picked);
    expect(g.reserved).toBe(0);
  });

  it('keeps order through heavy lazy removal and compaction', () => {
    const { g } = harness(100_000);
    for (let i = 0; i < 5000; i++) g.enqueue(entry(`t${i}`, 'a', 'i', 0, i));
    for (let i = 0; i < 5000; i += 3) g.remove(`t${i}`);
    const expected: string[] = [];
    for (let i = 0; i < 5000; i++) if (i % 3 !== 0) expected.push(`t${i}`);
    expect(g.queued).toBe(expected.length);
    expect(drain(g)).toEqual(expected);
    // The emptied instance must be reusable and must not linger in the ring as a ghost.
    g.enqueue(entry('again', 'a', 'i'));
    g.enqueue(entry('other1', 'a', 'j'));
    expect(drain(g)).toEqual(['again', 'other1']);
    g.enqueue(entry('other2', 'a', 'j'));
    expect(drain(g)).toEqual(['other2']);
  });

  it('reports exact stats', () => {
    const { g, blocked } = harness(5, { x: 2, y: null });
    g.enqueue(entry('x1', 'x', 'xi'));
    g.enqueue(entry('x2', 'x', 'xi'));
    g.enqueue(entry('x3', 'x', 'xi'));
    g.enqueue(entry('y1', 'y', 'yi'));
    g.enqueue(entry('z1', 'z', 'zi'));
    blocked.add('yi');
    drain(g);
    g.remove('x3');
    expect(g.stats()).toEqual({
      slots: 5,
      reserved: 2,
      queued: 2,
      frozen: false,
      agents: {
        x: { queued: 0, reserved: 2, limit: 2 },
        y: { queued: 1, reserved: 0, limit: null },
        z: { queued: 1, reserved: 0, limit: 0 },
      },
    });
  });
});

describe('governor against a reference model', () => {
  it.each([1, 2, 3, 4, 5, 6])('holds its invariants over random operations (seed %i)', (seed) => {
    const rnd = prng(seed);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)] as T;
    const { g, blocked } = harness(3, {});
    const agentNames = ['a', 'b', 'c', 'd'];
    const instances = agentNames.flatMap((a) => [`${a}0`, `${a}1`, `${a}2`]);
    // The model: plain arrays and maps, scanned in full, which the governor must never need to do.
    let slots = 3;
    let frozen = false;
    const limits = new Map<string, number | null>();
    const queued = new Map<string, { e: GovernorEntry; n: number }>();
    const reservations = new Map<string, string[]>(); // taskId → agents, last reserved last
    const returned = new Set<GovernorEntry>();
    let enqueues = 0;
    let nextId = 0;
    let order = 0;
    const reservedOf = (agent: string) => [...reservations.values()].flat().filter((a) => a === agent).length;
    const totalReserved = () => [...reservations.values()].flat().length;
    const eligible = () =>
      frozen || totalReserved() >= slots
        ? []
        : [...queued.values()].filter(({ e }) => {
            if (!limits.has(e.agent) || blocked.has(e.instanceKey)) return false;
            const limit = limits.get(e.agent) ?? null;
            return limit === null || reservedOf(e.agent) < limit;
          });

    for (let step = 0; step < 3000; step++) {
      const r = rnd();
      if (r < 0.3) {
        const agent = pick(agentNames);
        const instanceKey = `${agent}${Math.floor(rnd() * 3)}`;
        // Mostly rising order keys, sometimes one that lands behind queued work.
        const o = rnd() < 0.8 ? ++order : Math.floor(rnd() * order);
        const reuse = [...reservations.keys()].filter((id) => !queued.has(id));
        const taskId = rnd() < 0.1 && reuse.length > 0 ? pick(reuse) : `t${nextId++}`;
        const e = entry(taskId, agent, instanceKey, Math.floor(rnd() * 3), o);
        g.enqueue(e);
        queued.set(taskId, { e, n: enqueues++ });
      } else if (r < 0.6) {
        const candidates = eligible();
        const got = g.next();
        if (candidates.length === 0) {
          expect(got).toBeUndefined();
          continue;
        }
        expect(got).toBeDefined();
        const e = got as GovernorEntry;
        expect(returned.has(e)).toBe(false);
        returned.add(e);
        const mine = candidates.find((c) => c.e === e);
        expect(mine).toBeDefined();
        expect(e.priority).toBe(Math.min(...candidates.map((c) => c.e.priority)));
        // FIFO: nothing queued in the same instance and priority comes before it.
        for (const { e: other, n } of queued.values()) {
          if (other === e || other.instanceKey !== e.instanceKey || other.priority !== e.priority) continue;
          expect(other.order > e.order || (other.order === e.order && n > (mine?.n ?? 0))).toBe(true);
        }
        queued.delete(e.taskId);
        reservations.set(e.taskId, [...(reservations.get(e.taskId) ?? []), e.agent]);
      } else if (r < 0.8) {
        const ids = [...reservations.keys()];
        if (ids.length === 0) continue;
        const taskId = pick(ids);
        g.release(entry(taskId, 'ignored', 'ignored'));
        const agents = reservations.get(taskId) as string[];
        agents.pop();
        if (agents.length === 0) reservations.delete(taskId);
        if (rnd() < 0.3 && !reservations.has(taskId)) g.release(entry(taskId, 'ignored', 'ignored'));
      } else if (r < 0.88) {
        const ids = [...queued.keys()];
        const taskId = rnd() < 0.8 && ids.length > 0 ? pick(ids) : `missing${step}`;
        expect(g.remove(taskId)).toBe(queued.delete(taskId));
      } else if (r < 0.93) {
        const agent = pick(agentNames);
        if (rnd() < 0.2) {
          g.removeAgent(agent);
          limits.delete(agent);
        } else {
          const limit = rnd() < 0.3 ? null : Math.floor(rnd() * 4);
          g.setAgent(agent, limit);
          limits.set(agent, limit);
        }
      } else if (r < 0.96) {
        const key = pick(instances);
        if (blocked.has(key)) blocked.delete(key);
        else blocked.add(key);
      } else if (r < 0.98) {
        slots = Math.floor(rnd() * 7);
        g.setSlots(slots);
      } else {
        frozen = !frozen;
        if (frozen) g.freeze();
        else g.unfreeze();
      }

      expect(g.queued).toBe(queued.size);
      expect(g.reserved).toBe(totalReserved());
      expect(g.frozen).toBe(frozen);
      if (eligible().length > 0) expect(g.hasEligible()).toBe(true);
      const stats = g.stats();
      for (const agent of agentNames) {
        const q = [...queued.values()].filter(({ e }) => e.agent === agent).length;
        const res = reservedOf(agent);
        const s = stats.agents[agent];
        if (!limits.has(agent) && q === 0 && res === 0) {
          expect(s).toBeUndefined();
          continue;
        }
        expect(s).toEqual({ queued: q, reserved: res, limit: limits.has(agent) ? limits.get(agent) : 0 });
      }
      const probe = `t${Math.floor(rnd() * nextId)}`;
      expect(g.has(probe)).toBe(queued.has(probe));
    }
    // A sanity floor: the mix must actually exercise picks, not just refusals.
    expect(returned.size).toBeGreaterThan(100);
  });
});
