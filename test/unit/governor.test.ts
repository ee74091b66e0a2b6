import { describe, expect, it } from 'vitest';
import { createGovernor, type AgentLimits, type Governor, type GovernorEntry } from '../../src/governor/governor.js';
import { prng } from '../fixtures/prng.js';

let seq = 0;
/** An entry with `order` taken from a rising counter unless given. */
function entry(taskId: string, agent: string, instanceKey: string, priority = 0, order = ++seq): GovernorEntry {
  return { taskId, agent, instanceKey, priority, order };
}
/** The same with a model, as the host fills it from `labels.model`. */
function mentry(taskId: string, agent: string, instanceKey: string, model: string | undefined, priority = 0, order = ++seq): GovernorEntry {
  return model === undefined ? entry(taskId, agent, instanceKey, priority, order) : { ...entry(taskId, agent, instanceKey, priority, order), model };
}

interface Harness {
  g: Governor;
  blocked: Set<string>;
  gateCalls: string[];
}

function harness(slots = 100, agents: Record<string, number | null | AgentLimits> = { a: null }): Harness {
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

  it('reclaims a reservation given back, over the agent, model and global limits, and picks nothing new until back under', () => {
    const { g } = harness(2, { x: { total: 1, models: { m: 1 } } });
    for (const id of ['a', 'b', 'c']) g.enqueue(mentry(id, 'x', 'xi', 'm'));
    const a = g.next() as GovernorEntry;
    g.markUsed(a);
    // a waits on the host: it gives its reservation back, and b runs in its place.
    g.release(a);
    const b = g.next() as GovernorEntry;
    expect(b.taskId).toBe('b');
    // a runs again at once, whatever the limits.
    g.reclaim(a);
    expect(g.stats()).toMatchObject({ reserved: 2, used: 1, agents: { x: { reserved: 2, queued: 1, models: { m: { reserved: 2 } } } } });
    g.release(b);
    expect(g.next()).toBeUndefined();
    g.release(a);
    expect(g.next()?.taskId).toBe('c');
    expect(g.stats()).toMatchObject({ reserved: 1, used: 0, agents: { x: { reserved: 1, queued: 0 } } });
    // Only an entry that is not queued reclaims.
    g.enqueue(entry('d', 'x', 'xi'));
    expect(() => g.reclaim(entry('d', 'x', 'xi'))).toThrow(/queued/);
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
    expect(g.stats().agents['ghost']).toEqual({ queued: 2, reserved: 0, limit: 0, paused: false, models: {} });
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
      used: 0,
      queued: 2,
      frozen: false,
      agents: {
        x: { queued: 0, reserved: 2, limit: 2, paused: false, models: {} },
        y: { queued: 1, reserved: 0, limit: null, paused: false, models: {} },
        z: { queued: 1, reserved: 0, limit: 0, paused: false, models: {} },
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
        expect(s).toEqual({ queued: q, reserved: res, limit: limits.has(agent) ? limits.get(agent) : 0, paused: false, models: {} });
      }
      const probe = `t${Math.floor(rnd() * nextId)}`;
      expect(g.has(probe)).toBe(queued.has(probe));
    }
    // A sanity floor: the mix must actually exercise picks, not just refusals.
    expect(returned.size).toBeGreaterThan(100);
  });
});

