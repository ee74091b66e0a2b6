/**
 * An agent's fast-failure backoff for the whole cluster (issue #15), as the LMDB runtime's
 * (src/governor/flow.ts `ended`, `resume`): after `failures` consecutive failed attempts of the
 * agent (retryable errors and timeouts), each shorter than `fastFailMs`, it pauses for `pauseMs`;
 * a success (or a sleep) and a slow failure reset the count; a failure the agent reported on
 * purpose (`fail`, a non-retryable error), crashes, expired leases, cancels and interruptions
 * leave it as it is.
 *
 * The policy, the count and the pause live on the agent's row of `troupe_agents` (schema version
 * 15), so they hold on every node. Counted where the ends are written: a settle with an end of an
 * agent that has a backoff (its claim said so: {@link ClaimedTask.backoff}) locks those agents' rows
 * first, in name order, before its task rows (so the order is agents by name, then tasks by id,
 * for every writer that takes both), folds its ends into the count in batch order, and writes the
 * count, the pause and `agent.paused` in its own transaction. Ends of agents without a backoff
 * are written as before: no statement or join more. Since the pausing settle holds the row from
 * its first write, and every claim of a backoff agent locks the row before it claims
 * ({@link pauseHolds}), a claim that starts tasks either committed before the pause's transaction
 * took its id, or saw the pause: no `task.started` of the agent sorts between `agent.paused` and
 * `agent.resumed` in the log.
 *
 * A pause ends on the database's clock: the first claim of the agent whose transaction began after
 * it (in that transaction), or the wake every node runs every `pollMs` (wakes.ts, {@link RESUME_DUE}), ends it
 * with `agent.resumed` `{ by: 'clock' }`, whichever comes first; `rt.resumeAgent` ends it at once
 * (`by: 'operator'`). Each sends the `agents` NOTIFY hint (events.ts HINTS), which wakes claimers.
 */
import type pg from 'pg';
import type { WireError } from '../../../actors/wire.js';
import type { AttemptExit } from '../../../machines/index.js';
import type { FastFailBackoff } from '../../options.js';
import { checkAgent } from './checks.js';
import { HINTS, insertEvents, notifyIfAny } from './events.js';
import { storeFailed, transaction } from './transaction.js';

/** What an attempt's end tells its agent's backoff: the agent, and how long the attempt ran (ms). */
export interface BackoffEnd {
  agent: string;
  ms: number;
}

/** An end as the fold reads it. */
export interface CountedEnd {
  exit: AttemptExit;
  error?: WireError | undefined;
  backoff?: BackoffEnd | undefined;
  taskId: string;
}

/**
 * Whether an end with `exit` and `error` changes a count of fast failures: a success or a fork
 * (reset), a timeout or a retryable error (count, or reset when slow). Not a deliberate failure.
 */
export function changesFastFails(exit: AttemptExit, error: WireError | undefined): boolean {
  if (exit === 'success' || exit === 'fork' || exit === 'timeout') return true;
  return exit === 'error' && error?.retryable !== false;
}

/**
 * Stores `agent`'s backoff for the whole cluster, or clears it (`null`: a registration's `backoff:
 * false`): no end counts any more. Its count and a pause under way stay, as the LMDB runtime keeps
 * them when a registration changes the policy (flow.ts `configure`): the pause runs out on the
 * clock or by `resumeAgent`, and a later policy counts on from the count.
 */
export async function setAgentBackoff(pool: pg.Pool, agent: string, backoff: Readonly<FastFailBackoff> | null): Promise<void> {
  checkAgent(agent, 'agent');
  try {
    await pool.query(
      `INSERT INTO troupe_agents AS a (name, backoff_failures, backoff_fast_fail_ms, backoff_pause_ms) VALUES ($1, $2, $3, $4)
       ON CONFLICT (name) DO UPDATE SET backoff_failures = excluded.backoff_failures, backoff_fast_fail_ms = excluded.backoff_fast_fail_ms,
         backoff_pause_ms = excluded.backoff_pause_ms, updated_at = now()`,
      [agent, backoff?.failures ?? null, backoff?.fastFailMs ?? null, backoff?.pauseMs ?? null],
    );
  } catch (error) {
    throw storeFailed('storing the agent backoff', error);
  }
}

/** An agent's row as a settle holds it. */
interface HeldAgent {
  failures: number | null;
  fastFailMs: number;
  fastFails: number;
}

