/**
 * A cluster node (issue #15): one process's share of the work on a PostgreSQL queue, run on the
 * same agent pool as the LMDB runtime (src/pool/pool.ts). It migrates the schema, joins the
 * cluster, and then loops: claims as many tasks as it has free slots, plus a start-ahead window
 * once attempts are known to be fast (claimer.ts, src/tasks/start-ahead.ts: the threads queue
 * what is beyond their slots, so a freed slot takes the next attempt without waiting for a claim),
 * hands each to a thread, settles what the threads report in one transaction per turn, several
 * turns' transactions in flight at once (settler.ts), renews the
 * leases of what it runs (leases.ts), sweeps for dead nodes and expired leases, so any node
 * takes back the attempts of one that died, and fires the cluster's due cron schedules
 * (firer.ts), so each tick fires while any node lives. The runtime on PostgreSQL runs one
 * (src/cluster/runtime.ts), and stops an attempt whose task a user cancels on any node, and every
 * attempt it holds when any runtime kills the cluster (node-kill.ts).
 *
 * A node that loses its liveness connection may already be taken for dead, its attempts taken
 * back: it stops claiming and aborts its attempts (whatever they report then is fenced).
 */
import pg from 'pg';
import { heartbeatMsOf } from '../tasks/attempt.js';
import { coerceError, TroupeError } from '../errors.js';
import { Lifecycle, validateCloseOptions, type CloseOptions, type RuntimeState } from '../lifecycle.js';
import { resolveLogger, type Logger } from '../log.js';
import { within } from '../within.js';
import { createPiscinaPool, type AgentPool } from '../pool/pool.js';
import type { RegisteredAgent } from '../agents/registry.js';
import { storeLimits } from './agent-rows.js';
import { migrate } from '../store/postgres/migrations.js';
import { KILL_PAYLOAD } from '../store/postgres/control.js';
import { joinCluster, type ClusterNode } from '../store/postgres/nodes.js';
import { leaseCheckMsOf, runSweeper } from '../store/postgres/sweeper.js';
import { StartAhead } from '../tasks/start-ahead.js';
import { Claimer } from './claimer.js';
import { Every } from './every.js';
import { Firer } from './firer.js';
import { LeaseKeeper } from './leases.js';
import { LogWriter } from './log-writer.js';
import type { NodeAttempt } from './node-attempt.js';
import { NodeAttempts } from './node-attempts.js';
import { KillWatch } from './node-kill.js';
import { NodeInputs } from './node-inputs.js';
import { NodeJoins } from './node-joins.js';
import { resolveNodeOptions, type ClusterNodeOptions, type ResolvedNodeOptions } from './options.js';
import { Settler } from './settler.js';

export type { ClusterNodeOptions } from './options.js';

