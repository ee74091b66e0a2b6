/**
 * The cluster's task queue on PostgreSQL (issue #15): submit, claim and renew. Ending attempts is
 * settle.ts; taking back the attempts of dead nodes and of expired leases is sweeper.ts. Not wired
 * into the runtime yet: these are the durable verbs it will call, one transaction per batch.
 *
 * A claim moves up to n queued tasks of one agent to `running` for one node in one transaction:
 * `FOR UPDATE SKIP LOCKED` lets any number of nodes claim at once without waiting on each other or
 * taking the same task twice. Each claim bumps the task's `token`, and every later write of that
 * attempt (a settle, a renewal) must name the token: a write from an attempt that is no longer
 * current changes nothing. Leases and delays run on the database's clock (`now()`), never a node's.
 * A claim takes nothing while the cluster is frozen (control.ts) or its agent is paused
 * (backoff.ts), and no more than the agent's limits leave (limits.ts). Every transition appends
 * its event (`task.queued`, `task.started`) in the transaction that makes it.
 */
import type pg from 'pg';
import type { RetryPolicy } from '../../api/tasks.js';
import type { TraceCarrier } from '../records.js';
import { TroupeError } from '../../errors.js';
import { checkAgent, checkLease, checkLeaseMs, checkNode, checkTask, INT4_MAX, invalid, type Lease, type NewTask, type TaskRow } from './checks.js';
import { admit } from './admission.js';
import { BEGIN_HOLDING_CONTROLS } from './control.js';
import { appendEvents, eventOf, insertEvents, notifyIfAny } from './events.js';
import { pauseHolds } from './backoff.js';
import { routeRows } from './routing.js';
import { isLimited, limitColumns, limitsOf, reserveSlots, type LimitRow } from './limits.js';
import { epochMs, storeFailed, transaction } from './transaction.js';

export type { Lease, NewTask } from './checks.js';

/** What submitting one task did: `created`, or an earlier task with its idempotency key is `id`. */
export interface Submitted {
  id: string;
  created: boolean;
}

/** A task a node claimed: the attempt it now runs, and the token that attempt's writes carry. */
export interface ClaimedTask {
  id: string;
  agent: string;
  input: unknown;
  priority: number;
  /** The run (1-based) and the attempt number within it. */
  run: number;
  attempt: number;
  /** Attempts of this run that count against `maxAttempts`, this one included. */
  attempts: number;
  maxAttempts: number;
  /** The fencing token of this attempt. */
  token: number;
  /** `<taskId>:<run>:<attempt>`, as the LMDB store names attempts. */
  attemptId: string;
  /** When the lease runs out, on the database's clock (epoch ms). */
  leaseUntil: number;
  /** The task's own attempt timeout, when it gave one (its agent's applies otherwise). */
  timeoutMs?: number;
  /** The task's own retry fields, when it gave any, to lay over its agent's policy. */
  retry?: Partial<Omit<RetryPolicy, 'maxAttempts'>>;
  /** What the run that slept before this one returned as its `followUp` (ctx.followUp). */
  followUp?: unknown;
  /** How long the task was queued before this claim, on the database's clock (ms): the `queuedMs` of its `task.started`. */
  queuedMs: number;
  /** Its agent has a fast-failure backoff (backoff.ts): the attempt's end counts toward a pause. */
  backoff?: true;
  /** The trace context its submit stored (schema version 21): the attempt's span is its child. */
  trace?: TraceCarrier;
  /** The directory its agent works in (schema version 23), when its spec gave one: `ctx.workspace`. */
  workspace?: string;
}

/** What {@link renewLeases} did: leases held on, and those whose attempt is no longer current. */
export interface Renewal {
  renewed: Array<Lease & { leaseUntil: number }>;
  lost: Lease[];
  /** Renewed leases whose task a user asked to cancel (rt.cancel): their attempts should stop. */
  cancels: Array<Lease & { reason: string }>;
  /** Renewed leases whose task has had inputs delivered (inbox.ts), with how many: a parked agent may have one to take. */
  inputs?: Array<Lease & { delivered: number }>;
}