/** In a settle's transaction, before its task rows: locks the rows of these agents in name order. */
export async function lockBackoffAgents(client: Pick<pg.PoolClient, 'query'>, agents: readonly string[]): Promise<Map<string, HeldAgent>> {
  const { rows } = await client.query<{ name: string; backoff_failures: number | null; backoff_fast_fail_ms: string | null; fast_fails: number }>({
    name: 'troupe-lock-backoff-agents',
    text: 'SELECT name, backoff_failures, backoff_fast_fail_ms, fast_fails FROM troupe_agents WHERE name = ANY($1::text[]) ORDER BY name FOR UPDATE',
    values: [[...new Set(agents)]],
  });
  return new Map(rows.map((r) => [r.name, { failures: r.backoff_failures, fastFailMs: Number(r.backoff_fast_fail_ms), fastFails: r.fast_fails }]));
}

/** What a settle's ends did to an agent's backoff: its new count, and the end that paused it, if one did. */
export interface FastFailCount {
  agent: string;
  fastFails: number;
  pausedBy?: CountedEnd;
}

/**
 * Folds the written `ends` (in batch order) into the counts of their agents' held rows, as
 * flow.ts `ended` does end by end: a count that reaches `failures` pauses the agent and starts
 * again from 0. Pure. Returns the agents whose row changes.
 */
export function foldFastFails(held: ReadonlyMap<string, HeldAgent>, ends: readonly CountedEnd[]): FastFailCount[] {
  const counts = new Map<string, FastFailCount>();
  for (const end of ends) {
    const row = end.backoff && held.get(end.backoff.agent);
    if (!row || row.failures === null || !changesFastFails(end.exit, end.error)) continue;
    const agent = end.backoff!.agent;
    const count = counts.get(agent) ?? { agent, fastFails: row.fastFails };
    if (end.exit === 'success' || end.exit === 'fork') count.fastFails = 0;
    else count.fastFails = end.backoff!.ms < row.fastFailMs ? count.fastFails + 1 : 0;
    if (count.fastFails >= row.failures) {
      count.fastFails = 0;
      count.pausedBy = end;
    }
    counts.set(agent, count);
  }
  return [...counts.values()].filter((c) => c.pausedBy !== undefined || c.fastFails !== held.get(c.agent)!.fastFails);
}

/**
 * Writes the counts of {@link foldFastFails} in the settle's transaction: a pause runs `pauseMs`
 * from the transaction's `now()`, with `agent.paused` (the task and attempt of the end that
 * paused it, as on LMDB) after the ends' events.
 */
export async function writeFastFails(client: Pick<pg.PoolClient, 'query'>, counts: readonly FastFailCount[], attemptIdOf: (taskId: string) => string): Promise<void> {
  if (counts.length === 0) return;
  await client.query({
    name: 'troupe-write-fast-fails',
    text: WRITE_FAST_FAILS,
    values: [counts.map((c) => c.agent), counts.map((c) => c.fastFails), counts.map((c) => c.pausedBy !== undefined), counts.map((c) => c.pausedBy?.taskId ?? null), counts.map((c) => (c.pausedBy ? attemptIdOf(c.pausedBy.taskId) : null))],
  });
}

const WRITE_FAST_FAILS = `WITH counted AS (
     UPDATE troupe_agents a
        SET fast_fails = v.fast_fails, updated_at = now(),
            paused_until = CASE WHEN v.pause THEN now() + a.backoff_pause_ms * interval '1 millisecond' ELSE a.paused_until END
       FROM unnest($1::text[], $2::int[], $3::boolean[], $4::text[], $5::text[]) WITH ORDINALITY AS v(name, fast_fails, pause, task_id, attempt_id, ord)
      WHERE a.name = v.name
     RETURNING a.name, a.paused_until, v.pause, v.task_id, v.attempt_id, v.ord
   ), paused_events AS (
     ${insertEvents(`SELECT 'agent.paused', task_id, attempt_id, jsonb_build_object('agent', name, 'until', round(extract(epoch FROM paused_until) * 1000)::float8, 'reason', 'fast_failures')
        FROM counted WHERE pause ORDER BY ord`)}
   )
   SELECT ${notifyIfAny('paused_events', `'${HINTS.agents}'`)} AS notified`;