describe('governor per-model sub-limits', () => {
  it('picks no more of a model than its sub-limit, other models and no-model work still run', () => {
    const { g } = harness(100, { a: { total: 5, models: { 'gpt-5': 1 } } });
    for (const key of ['i', 'j', 'k']) g.enqueue(mentry(`g-${key}`, 'a', key, 'gpt-5'));
    g.enqueue(mentry('c1', 'a', 'i', 'claude'));
    g.enqueue(mentry('n1', 'a', 'j', undefined));
    const picked = drain(g);
    expect(picked.filter((id) => id.startsWith('g-'))).toEqual(['g-i']);
    expect(picked).toEqual(['g-i', 'c1', 'n1']);
    expect(g.queued).toBe(2);
    expect(g.stats().agents['a']?.models).toEqual({ 'gpt-5': { reserved: 1, limit: 1 }, claude: { reserved: 1, limit: null } });
  });

  it('does not let a model at its sub-limit block other models queued behind it in the same instance', () => {
    const { g, gateCalls } = harness(100, { a: { total: null, models: { 'gpt-5': 1 } } });
    g.enqueue(mentry('g1', 'a', 'i', 'gpt-5'));
    g.enqueue(mentry('g2', 'a', 'i', 'gpt-5'));
    g.enqueue(mentry('g3', 'a', 'i', 'gpt-5'));
    g.enqueue(mentry('c1', 'a', 'i', 'claude'));
    g.enqueue(mentry('n1', 'a', 'i', undefined));
    g.enqueue(mentry('n2', 'a', 'i', undefined));
    expect(drain(g)).toEqual(['g1', 'c1', 'n1', 'n2']);
    // The saturated model's queue is passed over without asking the instance gate about it.
    expect(gateCalls).toEqual(['i', 'i', 'i', 'i']);
  });

  it('frees the model slot on release, FIFO within the model', () => {
    const { g } = harness(100, { a: { total: 5, models: { m: 1 } } });
    const first = mentry('m1', 'a', 'i', 'm');
    g.enqueue(first);
    g.enqueue(mentry('m2', 'a', 'i', 'm'));
    g.enqueue(mentry('m3', 'a', 'j', 'm'));
    expect(g.next()).toBe(first);
    expect(g.next()).toBeUndefined();
    g.release(first);
    expect(g.stats().agents['a']?.models).toEqual({ m: { reserved: 0, limit: 1 } });
    const second = g.next() as GovernorEntry;
    expect(second.taskId).toBe('m3');
    expect(g.next()).toBeUndefined();
    g.release(second);
    g.release(second);
    expect(drain(g)).toEqual(['m2']);
  });

  it('still caps every model together at the agent total', () => {
    const { g } = harness(100, { a: { total: 2, models: { m: 5 } } });
    for (const id of ['m1', 'm2', 'm3']) g.enqueue(mentry(id, 'a', 'i', 'm'));
    g.enqueue(mentry('o1', 'a', 'i', 'other'));
    g.enqueue(mentry('n1', 'a', 'j', undefined));
    expect(drain(g)).toHaveLength(2);
    expect(g.hasEligible()).toBe(false);
    expect(g.reserved).toBe(2);
  });

  it('applies a setAgent change to the next pick, and lowering only stops new picks', () => {
    const { g } = harness(100, { a: { total: null, models: { m: 1 } } });
    for (let i = 1; i <= 5; i++) g.enqueue(mentry(`m${i}`, 'a', 'i', 'm'));
    const m1 = g.next() as GovernorEntry;
    expect(g.next()).toBeUndefined();
    g.setAgent('a', { total: null, models: { m: 3 } });
    const more = drain(g);
    expect(more).toEqual(['m2', 'm3']);
    g.setAgent('a', { total: 10, models: { m: 1 } });
    g.release(m1);
    expect(g.next()).toBeUndefined();
    expect(g.stats().agents['a']?.models).toEqual({ m: { reserved: 2, limit: 1 } });
    // A plain number drops the sub-limits: the model counts only against the total.
    g.setAgent('a', 4);
    expect(drain(g)).toEqual(['m4', 'm5']);
    expect(g.stats().agents['a']).toEqual({ queued: 0, reserved: 4, limit: 4, paused: false, models: { m: { reserved: 4, limit: null } } });
  });

  it('validates limits, names the field, and leaves the agent as it was on a bad call', () => {
    const { g } = harness(100, { a: { total: 2, models: { m: 1 } } });
    expect(() => g.setAgent('a', { total: -1 })).toThrow(/limits\.total/);
    expect(() => g.setAgent('a', { total: 1.5 })).toThrow(/limits\.total/);
    expect(() => g.setAgent('a', { total: null, models: { ok: 1, bad: -3 } })).toThrow(/limits\.models\["bad"\]/);
    expect(() => g.setAgent('a', { total: null, models: { m: Number.NaN } })).toThrow(/INVALID_OPTIONS|non-negative/);
    expect(() => g.setAgent('a', { total: null, models: 'x' as unknown as Record<string, number> })).toThrow(/limits\.models/);
    expect(g.stats().agents['a']).toMatchObject({ limit: 2, models: { m: { reserved: 0, limit: 1 } } });
    g.setAgent('b', { total: null });
    expect(g.stats().agents['b']).toEqual({ queued: 0, reserved: 0, limit: null, paused: false, models: {} });
  });
});

