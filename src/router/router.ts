/**
 * The router: instance key → live instance actor. On a miss it rehydrates the actor from its
 * snapshot envelope (or creates it), and it passivates idle actors beyond `maxLiveInstances`
 * (snapshot, stop, evict), so a million instances cost disk, not heap, like Orleans' virtual actors.
 *
 * A snapshot is written only when something that must survive a restart changes (state, dispatch
 * target, failure streak); attempt counts are transient and are cleared by a `recover` event when a
 * snapshot from an earlier boot is rehydrated.
 */
import { createActor, type Actor } from 'xstate';
import {
  MACHINES,
  durableFingerprint,
  instanceMachine,
  instanceStatus,
  withFailedAttemptThreshold,
  type InstanceContext,
  type InstanceEmitted,
  type AttemptChange,
  type InstanceEvent,
  type InstanceSnapshotLike,
  type InstanceStatus,
} from '../../machines/index.js';
import type { Logger } from '../log.js';
import type { Clock } from '../clock.js';
import type { Store, StepWriter } from '../store/port.js';
import type { InstanceEnvelope } from '../store/records.js';
import { TroupeError } from '../errors.js';
import { ChurnMap, ChurnSet } from '../collections.js';

/** What the router needs to create an instance it has never seen. */
export interface InstanceDescriptor {
  agent: string;
  lane: string;
  workspace?: string;
}

/** A public view of an instance: its actor's context without the settings, plus status and residency. */
export type InstanceView = Pick<InstanceContext, 'key' | 'agent' | 'lane' | 'workspace' | 'pending' | 'running' | 'stopping' | 'target' | 'consecutiveFailures' | 'recentFailures'> & {
  status: InstanceStatus;
  /** Whether its actor is in memory right now (false: passivated to disk). */
  live: boolean;
};

/** Options of {@link createRouter}. */
export interface RouterOptions {
  store: Store;
  clock: Clock;
  log: Logger;
  maxLiveInstances: number;
  failedAttemptThreshold: number;
  /** Prefer to keep actors with queued work live. */
  hasQueuedWork(key: string): boolean;
}

type InstanceActor = Actor<typeof instanceMachine>;

interface LiveEntry {
  actor: InstanceActor;
  persisted: string;
  /** Attempt changes of this turn, not yet sent to the actor (one event per instance per turn). */
  changes: AttemptChange[];
  /** How those changes move the counts, so the governor's gate sees them at once. */
  pending: number;
  running: number;
  stopping: number;
  at: number;
}

/** See the module comment. */
export interface Router {
  /** Routes an event, creating or rehydrating the actor (after this turn's attempt changes). */
  send(key: string, event: InstanceEvent, descriptor: InstanceDescriptor): void;
  /**
   * Notes an attempt change: the counts move at once, and the instance gets the turn's changes
   * as one event at the end of the turn.
   */
  note(key: string, change: AttemptChange, at: number, descriptor: InstanceDescriptor): void;
  /** Governor gate: may this instance take another attempt? Does not create actors. */
  admits(key: string): boolean;
  /** When the instance degraded, or undefined if it is not degraded. Does not create actors. */
  degradedSince(key: string): number | undefined;
  /**
   * Routes a DispatchTarget event and persists it with an `instance.target` event. `descriptor`
   * creates an instance not seen yet (its tasks have not dispatched); NOT_FOUND without one.
   */
  setTarget(key: string, target: number | null, descriptor?: InstanceDescriptor): Promise<void>;
  /** Clears a degraded instance (`descriptor`: as for setTarget). */
  reset(key: string, descriptor?: InstanceDescriptor): Promise<void>;
  get(key: string): InstanceView | undefined;
  list(): InstanceView[];
  readonly liveCount: number;
  /** Persists every changed live actor (close). */
  flush(): Promise<void>;
}