/** A running cluster node. */
export interface RunningClusterNode {
  /** Its id in `troupe_nodes` (the `node` of its attempt rows). */
  readonly id: string;
  /** starting → running → draining → closed. */
  readonly state: RuntimeState;
  /** Whether it lost its liveness connection (it claims nothing more). */
  readonly lost: boolean;
  /** Attempts it holds: claimed and not yet settled. */
  readonly held: number;
  /** The start-ahead window (attempts it claims beyond free slots now) and the moving averages (ms) that size it. */
  readonly prefetch: { window: number; startMs: number; execMs: number };
  /**
   * Stops claiming, lets running attempts finish for up to `timeoutMs` (`force`: not at all), then
   * aborts the rest: they and any attempt still queued on a thread end as interrupted, so their
   * tasks are requeued without spending their attempt budget. Then it leaves the cluster and ends
   * its threads. Every step runs even when one fails; the promise is cached, and a later call with
   * `force: true` stops its wait for running attempts.
   */
  close(options?: CloseOptions): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

/** Settle transactions a node runs at once (as the cluster bench's nodes do). */
const SETTLES_IN_FLIGHT = 3;
/**
 * One claim takes at most this share of the rows a node may hold (slots + prefetch), so the next
 * share is claimed and run while the last one's settle is in flight. A claim of the whole budget
 * made claim, run and settle take turns: the next claim waited for the settle that freed its
 * rows. Measured, one runtime node (1 thread × 32 slots, prefetch 1,024, 20,000 no-op tasks, 2
 * cores): 8,200-10,600 tasks/s with whole-budget claims, 12,100-12,500 with thirds (claims of
 * 352), 11,300-12,100 with halves, 9,100-10,700 with claims of 128; three nodes, which overlap one
 * another already, within the noise either way.
 */
const CLAIM_SHARES = 3;
/** Connections of a node's pool: one each for claims, renewals, the sweeper, cron fires and log lines, and one per settle in flight. */
const CONNECTIONS = 5 + SETTLES_IN_FLIGHT;

/** Starts a cluster node (see the module comment). INVALID_OPTIONS for bad options, before anything connects. */
export async function startClusterNode(input: ClusterNodeOptions): Promise<RunningClusterNode> {
  return openClusterNode(resolveNodeOptions(input));
}

/** A node as the runtime on PostgreSQL drives it (src/cluster/runtime.ts): it registers agents as it runs. */
export interface ClusterNodeHandle extends RunningClusterNode {
  /** Claims tasks of `agent` from now on (or runs them with its new registration); its limits must be stored already. */
  register(agent: RegisteredAgent): void;
  /** Claims now: work may have come (a submit, a retry, an event of the log). */
  wake(): void;
  /** Attempts not yet ended: queued on their threads or running. */
  readonly running: number;
  /** rt.kill() froze the cluster (this runtime's, or a NOTIFY said so): stops what it runs if the control row says killed (node-kill.ts). */
  killRequested(): void;
}

/**
 * Starts a node from resolved options: migrates the schema, stores what its agents' registrations
 * ask of the cluster (agent-rows.ts: limits, backoff, capabilities, retention; what a registration does not give
 * stays as stored), joins the cluster, and starts its loops. STORE_FAILED when the database cannot be reached.
 * With `keepsProcessAlive: false` its idle connections do not hold the process (a runtime's
 * KeepAlive does: src/keep-alive.ts); the timers of its loops never do.
 */
export async function openClusterNode(options: ResolvedNodeOptions, { keepsProcessAlive = true }: { keepsProcessAlive?: boolean } = {}): Promise<ClusterNodeHandle> {
  const log = resolveLogger(options.logger).child({ component: 'cluster-node' });
  const db = new pg.Pool({ connectionString: options.connectionString, max: CONNECTIONS, application_name: 'troupe-node-queue', allowExitOnIdle: !keepsProcessAlive });
  // An idle connection the server ends must not take the process down: the next query reconnects.
  db.on('error', (error) => log.warn({ err: error }, 'an idle database connection failed'));
  let member: ClusterNode;
  let pool: AgentPool;
  // The liveness connection may break before the node is built.
  let lostEarly: Error | undefined;
  let node: Node | undefined;
  try {
    await migrate(db);
    for (const agent of options.agents.values()) await storeLimits(db, agent);
    member = await joinCluster(
      options.connectionString,
      (error) => (node ? node.lose(error) : (lostEarly = error)),
      (taskId) => node?.cancelRequested(taskId),
      { keepsProcessAlive, onInput: (taskId) => node?.inputs.delivered(taskId), onJoin: (parentId) => node?.joins.settled(parentId) },
    );
  } catch (error) {
    await db.end().catch(() => undefined);
    throw error instanceof TroupeError ? error : new TroupeError('STORE_FAILED', `starting a cluster node failed: ${coerceError(error).message}`, { cause: error });
  }
  try {
    pool = (options.createPool ?? createPiscinaPool)({
      threads: options.threads,
      slotsPerThread: options.slotsPerThread,
      heartbeatMs: heartbeatMsOf(options.leaseMs),
      onError: (error) => log.error({ err: error }, 'worker thread error'),
    });
  } catch (error) {
    await member.leave().catch(() => undefined);
    await db.end().catch(() => undefined);
    throw error;
  }
  node = new Node(options, log.child({ node: member.id }), db, member, pool);
  node.start();
  if (lostEarly) node.lose(lostEarly);
  return node;
}

/** See the module comment. */
class Node implements ClusterNodeHandle {
  readonly id: string;
  readonly #options: ResolvedNodeOptions;
  readonly #log: Logger;
  readonly #db: pg.Pool;
  readonly #member: ClusterNode;
  readonly #pool: AgentPool;
  readonly #lifecycle: Lifecycle;
  readonly #settler: Settler;
  readonly #logs: LogWriter;
  readonly #attempts: NodeAttempts;
  /** Agents' input calls (node-inputs.ts); told of delivered inputs by their NOTIFY and the lease renewals. */
  readonly inputs: NodeInputs;
  /** Agents' spawns and joins (node-joins.ts); told of settled children by their NOTIFY. */
  readonly joins: NodeJoins;
  readonly #claimer: Claimer;
  readonly #leases: LeaseKeeper;
  readonly #kills: KillWatch;
  readonly #firer: Firer;
  /** Wakes the cluster's sleeping tasks that are due, every `pollMs` (store/postgres/wakes.ts). */
  readonly #waker: Every;
  readonly #ahead: StartAhead;
  readonly #sweeping = new AbortController();
  /** The agents it claims for, by name; {@link Node.register} adds to them. */
  readonly #agents: Map<string, RegisteredAgent>;
  #agentNames: string[];
  #sweeper: Promise<void> | undefined;
  #lost = false;
  #closing: Promise<void> | undefined;
  /** Ends a graceful close's wait for running attempts at once (a later `close({ force: true })`). */
  #hurry: (() => void) | undefined;
  /** A close was forced (at its start or later): no wait for running attempts, and the least time for the steps after it. */
  #forced = false;