describe('governor pause', () => {
  it('keeps a paused agent’s entries queued and unpicked, releases normally, and resumes in order', () => {
    const { g } = harness(100, { a: null, b: null });
    for (const id of ['a1', 'a2', 'a3']) g.enqueue(entry(id, 'a', 'ai'));
    const a1 = g.next() as GovernorEntry;
    g.pauseAgent('a', true);
    expect(g.next()).toBeUndefined();
    expect(g.hasEligible()).toBe(false);
    expect(g.queued).toBe(2);
    expect(g.has('a2')).toBe(true);
    g.release(a1);
    expect(g.reserved).toBe(0);
    expect(g.stats().agents['a']).toEqual({ queued: 2, reserved: 0, limit: null, paused: true, models: {} });
    // Another agent's work is still eligible while one is paused.
    g.enqueue(entry('b1', 'b', 'bi'));
    expect(g.hasEligible()).toBe(true);
    expect(drain(g)).toEqual(['b1']);
    expect(g.hasEligible()).toBe(false);
    g.pauseAgent('a', false);
    expect(g.hasEligible()).toBe(true);
    expect(drain(g)).toEqual(['a2', 'a3']);
    expect(g.stats().agents['a']?.paused).toBe(false);
  });

  it('holds a pause set before the agent registers, and across removeAgent and re-registration', () => {
    const { g } = harness(100, {});
    g.pauseAgent('late', true);
    expect(g.stats().agents['late']).toEqual({ queued: 0, reserved: 0, limit: 0, paused: true, models: {} });
    g.enqueue(entry('l1', 'late', 'li'));
    g.setAgent('late', 3);
    expect(g.hasEligible()).toBe(false);
    expect(g.next()).toBeUndefined();
    g.removeAgent('late');
    g.remove('l1');
    expect(g.stats().agents['late']?.paused).toBe(true);
    g.setAgent('late', { total: 3 });
    g.enqueue(entry('l2', 'late', 'li'));
    expect(g.next()).toBeUndefined();
    g.pauseAgent('late', false);
    expect(drain(g)).toEqual(['l2']);
    // Unpausing an unknown agent creates nothing; an unregistered one is forgotten once unpaused and empty.
    g.pauseAgent('nobody', false);
    g.pauseAgent('gone', true);
    g.pauseAgent('gone', false);
    expect(Object.keys(g.stats().agents)).toEqual(['late']);
  });
});