/**
 * In a claim's transaction of an agent with a backoff (or a pause left from one): locks its row
 * and answers whether a pause holds it back at the transaction's instant (`now()`: the instant its
 * rows and events record). A pause whose time is up is ended here, with `agent.resumed`
 * `{ by: 'clock' }`, before the claim's `task.started` events. A pause that ends while the
 * transaction waits for the lock still holds this claim back: ended here, its `agent.resumed` and
 * the claim's `startedAt` would carry an instant inside the pause. The wake (every `pollMs`, on
 * the statement's own instant) ends it, and the claimer polls again.
 *
 * `sawPause`: the claim's first statement saw the row paused. Found unpaused now, the pause was
 * ended by another transaction (a wake, a resumeAgent) that took its transaction id after this
 * one's (the first statement locks the node's row, which gives the claim its id), and the log
 * sorts transactions by id: this claim's `task.started` would sort before that `agent.resumed`,
 * inside the pause. Such a claim holds back too; the resume's hint (`agents`) has the claimer
 * claim again at once, in a transaction that sorts after it.
 */
export async function pauseHolds(client: Pick<pg.PoolClient, 'query'>, agent: string, sawPause: boolean): Promise<boolean> {
  const { rows } = await client.query<{ held: boolean; unpaused: boolean | null }>({ name: 'troupe-pause-holds', text: PAUSE_HOLDS, values: [agent] });
  return rows[0]?.held === true || (sawPause && rows[0]?.unpaused === true);
}

const PAUSE_HOLDS = `WITH a AS MATERIALIZED (
     SELECT name, paused_until, paused_until > now() AS held FROM troupe_agents WHERE name = $1 FOR UPDATE
   ), ended AS (
     UPDATE troupe_agents t SET paused_until = NULL, updated_at = now() FROM a WHERE t.name = a.name AND a.paused_until IS NOT NULL AND NOT a.held RETURNING t.name
   ), resumed_events AS (
     ${insertEvents(`SELECT 'agent.resumed', NULL, NULL, jsonb_build_object('agent', name, 'by', 'clock') FROM ended`)}
   )
   SELECT coalesce((SELECT held FROM a), false) AS held, (SELECT paused_until IS NULL FROM a) AS unpaused, ${notifyIfAny('resumed_events', `'${HINTS.agents}'`)} AS notified`;

/**
 * Ends `agent`'s pause now (rt.resumeAgent), with `agent.resumed` `{ by: 'operator' }` and its
 * count back at 0, as on LMDB; resolves false when it was not paused. A pause whose time was up
 * but not yet ended is ended `{ by: 'clock' }`, and resolves false too.
 */
export async function resumeAgentPause(pool: pg.Pool, agent: string): Promise<boolean> {
  checkAgent(agent, 'agent');
  return transaction(pool, 'resuming an agent', async (client) => {
    const { rows } = await client.query<{ resumed: boolean }>({ name: 'troupe-resume-agent', text: RESUME_AGENT, values: [agent] });
    return rows[0]?.resumed === true;
  });
}

const RESUME_AGENT = `WITH a AS MATERIALIZED (
     SELECT name, paused_until > now() AS held FROM troupe_agents WHERE name = $1 AND paused_until IS NOT NULL FOR UPDATE
   ), ended AS (
     UPDATE troupe_agents t SET paused_until = NULL, fast_fails = CASE WHEN a.held THEN 0 ELSE t.fast_fails END, updated_at = now()
       FROM a WHERE t.name = a.name RETURNING t.name, a.held
   ), resumed_events AS (
     ${insertEvents(`SELECT 'agent.resumed', NULL, NULL, jsonb_build_object('agent', name, 'by', CASE WHEN held THEN 'operator' ELSE 'clock' END) FROM ended`)}
   )
   SELECT coalesce((SELECT held FROM ended), false) AS resumed, ${notifyIfAny('resumed_events', `'${HINTS.agents}'`)} AS notified`;

/**
 * CTEs for the wake's statement (wakes.ts): end every pause whose time is up, with `agent.resumed`
 * `{ by: 'clock' }`, skipping a row a claim or a settle holds (that claim ends it, or the next
 * wake does). `resumed_events` is the events' CTE. Through the partial index `troupe_agents_paused`.
 */
export const RESUME_DUE = `due_agents AS MATERIALIZED (
     SELECT name FROM troupe_agents WHERE paused_until IS NOT NULL AND paused_until <= now() ORDER BY name FOR UPDATE SKIP LOCKED
   ), resumed AS (
     UPDATE troupe_agents t SET paused_until = NULL, updated_at = now() FROM due_agents d WHERE t.name = d.name AND t.paused_until <= now() RETURNING t.name
   ), resumed_events AS (
     ${insertEvents(`SELECT 'agent.resumed', NULL, NULL, jsonb_build_object('agent', name, 'by', 'clock') FROM resumed ORDER BY name`)}
   )`;