/**
 * Enqueues `tasks` in one transaction, in order, each at the end of its priority. A task whose
 * idempotency key is taken (by a stored task, or an earlier one of the batch) is not stored: its
 * answer is the holder's id with `created: false`. The answers come in the order of `tasks`.
 * INVALID_INPUT (nothing stored) for a malformed task, two with one id, or an id already stored.
 */
export async function submitTasks(pool: pg.Pool, tasks: readonly NewTask[]): Promise<Submitted[]> {
  const rows = checkTasks(tasks);
  if (rows.length === 0) return [];
  return transaction(pool, 'submitting tasks', (client) => insertTasks(client, rows));
}

/** Checks a batch to submit (see {@link submitTasks}) and returns its rows, or INVALID_INPUT. */
export function checkTasks(tasks: readonly NewTask[]): TaskRow[] {
  if (!Array.isArray(tasks)) throw invalid('tasks must be an array');
  const rows = tasks.map((task, i) => checkTask(task, `tasks[${i}]`));
  const ids = new Set<string>();
  for (const row of rows) {
    if (ids.has(row.id)) throw invalid(`task id ${JSON.stringify(row.id)} is given twice`);
    ids.add(row.id);
  }
  return rows;
}

/**
 * Inserts checked tasks in the caller's transaction, with a `task.queued` event for each one
 * created: what {@link submitTasks} does, for a verb that submits as part of a larger change (a
 * schedule's tick). A task with `requires` and no agent is routed first (routing.ts); one no agent
 * covers, or whose named agent does not, is stored `needs_attention` with a `task.needs_attention`
 * event instead. With `maxQueued`, AT_CAPACITY (the caller rolls back) when the new queued tasks
 * took the cluster's queued tasks past it (admission.ts).
 */
export async function insertTasks(client: pg.PoolClient, rows: readonly TaskRow[], maxQueued?: number): Promise<Submitted[]> {
  if (rows.length === 0) return [];
  // Tasks that name `requires` and no agent go to an agent now, or to needs_attention (routing.ts).
  const routes = await routeRows(client, rows);
  const stored = rows.map((r, i) => {
    const route = routes[i];
    if (route === null) return { ...r, state: r.unmatched ? 'needs_attention' : 'queued' };
    return route === undefined ? { ...r, unmatched: true, state: 'needs_attention' } : { ...r, agent: route.agent, maxAttempts: route.maxAttempts, state: 'queued' };
  });
  let inserted: pg.QueryResult<{ id: string; run_at: number }>;
  try {
    inserted = await client.query<{ id: string; run_at: number }>(
      `INSERT INTO troupe_tasks (id, agent, state, priority, max_attempts, idempotency_key, input, run_at, labels, timeout_ms, retry, parent_id, requires, retention, trace, workspace)
       SELECT id, agent, state, priority, max_attempts, key, input, now() + delay_ms * interval '1 millisecond', labels, timeout_ms, retry, parent_id, requires, retention, trace, workspace
         FROM unnest($1::text[], $2::text[], $3::int[], $4::int[], $5::text[], $6::jsonb[], $7::bigint[], $8::jsonb[], $9::bigint[], $10::jsonb[], $11::text[], $12::text[], $13::jsonb[], $14::jsonb[], $15::jsonb[], $16::text[])
              WITH ORDINALITY AS s(id, agent, priority, max_attempts, key, input, delay_ms, labels, timeout_ms, retry, parent_id, state, requires_json, retention, trace, workspace, n)
              CROSS JOIN LATERAL (SELECT CASE WHEN requires_json IS NULL THEN NULL ELSE ARRAY(SELECT jsonb_array_elements_text(requires_json)) END AS requires) r
        ORDER BY n
       ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
       RETURNING id, (extract(epoch FROM run_at) * 1000)::float8 AS run_at`,
      [
        stored.map((r) => r.id), stored.map((r) => r.agent), stored.map((r) => r.priority), stored.map((r) => r.maxAttempts), stored.map((r) => r.key), stored.map((r) => r.input),
        stored.map((r) => r.delayMs), stored.map((r) => r.labels), stored.map((r) => r.timeoutMs), stored.map((r) => r.retry), stored.map((r) => r.parentId), stored.map((r) => r.state),
        // A text[][] must be rectangular: each task's requires goes as a JSON array.
        stored.map((r) => (r.requires === null ? null : JSON.stringify(r.requires))),
        stored.map((r) => r.retention),
        stored.map((r) => r.trace),
        stored.map((r) => r.workspace),
      ],
    );
  } catch (error) {
    if ((error as { code?: string; constraint?: string }).code === '23505' && (error as { constraint?: string }).constraint === 'troupe_tasks_pkey') {
      throw invalid(`a task with an id of this batch is stored already (${(error as { detail?: string }).detail ?? 'duplicate id'})`);
    }
    throw error;
  }
  const created = new Map(inserted.rows.map((r) => [r.id, r.run_at]));
  const keys = rows.filter((r) => !created.has(r.id)).map((r) => r.key!);
  // Only a key can keep a task out (ON CONFLICT names it); whoever holds it is committed now.
  const holders = new Map<string, string>();
  if (keys.length > 0) {
    const { rows: held } = await client.query<{ id: string; key: string }>('SELECT id, idempotency_key AS key FROM troupe_tasks WHERE idempotency_key = ANY($1::text[])', [keys]);
    for (const { id, key } of held) holders.set(key, id);
  }
  if (maxQueued !== undefined) await admit(client, stored.filter((r) => r.state === 'queued' && created.has(r.id)).length, maxQueued);
  await appendEvents(
    client,
    stored.filter((r) => created.has(r.id)).map((r) => (r.unmatched ? unmatchedEvent(r) : queuedEvent(r, created.get(r.id)!))),
  );
  return rows.map((r) => (created.has(r.id) ? { id: r.id, created: true } : { id: holders.get(r.key!)!, created: false }));
}

