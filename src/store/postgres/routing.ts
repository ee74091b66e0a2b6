/**
 * Routing by capabilities across the cluster (issue #15), as the LMDB runtime routes within one
 * (README: "Capabilities"). A runtime that registers an agent with `capabilities` stores them on
 * the agent's row of `troupe_agents` (schema version 18), with its attempt budget: that row is what
 * "registered" means for routing, whichever runtime wrote it, and it stays when that runtime closes
 * (its tasks then wait queued for a runtime that runs the agent, as any task of an agent no one
 * runs does). The last registration stored wins.
 *
 * A task that names `requires` and no agent is routed at submit, in the submit's transaction: to
 * the least-loaded agent whose stored capabilities cover all of them, preferring one that is not
 * paused (backoff.ts), as Governor.pickAgent does. Load is the agent's queued and running tasks
 * over its concurrency (1 for an agent without one), counted from the partial indexes claims use
 * (`troupe_tasks_claim`, `troupe_tasks_running_agent`), plus the tasks of the same batch routed to
 * it before; a tie goes to the first name. The count is taken only when more than one agent
 * covers a task: a single candidate needs none. Two submits at once may both pick the same agent
 * (load is a hint, not a reservation). The routed task names its agent: claims are unchanged, and
 * pay nothing for routing. When no row covers it, the task is stored `needs_attention` (reason
 * `unmatched`) with a `task.needs_attention` event, and `rt.retry` routes it again (retryTask).
 */
import type pg from 'pg';
import { checkAgent, INT4_MAX, invalid, type TaskRow } from './checks.js';
import { storeFailed } from './transaction.js';

/**
 * Stores `agent`'s capabilities for routing (non-empty strings without NUL) and the attempt budget
 * a task routed to it gets when it gives none. Its limits, backoff and their state stay.
 */
export async function setAgentCapabilities(pool: pg.Pool, agent: string, capabilities: readonly string[], maxAttempts: number): Promise<void> {
  checkAgent(agent, 'agent');
  if (!Array.isArray(capabilities) || capabilities.length === 0 || capabilities.some((c) => typeof c !== 'string' || c.length === 0 || c.includes('\u0000'))) {
    throw invalid('capabilities must be a non-empty array of non-empty strings without NUL');
  }
  if (!Number.isSafeInteger(maxAttempts) || maxAttempts <= 0 || maxAttempts > INT4_MAX) throw invalid('maxAttempts must be a positive integer');
  try {
    await pool.query(
      `INSERT INTO troupe_agents AS a (name, capabilities, max_attempts) VALUES ($1, $2::text[], $3)
       ON CONFLICT (name) DO UPDATE SET capabilities = excluded.capabilities, max_attempts = excluded.max_attempts, updated_at = now()`,
      [agent, [...new Set(capabilities)].sort(), maxAttempts],
    );
  } catch (error) {
    throw storeFailed('storing the agent capabilities', error);
  }
}

/** An agent that covers some of the tasks being routed, as its row says. */
interface Candidate {
  name: string;
  capabilities: string[];
  concurrency: number | null;
  max_attempts: number | null;
  paused: boolean;
  /** Queued and running tasks, counted only when it competes with another candidate. */
  load: number;
}

/** Where one task goes: its agent and attempt budget, or nowhere (`unmatched`). */
export type Route = { agent: string; maxAttempts: number } | undefined;

/**
 * Routes, in the caller's transaction, the rows that name `requires` and no agent (see the module
 * comment), in batch order. Returns one route per row of `rows` (undefined for a row not routed here,
 * and for one no agent covers).
 */
export async function routeRows(client: Pick<pg.PoolClient, 'query'>, rows: readonly TaskRow[]): Promise<Array<Route | null>> {
  const wanted = rows.map((r) => (r.agent === '' && r.requires !== null ? r.requires : null));
  if (wanted.every((w) => w === null)) return rows.map(() => null);
  const candidates = await candidatesFor(client, wanted.filter((w): w is string[] => w !== null));
  return rows.map((row, i) => {
    const requires = wanted[i];
    if (!requires) return null;
    const best = pick(candidates.filter((c) => covers(c, requires)));
    if (!best) return undefined;
    // Counted toward the next pick of this batch, as LMDB counts the tasks it routed before.
    best.load++;
    return { agent: best.name, maxAttempts: row.ownMaxAttempts ? row.maxAttempts : (best.max_attempts ?? row.maxAttempts) };
  });
}

/** The agent an unmatched task routes to now, or undefined: its named agent if its row covers `requires`, else the least-loaded covering one. */
export async function routeAgain(client: Pick<pg.PoolClient, 'query'>, agent: string, requires: readonly string[]): Promise<string | undefined> {
  const candidates = await candidatesFor(client, [requires]);
  if (agent !== '') return candidates.find((c) => c.name === agent && covers(c, requires))?.name;
  return pick(candidates.filter((c) => covers(c, requires)))?.name;
}

/** Whether the agent's stored capabilities include every one of `requires`. */
function covers(candidate: Candidate, requires: readonly string[]): boolean {
  return requires.every((c) => candidate.capabilities.includes(c));
}

/** The best of `covering`: not paused first, then the lowest load, then the first (by name). */
function pick(covering: readonly Candidate[]): Candidate | undefined {
  let best: Candidate | undefined;
  for (const c of covering) {
    if (!best || (best.paused && !c.paused) || (c.paused === best.paused && c.load / (c.concurrency ?? 1) < best.load / (best.concurrency ?? 1))) best = c;
  }
  return best;
}

/**
 * The agents whose stored capabilities cover at least one of `sets`, in name order, with their
 * load counted when some set has more than one of them (see the module comment).
 */
async function candidatesFor(client: Pick<pg.PoolClient, 'query'>, sets: ReadonlyArray<readonly string[]>): Promise<Candidate[]> {
  const all = [...new Set(sets.flat())];
  try {
    const { rows } = await client.query<Candidate>(
      `SELECT name, capabilities, concurrency, max_attempts, coalesce(paused_until > clock_timestamp(), false) AS paused, 0 AS load
         FROM troupe_agents WHERE capabilities && $1::text[] ORDER BY name`,
      [all],
    );
    const contested = new Set<string>();
    for (const set of sets) {
      const covering = rows.filter((c) => covers(c, set));
      if (covering.length > 1) for (const c of covering) contested.add(c.name);
    }
    if (contested.size === 0) return rows;
    const { rows: loads } = await client.query<{ agent: string; n: number }>(
      `SELECT agent, count(*)::int AS n FROM troupe_tasks WHERE state = 'queued' AND agent = ANY($1::text[]) GROUP BY agent
       UNION ALL
       SELECT agent, count(*)::int AS n FROM troupe_tasks WHERE state = 'running' AND agent = ANY($1::text[]) GROUP BY agent`,
      [[...contested]],
    );
    for (const { agent, n } of loads) rows.find((c) => c.name === agent)!.load += n;
    return rows;
  } catch (error) {
    throw storeFailed('routing tasks by capabilities', error);
  }
}