describe('governor pickAgent', () => {
  it('returns the least-loaded registered candidate, load relative to its total or the slots', () => {
    const { g } = harness(10, { small: 2, big: 8, open: null });
    g.enqueue(entry('s1', 'small', 'si'));
    for (const id of ['b1', 'b2', 'b3']) g.enqueue(entry(id, 'big', 'bi'));
    // small 1/2, big 3/8, open 0/10.
    expect(g.pickAgent(['small', 'big', 'open'])).toBe('open');
    for (const id of ['o1', 'o2', 'o3', 'o4']) g.enqueue(entry(id, 'open', 'oi'));
    expect(g.pickAgent(['small', 'big', 'open'])).toBe('big');
    // Reserved work counts like queued work.
    drain(g);
    expect(g.pickAgent(['small', 'big', 'open'])).toBe('big');
    expect(g.pickAgent(['small', 'open'])).toBe('open');
    // Work routed but not yet queued counts too.
    expect(g.pickAgent(['big', 'open'], new Map([['big', 2]]))).toBe('open');
  });

  it('breaks ties by candidate order and skips unregistered candidates', () => {
    const { g } = harness(10, { x: 4, y: 4 });
    g.enqueue(entry('ghost1', 'ghost', 'gi'));
    expect(g.pickAgent(['y', 'x'])).toBe('y');
    expect(g.pickAgent(['x', 'y'])).toBe('x');
    expect(g.pickAgent(['nobody', 'ghost', 'y'])).toBe('y');
    expect(g.pickAgent(['nobody', 'ghost'])).toBeUndefined();
    expect(g.pickAgent([])).toBeUndefined();
    g.removeAgent('x');
    expect(g.pickAgent(['x', 'y'])).toBe('y');
  });

  it('prefers any unpaused candidate over a paused one, and picks paused ones only when all are', () => {
    const { g } = harness(10, { busy: 1, idle: 100, zero: 0 });
    for (const id of ['b1', 'b2', 'b3']) g.enqueue(entry(id, 'busy', 'bi'));
    g.pauseAgent('idle', true);
    expect(g.pickAgent(['idle', 'busy'])).toBe('busy');
    // A total of 0 is infinite load, yet an unpaused agent still beats a paused one.
    expect(g.pickAgent(['idle', 'zero'])).toBe('zero');
    g.pauseAgent('busy', true);
    expect(g.pickAgent(['busy', 'idle'])).toBe('idle');
    g.pauseAgent('idle', false);
    expect(g.pickAgent(['busy', 'idle'])).toBe('idle');
  });

  it('treats a total of 0 (or no total with 0 slots) as infinite load', () => {
    const { g } = harness(0, { zero: 0, loaded: 1, open: null });
    for (const id of ['l1', 'l2', 'l3']) g.enqueue(entry(id, 'loaded', 'li'));
    expect(g.pickAgent(['zero', 'loaded'])).toBe('loaded');
    expect(g.pickAgent(['open', 'loaded'])).toBe('loaded');
    // Both infinite: the earlier wins.
    expect(g.pickAgent(['open', 'zero'])).toBe('open');
    expect(g.pickAgent(['zero', 'open'])).toBe('zero');
  });
});

describe('governor queuedEntries', () => {
  it('yields exactly the live queued entries after removes and picks', () => {
    const { g } = harness(1000, { a: { total: null, models: { m: 1 } }, b: null });
    const all: GovernorEntry[] = [];
    for (let i = 0; i < 300; i++) {
      const e = mentry(`t${i}`, i % 3 === 0 ? 'b' : 'a', `i${i % 4}`, i % 2 === 0 ? 'm' : undefined, i % 3);
      all.push(e);
      g.enqueue(e);
    }
    for (let i = 0; i < 300; i += 4) g.remove(`t${i}`);
    const picked = new Set<string>();
    for (let n = 0; n < 40; n++) picked.add((g.next() as GovernorEntry).taskId);
    const expected = all.filter((e) => g.has(e.taskId));
    expect(expected.length).toBe(300 - 75 - 40);
    const yielded = [...g.queuedEntries()];
    expect(new Set(yielded.map((e) => e.taskId))).toEqual(new Set(expected.map((e) => e.taskId)));
    expect(yielded).toHaveLength(expected.length);
    for (const e of yielded) expect(all).toContain(e);
    for (const id of picked) expect(yielded.some((e) => e.taskId === id)).toBe(false);
    drain(g);
    for (const e of g.queuedEntries()) g.remove(e.taskId);
    expect([...g.queuedEntries()]).toEqual([]);
    expect(g.queued).toBe(0);
  });
});