/** A new task's `task.queued` event (with its start when delayed). */
function queuedEvent(r: TaskRow, runAt: number) {
  return eventOf('task.queued', r.delayMs > 0 ? { run: 1, agent: r.agent, priority: r.priority, runAt: Math.round(runAt) } : { run: 1, agent: r.agent, priority: r.priority }, r.id);
}

/** An unmatched new task's `task.needs_attention` event, as the LMDB runtime writes it. */
function unmatchedEvent(r: TaskRow) {
  return eventOf('task.needs_attention', { run: 1, reason: 'unmatched', agent: r.agent, requires: r.requires! }, r.id);
}

/**
 * Claims up to `n` runnable queued tasks of `agent` for the node `node` (a {@link joinCluster} id),
 * lower priority first, then first queued first, in one transaction: each goes to `running` with
 * its token bumped, the new attempt on its row (its attempt row is written when it ends), a lease of
 * `leaseMs` from the database's `now()`, and a
 * `task.started` event. Tasks other nodes are claiming at that moment are skipped, not waited for.
 * While the cluster is frozen it claims nothing, and it claims no more than the agent's limits
 * leave, counted across all nodes (limits.ts), nor while a fast-failure pause holds the agent
 * (backoff.ts). INVALID_INPUT for bad arguments; ILLEGAL_STATE when
 * `node` is not a member of the cluster (it left, or a sweeper found it dead and took its attempts
 * back): such a node must stop, not claim.
 */