/** Creates the router. */
export function createRouter(options: RouterOptions): Router {
  const { store, clock, log } = options;
  const live = new Map<string, LiveEntry>();
  /** The key last moved to (or created at) the back of `live`. */
  let newest: string | undefined;
  const dirty = new ChurnSet<string>();
  /** Envelopes whose commit has not landed yet: LMDB reads would still return the older value. */
  const writing = new ChurnMap<string, InstanceEnvelope>();
  let flushQueued = false;

  function envelopeOf(key: string): InstanceEnvelope | undefined {
    return writing.get(key) ?? store.read.instances.get(key);
  }

  function start(key: string, descriptor: InstanceDescriptor | undefined): LiveEntry | undefined {
    const envelope = envelopeOf(key);
    let actor: InstanceActor;
    let persisted = '';
    if (envelope && envelope.version === MACHINES.instance.version) {
      actor = createActor(instanceMachine, { snapshot: withFailedAttemptThreshold(envelope.snapshot, options.failedAttemptThreshold) as never, input: undefined as never });
      persisted = durableFingerprint(envelope.snapshot as InstanceSnapshotLike);
    } else {
      const context = (envelope?.snapshot as { context?: Partial<InstanceContext> } | undefined)?.context;
      const base = descriptor ?? (context?.agent ? { agent: context.agent, lane: context.lane ?? 'default', workspace: context.workspace } : undefined);
      if (!base) return undefined;
      actor = createActor(instanceMachine, {
        input: { key, agent: base.agent, lane: base.lane, workspace: base.workspace, failedAttemptThreshold: options.failedAttemptThreshold, target: context?.target ?? null },
      });
    }
    actor.on('degraded', (emitted: InstanceEmitted) => onDegraded(emitted));
    actor.start();
    // Only actors without attempts are passivated, and none survive a restart, so any attempt
    // count in a stored snapshot is stale (it may have been written while the instance was busy).
    if (envelope) actor.send({ type: 'recover', at: clock.now() });
    const entry: LiveEntry = { actor, persisted, changes: [], pending: 0, running: 0, stopping: 0, at: 0 };
    live.set(key, entry);
    newest = key;
    if (!envelope) {
      // First sight: persist it so setTarget, instances() and a rebuild can find it.
      dirty.add(key);
      queueFlush();
    }
    return entry;
  }

  function touch(key: string, descriptor?: InstanceDescriptor): LiveEntry | undefined {
    const entry = live.get(key);
    if (entry) {
      // Map order is LRU order: move to the back, unless it is there already (the common case:
      // the same instance's attempts, change after change).
      if (key !== newest) {
        live.delete(key);
        live.set(key, entry);
        newest = key;
      }
      return entry;
    }
    return start(key, descriptor);
  }

  /**
   * Entries with attempt changes not yet sent: an entry is here exactly while its `changes` are not
   * empty. A map of its own per turn, so a change noted while a drain delivers goes to the next.
   */
  let noted = new Map<string, LiveEntry>();
  let drainQueued = false;

  /** Sends each instance its turn's attempt changes as one event. */
  function drain(): void {
    drainQueued = false;
    const turn = noted;
    noted = new Map();
    for (const [key, entry] of turn) deliver(key, entry);
    if (live.size > options.maxLiveInstances) passivate('');
  }

  function deliver(key: string, entry: LiveEntry): void {
    if (entry.changes.length === 0) return;
    const changes = entry.changes;
    entry.changes = [];
    entry.pending = entry.running = entry.stopping = 0;
    entry.actor.send({ type: 'attempts', changes, at: entry.at });
    // Only an ended attempt can move durable state (the failure streak, degradation).
    for (const change of changes) {
      if (change.change === 'ended') {
        noteChange(key, entry);
        break;
      }
    }
  }

  /** Live counts: the actor's plus this turn's changes not yet sent. */
  function countsOf(entry: LiveEntry): { pending: number; running: number; stopping: number } {
    const c = entry.actor.getSnapshot().context;
    return { pending: c.pending + entry.pending, running: c.running + entry.running, stopping: c.stopping + entry.stopping };
  }

  function noteChange(key: string, entry: LiveEntry): void {
    if (durableFingerprint(entry.actor.getSnapshot()) !== entry.persisted) {
      dirty.add(key);
      queueFlush();
    }
  }

  function queueFlush(): void {
    if (flushQueued) return;
    flushQueued = true;
    queueMicrotask(() => {
      flushQueued = false;
      void flushDirty().catch((error: unknown) => log.error({ err: error }, 'persisting instance snapshots failed'));
    });
  }

  function writeSnapshot(w: StepWriter, key: string, entry: LiveEntry): InstanceEnvelope {
    const snapshot = entry.actor.getPersistedSnapshot();
    const envelope: InstanceEnvelope = { schema: 1, machine: 'instance', version: MACHINES.instance.version, seq: store.nextSeq, bootId: store.bootId, snapshot };
    w.putInstance(key, envelope);
    entry.persisted = durableFingerprint(entry.actor.getSnapshot());
    return envelope;
  }

  /** Commits snapshot writes, keeping them readable through envelopeOf until they land. */
  function commitSnapshots(write: (w: StepWriter) => Array<[string, InstanceEnvelope]>): Promise<unknown> {
    let written: Array<[string, InstanceEnvelope]> = [];
    const committed = store.commit((w) => {
      written = write(w);
    });
    for (const [key, envelope] of written) writing.set(key, envelope);
    const land = () => {
      for (const [key, envelope] of written) if (writing.get(key) === envelope) writing.delete(key);
    };
    committed.then(land, land);
    return committed;
  }

  function flushDirty(extra?: (w: StepWriter) => void): Promise<unknown> {
    const keys = [...dirty];
    dirty.clear();
    return commitSnapshots((w) => {
      const written: Array<[string, InstanceEnvelope]> = [];
      for (const key of keys) {
        const entry = live.get(key);
        if (entry) written.push([key, writeSnapshot(w, key, entry)]);
      }
      extra?.(w);
      return written;
    });
  }

  function onDegraded(emitted: InstanceEmitted): void {
    log.warn({ instanceKey: emitted.key, consecutiveFailures: emitted.consecutiveFailures }, 'instance degraded');
    dirty.add(emitted.key);
    void flushDirty((w) =>
      w.event('instance.degraded', { at: emitted.at, data: { instanceKey: emitted.key, consecutiveFailures: emitted.consecutiveFailures, recentFailures: emitted.recentFailures } }),
    ).catch((error: unknown) => log.error({ err: error }, 'persisting a degraded instance failed'));
  }

  /**
   * Evicts the least recently used actors without attempts beyond the limit (never `keep`, the
   * one just used). Busy actors stay live even over the limit: their counts exist only in memory.
   */
  function passivate(keep: string): void {
    if (live.size <= options.maxLiveInstances) return;
    let excess = live.size - options.maxLiveInstances;
    const evicted: Array<[string, LiveEntry]> = [];
    for (const pass of [true, false]) {
      for (const [key, entry] of live) {
        if (excess === 0) break;
        if (key === keep) continue;
        if (entry.changes.length > 0) continue;
        const { pending, running, stopping } = entry.actor.getSnapshot().context;
        if (pending + running + stopping > 0) continue;
        if (pass && options.hasQueuedWork(key)) continue;
        live.delete(key);
        evicted.push([key, entry]);
        excess--;
      }
    }
    const changed = evicted.filter(([key, entry]) => dirty.has(key) || durableFingerprint(entry.actor.getSnapshot()) !== entry.persisted);
    if (changed.length > 0) {
      commitSnapshots((w) =>
        changed.map(([key, entry]) => {
          dirty.delete(key);
          return [key, writeSnapshot(w, key, entry)];
        }),
      ).catch((error: unknown) => log.error({ err: error }, 'persisting passivated instances failed'));
    }
    for (const [, entry] of evicted) entry.actor.stop();
  }

  function view(key: string, snapshot: InstanceSnapshotLike, entry: LiveEntry | undefined): InstanceView {
    const c = snapshot.context;
    const counts = entry ? countsOf(entry) : { pending: 0, running: 0, stopping: 0 };
    return {
      key,
      agent: c.agent,
      lane: c.lane,
      workspace: c.workspace,
      // An instance not live runs nothing (no actor survives a restart, and only idle ones are
      // passivated): the counts its stored snapshot holds are stale, and so would a status from them be.
      status: instanceStatus(snapshot, counts),
      ...counts,
      target: c.target,
      consecutiveFailures: c.consecutiveFailures,
      recentFailures: [...c.recentFailures],
      live: entry !== undefined,
    };
  }

  function requireEntry(key: string, descriptor: InstanceDescriptor | undefined): LiveEntry {
    const entry = touch(key, descriptor);
    if (!entry) throw new TroupeError('NOT_FOUND', `no instance ${key}`);
    passivate(key);
    return entry;
  }

  return {
    send(key, event, descriptor) {
      const entry = touch(key, descriptor)!;
      deliver(key, entry);
      noted.delete(key);
      entry.actor.send(event);
      // Only an ended attempt can move durable state (the failure streak, degradation).
      if (event.type !== 'attempt' || event.change === 'ended') noteChange(key, entry);
      if (live.size > options.maxLiveInstances) passivate(key);
    },
    note(key, change, at, descriptor) {
      const entry = touch(key, descriptor)!;
      entry.changes.push(change);
      entry.at = at;
      if (change.from !== undefined) entry[change.from]--;
      if (change.change === 'pending' || change.change === 'running' || change.change === 'stopping') entry[change.change]++;
      // Its first change since it was last delivered puts it in `noted` (see there).
      if (entry.changes.length === 1) noted.set(key, entry);
      if (!drainQueued) {
        drainQueued = true;
        queueMicrotask(drain);
      }
    },
    admits(key) {
      const entry = live.get(key);
      if (entry) {
        const snapshot = entry.actor.getSnapshot();
        if (snapshot.value === 'degraded') return false;
        const { target } = snapshot.context;
        if (target === null) return true;
        const c = snapshot.context;
        return c.pending + entry.pending + c.running + entry.running + c.stopping + entry.stopping < target;
      }
      const envelope = envelopeOf(key);
      if (!envelope) return true;
      const snapshot = envelope.snapshot as InstanceSnapshotLike;
      // Attempt counts in a stored snapshot are stale (the actor is not live), only limits matter.
      return snapshot.value !== 'degraded' && (snapshot.context.target === null || snapshot.context.target > 0);
    },
    degradedSince(key) {
      const entry = live.get(key);
      const snapshot = entry ? entry.actor.getSnapshot() : (envelopeOf(key)?.snapshot as InstanceSnapshotLike | undefined);
      if (!snapshot || snapshot.value !== 'degraded') return undefined;
      return snapshot.context.degradedAt ?? 0;
    },
    async setTarget(key, target, descriptor) {
      const entry = requireEntry(key, descriptor);
      const at = clock.now();
      entry.actor.send({ type: 'target', target, at });
      dirty.add(key);
      await flushDirty((w) => w.event('instance.target', { at, data: { instanceKey: key, target } }));
    },
    async reset(key, descriptor) {
      const entry = requireEntry(key, descriptor);
      entry.actor.send({ type: 'reset', at: clock.now() });
      dirty.add(key);
      await flushDirty();
    },
    get(key) {
      const entry = live.get(key);
      if (entry) return view(key, entry.actor.getSnapshot(), entry);
      const envelope = envelopeOf(key);
      return envelope ? view(key, envelope.snapshot as InstanceSnapshotLike, undefined) : undefined;
    },
    list() {
      const out: InstanceView[] = [];
      for (const [key, entry] of live) out.push(view(key, entry.actor.getSnapshot(), entry));
      for (const { key, value } of store.read.instances.range()) {
        if (!live.has(key)) out.push(view(key, value.snapshot as InstanceSnapshotLike, undefined));
      }
      return out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    },
    get liveCount() {
      return live.size;
    },
    async flush() {
      drain();
      for (const [key, entry] of live) if (durableFingerprint(entry.actor.getSnapshot()) !== entry.persisted) dirty.add(key);
      if (dirty.size > 0) await flushDirty();
    },
  };
}