  constructor(options: ResolvedNodeOptions, log: Logger, db: pg.Pool, member: ClusterNode, pool: AgentPool) {
    this.id = member.id;
    this.#options = options;
    this.#log = log;
    this.#db = db;
    this.#member = member;
    this.#pool = pool;
    this.#lifecycle = new Lifecycle(log);
    this.#agents = new Map(options.agents);
    this.#agentNames = [...this.#agents.keys()];
    const { clock, queue, leaseMs, pollMs } = options;
    const slots = options.threads * options.slotsPerThread;
    const ahead = (this.#ahead = new StartAhead(slots, options.prefetch));
    const claimShare = Math.max(slots, Math.ceil((slots + options.prefetch) / CLAIM_SHARES));
    this.#settler = new Settler(db, queue, log, clock, pollMs, SETTLES_IN_FLIGHT);
    this.#logs = new LogWriter({ pool: db, queue, log, clock, retryMs: pollMs });
    const [park, unpark] = [(attempt: NodeAttempt) => this.#attempts.park(attempt), (attempt: NodeAttempt) => this.#attempts.unpark(attempt)];
    this.joins = new NodeJoins({ pool: db, log, clock, everyMs: heartbeatMsOf(leaseMs), agent: (name) => this.#agents.get(name), park, unpark, tracing: options.tracing, maxQueued: options.maxQueued, refused: () => options.observer?.refused?.() });
    this.inputs = new NodeInputs({ pool: db, log, park, unpark, children: this.joins });
    this.#attempts = new NodeAttempts({ pool, settler: this.#settler, logs: this.#logs, clock, log, random: options.random, leaseMs, cancelGraceMs: options.cancelGraceMs, ahead, freed: () => this.#claimer.wake(), observer: options.observer, inputs: this.inputs, tracing: options.tracing });
    this.#claimer = new Claimer({
      pool: db,
      queue,
      node: member.id,
      agents: () => this.#agentNames,
      leaseMs,
      pollMs,
      clock,
      log,
      // Attempts not yet ended stay within the slots and the window; rows held until their settle
      // commits (but those of agents parked on an input), within the slots and the window's cap;
      // one claim, within a share of that cap.
      free: () => Math.min(claimShare, slots + ahead.window - this.#attempts.running, slots + options.prefetch - this.#attempts.held + this.#attempts.parked),
      accept: (claimed, ms) => {
        ahead.started(ms);
        this.#attempts.accept(claimed, this.#agents, this.#lifecycle.state === 'running' && !this.#lost);
      },
      refused: (error) => this.lose(error),
    });
    this.#kills = new KillWatch({ pool: db, attempts: this.#attempts, claims: () => this.#claimer.settled(), log });
    this.#leases = new LeaseKeeper({ pool: db, queue, leaseMs, everyMs: heartbeatMsOf(leaseMs), clock, log, due: () => this.#attempts.due(),
      renewing: () => this.#kills.check(),
      lost: (leases) => this.#attempts.lost(leases),
      cancels: (leases) => {
        for (const lease of leases) this.#attempts.cancel(lease, lease.reason);
      },
      inputs: (leases) => this.inputs.renewed(leases),
    });
    this.#firer = new Firer({
      pool: db,
      queue,
      node: member.id,
      everyMs: options.fireMs,
      clock,
      log,
      fired: () => this.#claimer.wake(),
      refused: (error) => this.lose(error),
    });
    this.#waker = new Every(clock, pollMs, async () => {
      try {
        if ((await queue.wake(db)) > 0) this.#claimer.wake();
      } catch (error) {
        log.warn({ err: error }, 'waking sleeping tasks failed; the next poll tries again');
      }
    });
    pool.connect(this.#attempts.host);
  }

  get state(): RuntimeState {
    return this.#lifecycle.state;
  }

  get lost(): boolean {
    return this.#lost;
  }

  get held(): number {
    return this.#attempts.held;
  }

  get running(): number {
    return this.#attempts.running;
  }

  register(agent: RegisteredAgent): void {
    this.#agents.set(agent.name, agent);
    this.#agentNames = [...this.#agents.keys()];
    this.#claimer.wake();
  }

  wake(): void {
    if (!this.#lost) this.#claimer.wake();
  }

  /**
   * A cancel named `taskId` (CANCEL_CHANNEL): if this node runs its attempt, the cancel's reason
   * is read from the row, and the attempt stops if the row still names it. A kill's NOTIFY names
   * no task (KILL_PAYLOAD): see {@link killRequested}.
   */
  cancelRequested(taskId: string): void {
    if (taskId === KILL_PAYLOAD) return this.killRequested();
    const lease = this.#attempts.leaseOf(taskId);
    if (!lease) return;
    this.#db
      .query<{ token: string; cancel_reason: string | null }>('SELECT token, cancel_reason FROM troupe_tasks WHERE id = $1', [taskId])
      .then(({ rows }) => {
        const row = rows[0];
        if (row && Number(row.token) === lease.token && row.cancel_reason !== null) this.#attempts.cancel(lease, row.cancel_reason);
      })
      // The lease renewals see the cancel too.
      .catch((error: unknown) => this.#log.warn({ err: error, taskId }, 'reading a cancel request failed; the lease renewal will see it'));
  }

  killRequested(): void {
    this.#kills.check();
  }

  get prefetch(): { window: number; startMs: number; execMs: number } {
    return { window: this.#ahead.window, ...this.#ahead.averages };
  }

  start(): void {
    this.#lifecycle.set('running', { threads: this.#options.threads, slotsPerThread: this.#options.slotsPerThread, agents: [...this.#options.agents.keys()] });
    this.#leases.start();
    this.#sweeper = runSweeper(this.#db, {
      signal: this.#sweeping.signal,
      intervalMs: this.#options.sweepMs,
      leaseCheckMs: leaseCheckMsOf(this.#options.sweepMs, this.#options.leaseMs),
      onSweep: (result) => this.#log.info({ reclaimed: result.reclaimed.length, removedNodes: result.removedNodes }, 'swept: attempts taken back'),
      onError: (error) => this.#log.warn({ err: error }, 'a sweep failed'),
    });
    this.#claimer.wake();
    this.#firer.start();
    this.#waker.start(true);
    this.joins.start();
  }

  /** The node lost its liveness connection, or the cluster refused its claim: another node may take its work. */
  lose(error: Error): void {
    if (this.#lost) return;
    this.#lost = true;
    this.#log.error({ err: error }, 'this node is no longer a live member of the cluster; it stops claiming and aborts its attempts');
    void this.#claimer.stop();
    void this.#firer.stop();
    void this.#waker.stop();
    this.#attempts.stopAll('shutdown', 'the node lost its place in the cluster', this.#options.cancelGraceMs);
    try {
      this.#options.onLost?.(error);
    } catch (thrown) {
      this.#log.error({ err: thrown }, 'options.onLost threw');
    }
  }

  close(options?: CloseOptions): Promise<void> {
    const { timeoutMs, force } = validateCloseOptions(options);
    this.#forced ||= force;
    if (force) this.#hurry?.();
    if (this.#closing) return this.#closing;
    this.#lifecycle.set('draining');
    this.#closing = this.#close(timeoutMs);
    return this.#closing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  async #close(timeoutMs: number): Promise<void> {
    // Made before the first step, so a forced call during any step before the wait ends it.
    const hurried = new Promise<void>((resolve) => (this.#hurry = resolve));
    const errors: unknown[] = [];
    const step = async (what: string, run: () => Promise<unknown> | unknown) => {
      try {
        await run();
      } catch (error) {
        errors.push(error);
        this.#log.error({ err: error }, `closing: ${what} failed`);
      }
    };
    const attempts = this.#attempts;
    const { cancelGraceMs } = this.#options;
    await step('stopping claims', () => this.#claimer.stop());
    await step('stopping cron fires', () => this.#firer.stop());
    await step('stopping wakes', () => this.#waker.stop());
    await step('stopping join polls', () => this.joins.stop());
    // Only attempts already running may finish; those still queued on their threads end now.
    await step('stopping queued attempts', () => attempts.stopAll('shutdown', 'the node is closing', undefined, 'dispatched'));
    await step('waiting for running attempts', () => within(this.#forced ? 0 : timeoutMs, Promise.race([attempts.ended(), hurried])));
    this.#hurry = undefined;
    await step('aborting running attempts', () => attempts.stopAll('shutdown', 'the node is closing'));
    // Aborted agents get cancelGraceMs to clean up before their threads are destroyed under them.
    await step('waiting for aborted attempts', () => within(cancelGraceMs, attempts.ended()));
    await step('ending what did not stop', () => attempts.abandonAll());
    // Ends wait for their attempts' lines and progress; writes and settles that keep failing get as
    // long as running attempts had; a sweeper ends what is left.
    const storeMs = Math.max(this.#forced ? 0 : timeoutMs, cancelGraceMs, 1_000);
    await step('storing log lines and progress', () => within(storeMs, this.#logs.idle()));
    await step('giving up unstored log lines and progress', () => this.#logs.abandon());
    await step('settling', () => within(storeMs, this.#settler.idle()));
    await step('giving up unsettled ends', () => this.#settler.abandon());
    await step('stopping lease renewals', () => this.#leases.stop());
    await step('finishing kill checks', () => this.#kills.idle());
    await step('stopping the sweeper', async () => {
      this.#sweeping.abort();
      await this.#sweeper;
    });
    await step('ending the threads', () => this.#pool.destroy());
    await step('leaving the cluster', () => this.#member.leave());
    await step('closing the database pool', () => this.#db.end());
    this.#lifecycle.set('closed');
    if (errors.length > 0) throw new TroupeError('STORE_FAILED', `closing the cluster node failed: ${coerceError(errors[0]).message}`, { cause: errors[0] });
  }
}