export async function claimTasks(pool: pg.Pool, node: string, agent: string, n: number, leaseMs: number): Promise<ClaimedTask[]> {
  checkNode(node);
  checkAgent(agent, 'agent');
  if (!Number.isSafeInteger(n) || n <= 0 || n > INT4_MAX) throw invalid('n must be a positive integer');
  checkLeaseMs(leaseMs);
  type Row = { id: string; agent: string; input: unknown; priority: number; run: number; attempt_seq: number; attempts: number; max_attempts: number; token: string; attempt_id: string; lease_until: number; queued_ms: number; timeout_ms: string | null; retry: ClaimedTask['retry'] | null; follow_up: unknown; trace: TraceCarrier | null; workspace: string | null };
  type Gate = { member: boolean; frozen: boolean; backoff_failures: number | null; paused: boolean } & LimitRow;
  // The controls are held shared from the transaction's first statement (sent with its BEGIN): a
  // freeze or a change of limits waits for this claim to commit, and cannot commit between the
  // reads below and this claim's commit.
  return transaction(pool, 'claiming tasks', async (client) => {
    // One statement for an agent without limits: the gate (membership, freeze, limits) and, when
    // it lets the claim through, the claim, its attempt rows and their events. The node's row is
    // share-locked until commit: a sweeper removing the node waits for this claim and then takes
    // its tasks back, and a claim after the removal finds no row.
    const first = await client.query<Gate & Row>({ name: 'troupe-claim', text: CLAIM, values: [node, agent, n, leaseMs] });
    const gate = first.rows[0]!;
    if (!gate.member) throw notMember(node);
    if (gate.frozen) return [];
    let rows = first.rows.filter((r) => r.id !== null);
    const limits = limitsOf(gate);
    const backoff = gate.backoff_failures !== null;
    if (isLimited(limits) || backoff || gate.paused) {
      // An agent with limits or a backoff: its row is locked, its pause checked and its slots
      // reserved under that lock, then claimed.
      if ((backoff || gate.paused) && (await pauseHolds(client, agent, gate.paused))) return [];
      const slots = await reserveSlots(client, agent, limits, n);
      if (slots.allowed === 0) return [];
      const claim = slots.room
        ? { name: 'troupe-claim-models', text: CLAIM_MODELS, values: [node, agent, slots.allowed, leaseMs, JSON.stringify(slots.room)] }
        : { name: 'troupe-claim-limited', text: CLAIM_LIMITED, values: [node, agent, slots.allowed, leaseMs] };
      rows = (await client.query<Gate & Row>(claim)).rows.filter((r) => r.id !== null);
      await slots.spend(rows.length);
    }
    return rows.map((r) => {
      const task: ClaimedTask = {
        id: r.id,
        agent: r.agent,
        input: r.input,
        priority: r.priority,
        run: r.run,
        attempt: r.attempt_seq,
        attempts: r.attempts,
        maxAttempts: r.max_attempts,
        token: Number(r.token),
        attemptId: r.attempt_id,
        leaseUntil: r.lease_until,
        queuedMs: r.queued_ms,
      };
      if (r.timeout_ms !== null) task.timeoutMs = Number(r.timeout_ms);
      if (r.retry !== null) task.retry = r.retry;
      if (r.follow_up !== null) task.followUp = r.follow_up;
      if (r.trace !== null) task.trace = r.trace;
      if (r.workspace !== null) task.workspace = r.workspace;
      if (backoff) task.backoff = true;
      return task;
    });
  }, BEGIN_HOLDING_CONTROLS);
}

/**
 * Whether a claim for `node` could take a task of one of `agents` now: the cluster is not frozen
 * and one of them has a queued task that is due. A look, with no lock and no transaction, that a
 * node's claim poll makes before it claims (claimer.ts): a claim is a transaction whose lock on
 * the node's row makes its commit flush the WAL, and an idle node polled four times a second.
 * A yes is only a hint (the claim that follows decides, and may take nothing: another node got
 * there first, or the agent is paused or at its limits). ILLEGAL_STATE when `node` is no longer a
 * member of the cluster (a removed node's row never comes back, so a look that misses it is right).
 */
export async function anyRunnable(pool: pg.Pool, node: string, agents: readonly string[]): Promise<boolean> {
  checkNode(node);
  if (!Array.isArray(agents)) throw invalid('agents must be an array');
  agents.forEach((agent, i) => checkAgent(agent, `agents[${i}]`));
  let row: { member: boolean; runnable: boolean };
  try {
    row = (await pool.query<{ member: boolean; runnable: boolean }>({ name: 'troupe-any-runnable', text: ANY_RUNNABLE, values: [node, agents] })).rows[0]!;
  } catch (error) {
    throw storeFailed('looking for runnable tasks', error);
  }
  if (!row.member) throw notMember(node);
  return row.runnable;
}

/** ILLEGAL_STATE for a verb of `node`, which left the cluster or was found dead: it must stop. `why` ends the message. */
export function notMember(node: string, why = 'it left, or it was found dead and its attempts were taken back'): TroupeError {
  return new TroupeError('ILLEGAL_STATE', `node ${node} is not a member of the cluster: ${why}`);
}