describe('governor with models and pauses against a reference model', () => {
  it.each([11, 12, 13, 14, 15, 16])('never exceeds a total or sub-limit and returns every counter to 0 (seed %i)', (seed) => {
    const rnd = prng(seed);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)] as T;
    const { g, blocked } = harness(4, {});
    const agentNames = ['a', 'b', 'c'];
    const models = ['m1', 'm2', undefined];
    let slots = 4;
    const totals = new Map<string, number | null>(); // registered agents
    const subs = new Map<string, Map<string, number>>();
    const paused = new Set<string>();
    const queued = new Map<string, { e: GovernorEntry; n: number }>();
    const reservations = new Map<string, GovernorEntry[]>();
    let enqueues = 0;
    let nextId = 0;
    let picks = 0;
    let subLimitedPicks = 0;
    const held = () => [...reservations.values()].flat();
    const reservedOf = (agent: string, model?: string) =>
      held().filter((e) => e.agent === agent && (model === undefined || e.model === model)).length;
    const subOf = (agent: string, model: string | undefined) => (model === undefined ? undefined : subs.get(agent)?.get(model));
    const eligible = () =>
      held().length >= slots
        ? []
        : [...queued.values()].filter(({ e }) => {
            if (!totals.has(e.agent) || paused.has(e.agent) || blocked.has(e.instanceKey)) return false;
            const total = totals.get(e.agent) ?? null;
            const sub = subOf(e.agent, e.model);
            return (total === null || reservedOf(e.agent) < total) && (sub === undefined || reservedOf(e.agent, e.model) < sub);
          });
    const load = (agent: string) => {
      const capacity = totals.get(agent) ?? slots;
      const work = [...queued.values()].filter(({ e }) => e.agent === agent).length + reservedOf(agent);
      return capacity === 0 ? Infinity : work / capacity;
    };

    for (let step = 0; step < 2500; step++) {
      const r = rnd();
      if (r < 0.3) {
        const agent = pick(agentNames);
        const reuse = [...reservations.keys()].filter((id) => !queued.has(id));
        const taskId = rnd() < 0.05 && reuse.length > 0 ? pick(reuse) : `t${nextId++}`;
        const e = mentry(taskId, agent, `${agent}${Math.floor(rnd() * 2)}`, pick(models), Math.floor(rnd() * 2));
        g.enqueue(e);
        queued.set(taskId, { e, n: enqueues++ });
      } else if (r < 0.6) {
        const candidates = eligible();
        const got = g.next();
        if (candidates.length === 0) {
          expect(got).toBeUndefined();
          continue;
        }
        const e = got as GovernorEntry;
        const mine = candidates.find((c) => c.e === e);
        expect(mine).toBeDefined();
        expect(e.priority).toBe(Math.min(...candidates.map((c) => c.e.priority)));
        // FIFO within one instance, model and priority.
        for (const { e: other, n } of queued.values()) {
          if (other === e || other.instanceKey !== e.instanceKey || other.model !== e.model || other.priority !== e.priority) continue;
          expect(other.order > e.order || (other.order === e.order && n > (mine?.n ?? 0))).toBe(true);
        }
        queued.delete(e.taskId);
        reservations.set(e.taskId, [...(reservations.get(e.taskId) ?? []), e]);
        picks++;
        const total = totals.get(e.agent) ?? null;
        if (total !== null) expect(reservedOf(e.agent)).toBeLessThanOrEqual(total);
        const sub = subOf(e.agent, e.model);
        if (sub !== undefined) {
          subLimitedPicks++;
          expect(reservedOf(e.agent, e.model)).toBeLessThanOrEqual(sub);
        }
      } else if (r < 0.78) {
        const ids = [...reservations.keys()];
        if (ids.length === 0) continue;
        const taskId = pick(ids);
        g.release(entry(taskId, 'ignored', 'ignored'));
        const list = reservations.get(taskId) as GovernorEntry[];
        list.pop();
        if (list.length === 0) reservations.delete(taskId);
      } else if (r < 0.84) {
        const ids = [...queued.keys()];
        if (ids.length > 0) {
          const taskId = pick(ids);
          expect(g.remove(taskId)).toBe(queued.delete(taskId));
        }
      } else if (r < 0.9) {
        const agent = pick(agentNames);
        if (rnd() < 0.15) {
          g.removeAgent(agent);
          totals.delete(agent);
          subs.delete(agent);
        } else {
          const total = rnd() < 0.3 ? null : Math.floor(rnd() * 5);
          const sub = new Map<string, number>();
          for (const m of ['m1', 'm2']) if (rnd() < 0.6) sub.set(m, Math.floor(rnd() * 3));
          g.setAgent(agent, rnd() < 0.2 && sub.size === 0 ? total : { total, models: Object.fromEntries(sub) });
          totals.set(agent, total);
          subs.set(agent, sub);
        }
      } else if (r < 0.95) {
        const agent = pick(agentNames);
        const p = rnd() < 0.5;
        g.pauseAgent(agent, p);
        if (p) paused.add(agent);
        else paused.delete(agent);
      } else if (r < 0.98) {
        const key = `${pick(agentNames)}${Math.floor(rnd() * 2)}`;
        if (blocked.has(key)) blocked.delete(key);
        else blocked.add(key);
      } else {
        slots = Math.floor(rnd() * 8);
        g.setSlots(slots);
      }

      expect(g.queued).toBe(queued.size);
      expect(g.reserved).toBe(held().length);
      const runnable = agentNames.some((a) => {
        const total = totals.get(a) ?? null;
        return totals.has(a) && !paused.has(a) && [...queued.values()].some(({ e }) => e.agent === a) && (total === null || reservedOf(a) < total);
      });
      if (eligible().length > 0) expect(g.hasEligible()).toBe(true);
      if (!runnable) expect(g.hasEligible()).toBe(false);
      const stats = g.stats();
      for (const agent of agentNames) {
        const q = [...queued.values()].filter(({ e }) => e.agent === agent).length;
        const res = reservedOf(agent);
        if (!totals.has(agent) && !paused.has(agent) && q === 0 && res === 0) {
          expect(stats.agents[agent]).toBeUndefined();
          continue;
        }
        const expectedModels: Record<string, { reserved: number; limit: number | null }> = {};
        for (const m of ['m1', 'm2']) {
          const mr = reservedOf(agent, m);
          const sub = subOf(agent, m);
          if (sub !== undefined || mr > 0) expectedModels[m] = { reserved: mr, limit: sub ?? null };
        }
        expect(stats.agents[agent]).toEqual({
          queued: q,
          reserved: res,
          limit: totals.has(agent) ? totals.get(agent) : 0,
          paused: paused.has(agent),
          models: expectedModels,
        });
      }
      if (step % 10 === 0) {
        expect(new Set([...g.queuedEntries()].map((e) => e.taskId))).toEqual(new Set(queued.keys()));
        const order = [...agentNames].sort(() => rnd() - 0.5);
        const registered = order.filter((a) => totals.has(a));
        const pool = registered.some((a) => !paused.has(a)) ? registered.filter((a) => !paused.has(a)) : registered;
        const best = pool.reduce<string | undefined>((b, a) => (b === undefined || load(a) < load(b) ? a : b), undefined);
        expect(g.pickAgent(order)).toBe(best);
      }
    }
    expect(picks).toBeGreaterThan(100);
    expect(subLimitedPicks).toBeGreaterThan(20);

    // Release everything and empty the queue: every counter returns to 0 and nothing lingers.
    for (const [taskId, list] of reservations) for (let i = 0; i < list.length; i++) g.release(entry(taskId, 'x', 'x'));
    for (const taskId of queued.keys()) g.remove(taskId);
    expect(g.reserved).toBe(0);
    expect(g.queued).toBe(0);
    for (const s of Object.values(g.stats().agents)) {
      expect(s.reserved).toBe(0);
      expect(s.queued).toBe(0);
      for (const m of Object.values(s.models)) expect(m.reserved).toBe(0);
    }
    for (const agent of agentNames) {
      g.removeAgent(agent);
      g.pauseAgent(agent, false);
    }
    expect(g.stats().agents).toEqual({});
  });
});
