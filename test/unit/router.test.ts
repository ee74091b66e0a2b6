import { setImmediate as nextTurn } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { createActor } from 'xstate';
import { instanceMachine, type AttemptChange, type AttemptEvent, type AttemptExit, type InstanceInput } from '../../machines/index.js';
import { ManualClock } from '../../src/clock.js';
import { TroupeError } from '../../src/errors.js';
import type { Logger } from '../../src/log.js';
import { createRouter, type InstanceDescriptor, type RouterOptions } from '../../src/router/router.js';
import type { EventRecord, InstanceEnvelope } from '../../src/store/records.js';
import type { StepWriter, Store } from '../../src/store/port.js';

const BOOT = 'boot-now';

/** One committed step as the fake store saw it. */
interface Commit {
  instances: Array<[string, InstanceEnvelope]>;
  events: EventRecord[];
}

/**
 * An in-memory stand-in for the parts of {@link Store} the router uses. Like lmdb-js without a
 * cache, a commit's writes become visible to reads only when the commit lands (a later turn).
 */
function fakeStore(bootId = BOOT) {
  const instances = new Map<string, InstanceEnvelope>();
  const commits: Commit[] = [];
  let seq = 1;
  let inFlight = 0;
  const unexpected = (name: string) => () => {
    throw new Error(`the router should not call StepWriter.${name}`);
  };
  const store = {
    dataDir: '/nowhere',
    runtimeId: 'runtime-1',
    bootId,
    previousShutdownClean: true,
    get nextSeq() {
      return seq;
    },
    read: {
      instances: {
        get: (key: string) => instances.get(key),
        range: () => [...instances.entries()].sort(([a], [b]) => (a < b ? -1 : 1)).map(([key, value]) => ({ key, value })),
      },
    },
    commit(fn: (w: StepWriter) => void): Promise<EventRecord[]> {
      const commit: Commit = { instances: [], events: [] };
      const writer: StepWriter = {
        putTask: unexpected('putTask'),
        removeActive: unexpected('removeActive'),
        remove: unexpected('remove'),
        unindexSettled: unexpected('unindexSettled'),
        putChild: unexpected('putChild'),
        putAttempt: unexpected('putAttempt'),
        putRun: unexpected('putRun'),
        putTimer: unexpected('putTimer'),
        removeTimer: unexpected('removeTimer'),
        putIdempotency: unexpected('putIdempotency'),
        putLog: unexpected('putLog'),
        putSchedule: unexpected('putSchedule'),
        putInbox: unexpected('putInbox'),
        putEvent: unexpected('putEvent'),
        removeSchedule: unexpected('removeSchedule'),
        putControl: unexpected('putControl'),
        putInstance: (key, envelope) => void commit.instances.push([key, structuredClone(envelope)]),
        event: (type, fields) => {
          const record: EventRecord = { seq: seq++, type, ...fields };
          commit.events.push(record);
          return record;
        },
      };
      fn(writer);
      commits.push(commit);
      inFlight++;
      return new Promise((resolve) =>
        setImmediate(() => {
          for (const [key, envelope] of commit.instances) instances.set(key, envelope);
          inFlight--;
          resolve(commit.events);
        }),
      );
    },
    close: async () => undefined,
  };
  return {
    store: store as unknown as Store,
    instances,
    commits,
    events: () => commits.flatMap((c) => c.events),
    /** Waits until every queued flush has committed and landed. */
    async settle(): Promise<void> {
      do await nextTurn();
      while (inFlight > 0);
      await nextTurn();
    },
  };
}