const ANY_RUNNABLE = `SELECT EXISTS (SELECT 1 FROM troupe_nodes WHERE id = $1::uuid) AS member,
    NOT coalesce((SELECT frozen FROM troupe_control WHERE id = 1), false)
      AND EXISTS (SELECT 1 FROM troupe_tasks WHERE state = 'queued' AND agent = ANY($2::text[]) AND run_at <= now()) AS runnable`;

/**
 * The claim's statement: the gate row (membership, freeze, the agent's limits) joined with the
 * tasks it started. `unlimited`: start tasks only when the agent has no limits (the first try);
 * otherwise the gate's limits were already applied to `$3`, and with `models`, `$5` is the room
 * left per limited model (limits.ts): a model with none is passed over, and of each other limited
 * model no more than its room is taken, from the first `4 × $3 + 64` runnable tasks (so a claim
 * reads a bounded part of the queue: it may take fewer than it could, never more).
 *
 * A limited claim is the transaction's third statement or later: its id was taken by the first
 * (the gate's lock on the node's row), and its snapshot is newer. A task that a transaction with a
 * newer id queued (a submit, or the settle that requeued it) and committed in between would start
 * with events ordered before its `task.queued` (the log is in transaction-id order: events.ts).
 * Such a row is passed over (`age(xmin) > 0`: written by a transaction older than this one), and
 * the next claim takes it. The first statement reads its snapshot before it takes the id, so any
 * task it sees was queued by an older transaction.
 */
function claimStatement(kind: 'unlimited' | 'limited' | 'models'): string {
  const runnable = `state = 'queued' AND agent = $2 AND run_at <= now()${kind === 'unlimited' ? '' : ' AND age(xmin) > 0'}`;
  const open = `(SELECT member AND NOT frozen${kind === 'unlimited' ? ' AND concurrency IS NULL AND models IS NULL AND rate_limit IS NULL AND daily_limit IS NULL AND backoff_failures IS NULL AND NOT paused' : ''} FROM gate)`;
  const room = `($5::jsonb ->> (labels ->> 'model'))::int`;
  const picked =
    kind === 'models'
      ? `SELECT t.id FROM troupe_tasks t JOIN (
           SELECT id FROM (
             SELECT id, priority, queued_order, ${room} AS room, row_number() OVER (PARTITION BY labels ->> 'model' ORDER BY priority, queued_order) AS nth
               FROM (SELECT id, priority, queued_order, labels FROM troupe_tasks WHERE ${runnable} AND coalesce(${room}, 1) > 0
                      ORDER BY priority, queued_order LIMIT 4 * $3 + 64) candidates
           ) ranked
            WHERE room IS NULL OR nth <= room
            ORDER BY priority, queued_order
            LIMIT $3
         ) capped ON capped.id = t.id
        WHERE t.state = 'queued' AND t.agent = $2 AND t.run_at <= now() AND age(t.xmin) > 0 AND ${open}
        ORDER BY t.priority, t.queued_order
        FOR UPDATE OF t SKIP LOCKED`
      : `SELECT id FROM troupe_tasks
        WHERE ${runnable} AND ${open}
        ORDER BY priority, queued_order
        LIMIT $3
        FOR UPDATE SKIP LOCKED`;
  return `WITH gate AS MATERIALIZED (
       SELECT EXISTS (SELECT 1 FROM troupe_nodes WHERE id = $1::uuid FOR KEY SHARE) AS member, c.frozen, ${limitColumns('a')}, a.backoff_failures, a.paused_until IS NOT NULL AS paused
         FROM troupe_control c LEFT JOIN troupe_agents a ON a.name = $2
        WHERE c.id = 1
     ), picked AS MATERIALIZED (
       ${picked}
     ), started AS (
       UPDATE troupe_tasks t
          SET state = 'running', token = t.token + 1, attempt_seq = t.attempt_seq + 1, attempts = t.attempts + 1,
              owner_node = $1::uuid::text, attempt_id = t.id || ':' || t.run || ':' || (t.attempt_seq + 1),
              lease_until = now() + $4 * interval '1 millisecond', started_at = coalesce(t.started_at, now()), attempt_started_at = now(), updated_at = now()
         FROM picked
        WHERE t.id = picked.id
       RETURNING t.id, t.agent, t.input, t.priority, t.queued_order, t.run, t.attempt_seq, t.attempts, t.max_attempts, t.token, t.attempt_id, t.timeout_ms, t.retry, t.follow_up, t.trace, t.workspace,
                 -- Epoch ms, without parsing a timestamp's text per row.
                 ${epochMs('t.lease_until', 'lease_until')},
                 greatest(0, round(extract(epoch FROM now() - t.queued_at) * 1000))::float8 AS queued_ms
     ), started_events AS (
       ${insertEvents(`SELECT 'task.started', id, attempt_id, jsonb_build_object('run', run, 'attempt', attempt_seq, 'queuedMs', queued_ms) FROM started ORDER BY priority, queued_order`)}
     )
     SELECT g.*, s.*, ${notifyIfAny('started_events')} AS notified
       FROM gate g LEFT JOIN started s ON true
      ORDER BY s.priority, s.queued_order`;
}

/**
 * The two claims, prepared by name on each connection (parsed and planned once per connection, not
 * per claim: measured 0.25-0.6 ms of a claim of 32).
 */
const CLAIM = claimStatement('unlimited');
const CLAIM_LIMITED = claimStatement('limited');
const CLAIM_MODELS = claimStatement('models');

/**
 * Extends the leases of running attempts (and of attempts parked on an input: their task is
 * `waiting`) to `leaseMs` from the database's `now()`, in one statement. A lease whose attempt is no longer current (its token moved on: settled, or taken back
 * by a sweeper) is not touched and comes back in `lost`: its attempt should stop.
 */
export async function renewLeases(pool: pg.Pool, leases: readonly Lease[], leaseMs: number): Promise<Renewal> {
  if (!Array.isArray(leases)) throw invalid('leases must be an array');
  leases.forEach((lease, i) => checkLease(lease, `leases[${i}]`));
  checkLeaseMs(leaseMs);
  if (leases.length === 0) return { renewed: [], lost: [], cancels: [], inputs: [] };
  let rows: Array<{ id: string; token: string; lease_until: Date; cancel_reason: string | null; delivered: number }>;
  try {
    // Rows are locked in id order, as settle.ts locks them, so a renewal and a settle of the same
    // tasks wait for each other instead of deadlocking.
    ({ rows } = await pool.query(
      `WITH wanted AS MATERIALIZED (
         SELECT * FROM unnest($1::text[], $2::bigint[]) AS w(id, token)
       ), locked AS MATERIALIZED (
         SELECT t.id FROM troupe_tasks t JOIN wanted w ON t.id = w.id AND t.token = w.token
          WHERE t.state IN ('running', 'waiting') ORDER BY t.id FOR UPDATE OF t
       )
       UPDATE troupe_tasks t SET lease_until = now() + $3 * interval '1 millisecond', updated_at = now()
         FROM locked JOIN wanted w ON w.id = locked.id
        WHERE t.id = locked.id AND t.token = w.token AND t.state IN ('running', 'waiting')
       RETURNING t.id, t.token, t.lease_until, t.cancel_reason, t.delivered`,
      [leases.map((l) => l.taskId), leases.map((l) => l.token), leaseMs],
    ));
  } catch (error) {
    throw storeFailed('renewing leases', error);
  }
  const renewed = new Map(rows.map((r) => [`${r.id}\u0000${r.token}`, r.lease_until.getTime()]));
  const result: Renewal = { renewed: [], lost: [], cancels: [], inputs: [] };
  for (const r of rows) {
    if (r.cancel_reason !== null) result.cancels.push({ taskId: r.id, token: Number(r.token), reason: r.cancel_reason });
    if (r.delivered > 0) result.inputs!.push({ taskId: r.id, token: Number(r.token), delivered: r.delivered });
  }
  for (const { taskId, token } of leases) {
    const leaseUntil = renewed.get(`${taskId}\u0000${token}`);
    if (leaseUntil === undefined) result.lost.push({ taskId, token });
    else result.renewed.push({ taskId, token, leaseUntil });
  }
  return result;
}