function fakeLog() {
  const lines: Array<{ level: string; fields: unknown; message: string }> = [];
  const at = (level: string) => (fields: unknown, message: string) => void lines.push({ level, fields, message });
  const log = { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
  return { log: log as unknown as Logger, lines };
}

type HarnessOptions = Partial<Pick<RouterOptions, 'maxLiveInstances' | 'failedAttemptThreshold' | 'hasQueuedWork'>> & { bootId?: string };

function harness(options: HarnessOptions = {}) {
  const fake = fakeStore(options.bootId);
  const clock = new ManualClock(1_000);
  const { log, lines } = fakeLog();
  const router = createRouter({
    store: fake.store,
    clock,
    log,
    maxLiveInstances: options.maxLiveInstances ?? 100,
    failedAttemptThreshold: options.failedAttemptThreshold ?? 0,
    hasQueuedWork: options.hasQueuedWork ?? (() => false),
  });
  const desc = (key: string): InstanceDescriptor => ({ agent: 'coder', lane: 'default', workspace: `/ws/${key}` });
  const ev = (attemptId: string, change: AttemptEvent['change'], from?: AttemptEvent['from'], status?: AttemptExit): AttemptEvent => {
    const event: AttemptEvent = { type: 'attempt', attemptId, runId: `run-${attemptId}`, change, at: clock.now() };
    if (from !== undefined) event.from = from;
    if (status !== undefined) event.status = status;
    return event;
  };
  const send = (key: string, event: AttemptEvent) => router.send(key, event, desc(key));
  return {
    ...fake,
    clock,
    lines,
    router,
    desc,
    /** A new pending attempt: the instance becomes busy. */
    pend: (key: string, id: string) => send(key, ev(id, 'pending')),
    run: (key: string, id: string) => send(key, ev(id, 'running', 'pending')),
    end: (key: string, id: string, status: AttemptExit = 'success') => send(key, ev(id, 'ended', 'running', status)),
    /** Creates (or touches) an instance and leaves it idle. */
    idle: (key: string, id = `${key}-touch-${clock.now()}-${Math.random()}`) => {
      send(key, ev(id, 'pending'));
      send(key, ev(id, 'released', 'pending'));
    },
    /** One full attempt ending in `status`. */
    attempt: (key: string, id: string, status: AttemptExit) => {
      send(key, ev(id, 'pending'));
      send(key, ev(id, 'running', 'pending'));
      send(key, ev(id, 'ended', 'running', status));
    },
  };
}

/** A persisted instance snapshot with the given attempt counts and target, as a real actor makes it. */
function storedEnvelope(key: string, opts: { bootId: string; pending?: number; running?: number; target?: number | null; version?: number }): InstanceEnvelope {
  const input: InstanceInput = { key, agent: 'coder', lane: 'default', failedAttemptThreshold: 0, target: opts.target ?? null };
  const actor = createActor(instanceMachine, { input }).start();
  let n = 0;
  for (let i = 0; i < (opts.running ?? 0); i++) {
    actor.send({ type: 'attempt', attemptId: `r${n}`, runId: 'r', change: 'pending', at: 1 });
    actor.send({ type: 'attempt', attemptId: `r${n++}`, runId: 'r', change: 'running', from: 'pending', at: 1 });
  }
  for (let i = 0; i < (opts.pending ?? 0); i++) actor.send({ type: 'attempt', attemptId: `p${n++}`, runId: 'r', change: 'pending', at: 1 });
  const snapshot = structuredClone(actor.getPersistedSnapshot());
  actor.stop();
  return { schema: 1, machine: 'instance', version: opts.version ?? 1, seq: 1, bootId: opts.bootId, snapshot };
}

const contextOf = (envelope: InstanceEnvelope | undefined) => (envelope?.snapshot as { context: { target: number | null; consecutiveFailures: number } }).context;

describe('router: creating actors', () => {
  it('creates an actor on the first send and persists its envelope', async () => {
    const h = harness();
    expect(h.router.liveCount).toBe(0);
    h.pend('k1', 'a1');
    expect(h.router.liveCount).toBe(1);
    expect(h.router.get('k1')).toEqual({
      key: 'k1',
      agent: 'coder',
      lane: 'default',
      workspace: '/ws/k1',
      status: 'active',
      pending: 1,
      running: 0,
      stopping: 0,
      target: null,
      consecutiveFailures: 0,
      recentFailures: [],
      live: true,
    });
    await h.settle();
    const envelope = h.instances.get('k1');
    expect(envelope).toMatchObject({ schema: 1, machine: 'instance', version: 1, bootId: BOOT });
    expect(contextOf(envelope)).toMatchObject({ key: 'k1', agent: 'coder', target: null });
  });

  it('routes later events to the same actor', () => {
    const h = harness();
    h.pend('k1', 'a1');
    h.run('k1', 'a1');
    h.pend('k1', 'a2');
    expect(h.router.liveCount).toBe(1);
    expect(h.router.get('k1')).toMatchObject({ pending: 1, running: 1, status: 'active' });
    h.end('k1', 'a1');
    expect(h.router.get('k1')).toMatchObject({ pending: 1, running: 0 });
  });

  it('admits() a never-seen key without creating an actor or storing anything', async () => {
    const h = harness();
    expect(h.router.admits('never-seen')).toBe(true);
    expect(h.router.liveCount).toBe(0);
    expect(h.router.get('never-seen')).toBeUndefined();
    expect(h.router.list()).toEqual([]);
    await h.settle();
    expect(h.commits).toEqual([]);
    expect(h.instances.size).toBe(0);
  });

  it('admits() follows the target of a live instance', async () => {
    const h = harness();
    h.pend('k1', 'a1');
    await h.router.setTarget('k1', 2);
    expect(h.router.admits('k1')).toBe(true);
    h.pend('k1', 'a2');
    expect(h.router.admits('k1')).toBe(false);
    h.end('k1', 'a2'); // 'ended' from 'running' of an attempt that never ran changes nothing
    expect(h.router.admits('k1')).toBe(false);
  });
});

describe('router: passivation', () => {
  it('keeps at most maxLiveInstances, evicting the least recently used idle actors', async () => {
    const h = harness({ maxLiveInstances: 2 });
    h.idle('a');
    h.idle('b');
    h.idle('c');
    expect(h.router.liveCount).toBe(2);
    expect(h.router.get('b')?.live).toBe(true);
    expect(h.router.get('c')?.live).toBe(true);
    await h.settle();
    expect(h.router.get('a')?.live).toBe(false);
    h.idle('b'); // b is now more recently used than c
    h.idle('d');
    expect(h.router.liveCount).toBe(2);
    expect(h.router.get('b')?.live).toBe(true);
    expect(h.router.get('d')?.live).toBe(true);
    await h.settle();
    expect(h.router.get('c')?.live).toBe(false);
    expect(h.router.get('a')?.live).toBe(false);
    expect([...h.instances.keys()].sort()).toEqual(['a', 'b', 'c', 'd']);
  });

  it('evicts only idle actors: a busy older one stays live', async () => {
    const h = harness({ maxLiveInstances: 2 });
    h.pend('busy', 'x1');
    h.idle('quiet');
    h.pend('new', 'x2');
    expect(h.router.liveCount).toBe(2);
    expect(h.router.get('busy')).toMatchObject({ live: true, pending: 1 });
    expect(h.router.get('new')).toMatchObject({ live: true, pending: 1 });
    await h.settle();
    expect(h.router.get('quiet')?.live).toBe(false);
  });

  it('keeps busy actors even over the limit, and the new busy one too', () => {
    const h = harness({ maxLiveInstances: 1 });
    h.pend('a', 'x1');
    h.pend('b', 'x2');
    h.pend('c', 'x3');
    expect(h.router.liveCount).toBe(3);
    for (const key of ['a', 'b', 'c']) expect(h.router.get(key), key).toMatchObject({ live: true, pending: 1, status: 'active' });
    // The event that created `c` must not be lost: its attempt can move on.
    h.run('c', 'x3');
    expect(h.router.get('c')).toMatchObject({ pending: 0, running: 1 });
  });

  it('prefers to keep actors with queued work', async () => {
    const h = harness({ maxLiveInstances: 2, hasQueuedWork: (key) => key === 'a' });
    h.idle('a');
    h.idle('b');
    h.idle('c');
    expect(h.router.get('a')?.live).toBe(true);
    expect(h.router.get('c')?.live).toBe(true);
    await h.settle();
    expect(h.router.get('b')?.live).toBe(false);
  });

  it('keeps a passivated instance visible to get() and admits() before its write has landed', () => {
    const h = harness({ maxLiveInstances: 1, failedAttemptThreshold: 1 });
    h.attempt('a', 'f1', 'fail'); // degrades a
    expect(h.router.admits('a')).toBe(false);
    h.idle('b'); // passivates a in the same turn
    expect(h.router.liveCount).toBe(1);
    expect(h.router.get('a')).toMatchObject({ live: false, status: 'degraded' });
    expect(h.router.admits('a')).toBe(false);
  });

  it('rehydrates a passivated instance from its envelope with target and streak intact', async () => {
    const h = harness({ maxLiveInstances: 1, failedAttemptThreshold: 10 });
    h.idle('a');
    await h.router.setTarget('a', 3);
    h.attempt('a', 'f1', 'fail');
    await h.settle();
    h.idle('b');
    await h.settle();
    expect(h.router.get('a')).toMatchObject({ live: false, target: 3, consecutiveFailures: 1, recentFailures: ['f1'], pending: 0 });
    expect(h.router.admits('a')).toBe(true);
    h.pend('a', 'next');
    expect(h.router.get('a')).toMatchObject({ live: true, target: 3, consecutiveFailures: 1, recentFailures: ['f1'], pending: 1, running: 0 });
  });

  it('rehydrates with the target set just before passivation, even before that write has landed', async () => {
    const h = harness({ maxLiveInstances: 1 });
    h.idle('a');
    await h.settle();
    const targetSet = h.router.setTarget('a', 2);
    h.idle('b'); // passivates a in the same turn
    h.pend('a', 'again'); // and brings it back before any commit has landed
    await targetSet;
    await h.settle();
    expect(h.router.get('a')).toMatchObject({ live: true, target: 2 });
    await h.router.flush();
    await h.settle();
    expect(contextOf(h.instances.get('a')).target).toBe(2);
  });

  it('does not resurrect attempt counts of a snapshot written while the instance was busy', async () => {
    const h = harness({ maxLiveInstances: 1 });
    h.pend('a', 'x1');
    h.run('a', 'x1');
    await h.router.setTarget('a', 2); // snapshot written with running = 1
    h.end('a', 'x1'); // idle again; nothing durable changed, so no new snapshot
    h.idle('b'); // passivates a
    await h.settle();
    h.pend('a', 'x2');
    expect(h.router.get('a')).toMatchObject({ live: true, pending: 1, running: 0 });
    expect(h.router.admits('a')).toBe(true);
  });
});

describe('router: recovery across boots', () => {
  it("sends 'recover' to an envelope from another boot: transient counts are zeroed", () => {
    const h = harness();
    h.instances.set('old', storedEnvelope('old', { bootId: 'previous-boot', pending: 2, running: 3, target: 4 }));
    expect(h.router.get('old')).toMatchObject({ live: false, target: 4 });
    h.pend('old', 'fresh');
    expect(h.router.get('old')).toMatchObject({ live: true, pending: 1, running: 0, stopping: 0, target: 4 });
    expect(h.router.admits('old')).toBe(true);
  });

  it('admits() a stored instance of another boot by its target only, ignoring stale counts', () => {
    const h = harness();
    h.instances.set('old', storedEnvelope('old', { bootId: 'previous-boot', running: 5, target: 1 }));
    h.instances.set('closed', storedEnvelope('closed', { bootId: 'previous-boot', target: 0 }));
    expect(h.router.admits('old')).toBe(true);
    expect(h.router.admits('closed')).toBe(false);
    expect(h.router.liveCount).toBe(0);
  });

  it('rebuilds an envelope of an unknown machine version from its context, keeping agent, lane and target', async () => {
    const h = harness();
    h.instances.set('legacy', storedEnvelope('legacy', { bootId: 'previous-boot', running: 1, target: 5, version: 0 }));
    await h.router.reset('legacy');
    expect(h.router.get('legacy')).toMatchObject({ live: true, agent: 'coder', lane: 'default', target: 5, running: 0 });
    await h.settle();
    expect(h.instances.get('legacy')).toMatchObject({ version: 1, bootId: BOOT });
  });
});

describe('router: setTarget and reset', () => {
  it('persists the snapshot and appends an instance.target event in the same commit', async () => {
    const h = harness();
    h.idle('k');
    await h.settle();
    h.clock.advance(500);
    await h.router.setTarget('k', 3);
    const commit = h.commits.find((c) => c.events.some((e) => e.type === 'instance.target'));
    expect(commit).toBeDefined();
    expect(commit!.events).toHaveLength(1);
    expect(commit!.events[0]).toMatchObject({ type: 'instance.target', at: 1_500, data: { instanceKey: 'k', target: 3 } });
    const written = commit!.instances.filter(([key]) => key === 'k');
    expect(written).toHaveLength(1);
    expect(contextOf(written[0]![1]).target).toBe(3);
    expect(h.router.get('k')?.target).toBe(3);
    expect(contextOf(h.instances.get('k')).target).toBe(3);
  });

  it('accepts null to clear the target', async () => {
    const h = harness();
    h.idle('k');
    await h.router.setTarget('k', 1);
    await h.router.setTarget('k', null);
    expect(h.router.get('k')?.target).toBeNull();
    expect(h.events().filter((e) => e.type === 'instance.target').map((e) => e.data?.target)).toEqual([1, null]);
  });

  it('sets the target of a passivated instance by rehydrating it', async () => {
    const h = harness({ maxLiveInstances: 1 });
    h.idle('a');
    h.idle('b');
    await h.settle();
    expect(h.router.get('a')?.live).toBe(false);
    await h.router.setTarget('a', 7);
    expect(h.router.get('a')).toMatchObject({ live: true, target: 7 });
  });

  it('throws NOT_FOUND for an unknown key, creating nothing', async () => {
    const h = harness();
    const target = await h.router.setTarget('ghost', 1).then(
      () => undefined,
      (error: unknown) => error,
    );
    expect(target).toBeInstanceOf(TroupeError);
    expect(target).toMatchObject({ code: 'NOT_FOUND' });
    await expect(h.router.reset('ghost')).rejects.toMatchObject({ name: 'TroupeError', code: 'NOT_FOUND' });
    expect(h.router.liveCount).toBe(0);
    await h.settle();
    expect(h.events()).toEqual([]);
  });
});

describe('router: degradation', () => {
  it('emits instance.degraded once at the threshold and stops admitting', async () => {
    const h = harness({ failedAttemptThreshold: 2 });
    h.attempt('k', 'f1', 'fail');
    expect(h.router.admits('k')).toBe(true);
    h.clock.advance(10);
    h.attempt('k', 'f2', 'error');
    await h.settle();
    const degraded = h.events().filter((e) => e.type === 'instance.degraded');
    expect(degraded).toHaveLength(1);
    expect(degraded[0]).toMatchObject({ at: 1_010, data: { instanceKey: 'k', consecutiveFailures: 2, recentFailures: ['f1', 'f2'] } });
    expect(h.router.get('k')).toMatchObject({ status: 'degraded', consecutiveFailures: 2 });
    expect(h.router.admits('k')).toBe(false);
    expect(h.lines.some((l) => l.level === 'warn' && l.message === 'instance degraded')).toBe(true);
    h.attempt('k', 'f3', 'fail');
    await h.settle();
    expect(h.events().filter((e) => e.type === 'instance.degraded')).toHaveLength(1);
    await h.router.flush();
    await h.settle();
    expect((h.instances.get('k')?.snapshot as { value: unknown }).value).toBe('degraded');
  });

  it('does not count crashes or interruptions toward degradation', async () => {
    const h = harness({ failedAttemptThreshold: 1 });
    h.attempt('k', 'c1', 'crashed');
    h.attempt('k', 'c2', 'interrupted');
    await h.settle();
    expect(h.events().filter((e) => e.type === 'instance.degraded')).toEqual([]);
    expect(h.router.admits('k')).toBe(true);
  });

  it('keeps a passivated degraded instance out of admission, and reset() brings it back', async () => {
    const h = harness({ maxLiveInstances: 1, failedAttemptThreshold: 1 });
    h.attempt('k', 'f1', 'fail');
    h.idle('other');
    await h.settle();
    expect(h.router.get('k')).toMatchObject({ live: false, status: 'degraded' });
    expect(h.router.admits('k')).toBe(false);
    await h.router.reset('k');
    expect(h.router.get('k')).toMatchObject({ live: true, status: 'idle', consecutiveFailures: 0 });
    expect(h.router.admits('k')).toBe(true);
    await h.settle();
    expect(contextOf(h.instances.get('k')).consecutiveFailures).toBe(0);
  });

  it('never degrades with a threshold of 0', async () => {
    const h = harness({ failedAttemptThreshold: 0 });
    for (let i = 0; i < 20; i++) h.attempt('k', `f${i}`, 'fail');
    await h.settle();
    expect(h.router.get('k')).toMatchObject({ status: 'idle', consecutiveFailures: 20 });
    expect(h.router.get('k')?.recentFailures).toHaveLength(10);
    expect(h.router.admits('k')).toBe(true);
  });
});

describe('router: list', () => {
  it('shows live and passivated instances, sorted by key', async () => {
    const h = harness({ maxLiveInstances: 1 });
    h.idle('b');
    h.idle('a');
    h.pend('c', 'x1');
    await h.settle();
    const list = h.router.list();
    expect(list.map((v) => [v.key, v.live])).toEqual([
      ['a', false],
      ['b', false],
      ['c', true],
    ]);
    expect(list.find((v) => v.key === 'b')).toMatchObject({ agent: 'coder', lane: 'default', workspace: '/ws/b', status: 'idle', pending: 0 });
    expect(list.find((v) => v.key === 'c')).toMatchObject({ status: 'active', pending: 1 });
  });

  it('lists a live instance once even when it also has a stored envelope', async () => {
    const h = harness();
    h.idle('a');
    await h.settle();
    expect(h.instances.has('a')).toBe(true);
    expect(h.router.list().map((v) => v.key)).toEqual(['a']);
  });
});

describe('router: flush', () => {
  it('persists every changed live actor', async () => {
    const h = harness();
    h.idle('a');
    await h.settle();
    // A streak change is durable; flush() writes it even before the queued write would.
    h.attempt('a', 'f1', 'fail');
    await h.router.flush();
    await h.settle();
    expect(contextOf(h.instances.get('a')).consecutiveFailures).toBe(1);
  });

  it('writes nothing when nothing durable changed', async () => {
    const h = harness();
    h.idle('a');
    await h.settle();
    const before = h.commits.length;
    h.attempt('a', 'ok1', 'success');
    await h.router.flush();
    await h.settle();
    expect(h.commits.length).toBe(before);
  });

describe('attempt changes batched per turn', () => {
  it('gives each instance one event per turn, and the gate sees the changes at once', async () => {
    const h = harness();
    h.router.send('k', { type: 'target', target: 2, at: h.clock.now() }, h.desc('k'));
    const sent: string[] = [];
    const change = (attemptId: string, c: 'pending' | 'running', from?: 'pending') => h.router.note('k', from ? { attemptId, runId: attemptId, change: c, from } : { attemptId, runId: attemptId, change: c }, h.clock.now(), h.desc('k'));
    change('a', 'pending');
    expect(h.router.admits('k')).toBe(true);
    change('b', 'pending');
    // Not sent yet, but counted: at its target of 2.
    expect(h.router.admits('k')).toBe(false);
    expect(h.router.get('k')).toMatchObject({ pending: 2, status: 'active' });
    change('a', 'running', 'pending');
    expect(h.router.get('k')).toMatchObject({ pending: 1, running: 1 });
    await Promise.resolve();
    await Promise.resolve();
    expect(h.router.get('k')).toMatchObject({ pending: 1, running: 1 });
    sent.push('drained');
    expect(h.router.admits('k')).toBe(false);
    h.router.note('k', { attemptId: 'a', runId: 'a', change: 'ended', from: 'running', status: 'success' }, h.clock.now(), h.desc('k'));
    expect(h.router.admits('k')).toBe(true);
    expect(sent).toEqual(['drained']);
  });

  it('delivers every turn of changes, to each instance, also after an event sent between turns', async () => {
    const h = harness();
    const failOne = (key: string, attemptId: string) => {
      const note = (change: AttemptChange) => h.router.note(key, change, h.clock.now(), h.desc(key));
      note({ attemptId, runId: attemptId, change: 'pending' });
      note({ attemptId, runId: attemptId, change: 'running', from: 'pending' });
      note({ attemptId, runId: attemptId, change: 'ended', from: 'running', status: 'fail' });
    };
    const turn = async () => {
      await Promise.resolve();
      await Promise.resolve();
    };
    // The failure streak counts only what the actor was sent, not what is noted for the turn.
    const streak = (key: string) => h.router.get(key)?.consecutiveFailures;
    failOne('k', 'a');
    failOne('j', 'x');
    expect(streak('k')).toBe(0);
    await turn();
    expect([streak('k'), streak('j')]).toEqual([1, 1]);
    failOne('k', 'b');
    await turn();
    expect([streak('k'), streak('j')]).toEqual([2, 1]);
    failOne('k', 'c');
    // A sent event delivers the turn's changes first.
    h.router.send('k', { type: 'target', target: 3, at: h.clock.now() }, h.desc('k'));
    expect(streak('k')).toBe(3);
    failOne('k', 'd');
    failOne('j', 'y');
    await turn();
    expect([streak('k'), streak('j')]).toEqual([4, 2]);
    // One change a turn.
    const once = (change: AttemptChange) => h.router.note('j', change, h.clock.now(), h.desc('j'));
    once({ attemptId: 'z', runId: 'z', change: 'pending' });
    await turn();
    once({ attemptId: 'z', runId: 'z', change: 'running', from: 'pending' });
    await turn();
    once({ attemptId: 'z', runId: 'z', change: 'ended', from: 'running', status: 'fail' });
    await turn();
    expect(streak('j')).toBe(3);
    expect(h.router.get('k')).toMatchObject({ pending: 0, running: 0, target: 3 });
    expect(h.router.get('j')).toMatchObject({ pending: 0, running: 0 });
  });
});
});

