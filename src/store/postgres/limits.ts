/**
 * Per-agent limits across the whole cluster (issue #15): an agent's `concurrency`, `rate` and
 * `dailyLimit` hold for the sum of every node's attempts, as they hold for one runtime
 * (src/governor/flow.ts). They are enforced inside the claim's transaction (queue.ts).
 *
 * An agent's row in `troupe_agents` keeps its limits and the state of its rate bucket and daily
 * budget. A claim of a limited agent locks that row `FOR UPDATE`, so claims of one agent take
 * their slots one after another, and takes at most what is left: `concurrency` minus the attempts
 * running, the whole tokens of the bucket, the day's budget minus the day's starts.
 *
 * Running attempts are counted from `troupe_tasks` (state `running`, by a partial index), not kept
 * in a counter: a settle, a sweep or anything else that moves a task out of `running` frees its
 * slot the moment it commits, without touching the agent's row. A counter would have to be kept
 * by every one of those writers, in a lock order with the task rows, and would drift the first
 * time one forgot. The count is taken in a statement after the row lock was granted, so it sees
 * every claim that held the lock before (a statement's snapshot is taken when it starts, before
 * any wait inside it). A settle still in flight is counted as running: a claim can only take too
 * little, never too much.
 *
 * Per-model sub-limits (`concurrency: { total, [model]: n }`, a task's `labels.model` picking one)
 * are counted the same way, per model, in the same statement; the claim (queue.ts) passes over
 * the tasks of a model with no room left, so a full model never holds back the others.
 *
 * Tokens and days run on the database's clock (`clock_timestamp()`, read once the row is locked).
 * The daily window is flow.ts's: from the latest reset tick (`resetAt` in `tz`) at or before now
 * to the next one.
 */
import type pg from 'pg';
import type { DailyLimit, RateLimit } from '../../agents/registry.js';
import { TroupeError } from '../../errors.js';
import { dailyAt, windowStart, type CronSchedule } from '../../scheduler/cron.js';
import { holdControlExclusive } from './control.js';
import { checkAgent } from './checks.js';
import { HINTS, notifyHints } from './events.js';
import { epochMs, storeFailed, transaction } from './transaction.js';

/** An agent's limits, as a registration resolves them (RegisteredAgent's fields); null: none. */
export interface AgentLimits {
  /** Attempts of the agent running at once, across all nodes. */
  concurrency: number | null;
  /**
   * Sub-limits of `concurrency` per model: at most `n` attempts at once of the agent's tasks whose
   * `labels.model` is that model, across all nodes (they count against `concurrency` too). Absent
   * or empty: none.
   */
  models?: Readonly<Record<string, number>>;
  /** A token bucket of `limit` starts, refilled evenly over `windowMs`. */
  rate: RateLimit | null;
  /** Starts per daily window. */
  dailyLimit: Required<DailyLimit> | null;
}

/** The state of an agent's bucket and budget (epoch ms), as its row holds it. */
export interface LimitState {
  tokens?: number;
  refilledAt?: number;
  dayStart?: number;
  dayEnds?: number;
  dayCount: number;
}

/** What a claim may take, and the state once it took `k`. */
export interface SlotDecision {
  allowed: number;
  /**
   * Per limited model, how many more of its attempts may start (none below 0); undefined when the
   * agent has no per-model sub-limits. A model not named here is held by `allowed` alone.
   */
  room?: Record<string, number>;
  after(k: number): LimitState;
}

const INT4_MAX = 2 ** 31 - 1;

/** The columns of `troupe_agents` (as `alias`) that {@link limitsOf} reads. */
export function limitColumns(alias: string): string {
  return ['concurrency', 'models', 'rate_limit', 'rate_window_ms', 'daily_limit', 'daily_reset_at', 'daily_tz'].map((c) => `${alias}.${c}`).join(', ');
}

/** A row of {@link limitColumns}. */
export interface LimitRow {
  concurrency: number | null;
  models: Record<string, number> | null;
  rate_limit: number | null;
  rate_window_ms: string | null;
  daily_limit: number | null;
  daily_reset_at: string | null;
  daily_tz: string | null;
}

/** The limits of a row of {@link limitColumns} (all null when the agent has no row). */
export function limitsOf(row: LimitRow | undefined | null): AgentLimits {
  if (!row) return { concurrency: null, rate: null, dailyLimit: null };
  return {
    concurrency: row.concurrency,
    ...(row.models && Object.keys(row.models).length > 0 && { models: row.models }),
    rate: row.rate_limit === null ? null : { limit: row.rate_limit, windowMs: Number(row.rate_window_ms) },
    dailyLimit: row.daily_limit === null ? null : { limit: row.daily_limit, resetAt: row.daily_reset_at!, tz: row.daily_tz! },
  };
}

/** Whether any limit applies (a claim of an agent without one locks nothing). */
export function isLimited(limits: AgentLimits): boolean {
  return limits.concurrency !== null || hasModels(limits) || limits.rate !== null || limits.dailyLimit !== null;
}

/** Whether the agent has per-model sub-limits. */
export function hasModels(limits: AgentLimits): boolean {
  return limits.models !== undefined && Object.keys(limits.models).length > 0;
}

/**
 * Stores `agent`'s limits for the whole cluster, as `FlowControl.configure` takes them: a rate
 * keeps its tokens (at most the new limit; a full bucket for a new rate), a daily budget keeps the
 * day's count while its window stays the same, and a limit taken away forgets its state. Waits for
 * claims in flight, so every claim after it sees the new limits. Its commit sends the `agents`
 * hint (events.ts HINTS): every runtime reads the agents' rows again ({@link readAgentRows}).
 * INVALID_INPUT for a bad agent name or limit, and nothing is written.
 */
export async function setAgentLimits(pool: pg.Pool, agent: string, limits: AgentLimits): Promise<void> {
  checkAgent(agent, 'agent');
  const { concurrency, models, rate, dailyLimit } = checkLimits(limits);
  await transaction(pool, 'setting agent limits', async (client) => {
    await holdControlExclusive(client);
    await client.query(
      `INSERT INTO troupe_agents AS a (name, concurrency, rate_limit, rate_window_ms, tokens, refilled_at, daily_limit, daily_reset_at, daily_tz, models)
       VALUES ($1, $2, $3::integer, $4::bigint, $3::integer, CASE WHEN $3::integer IS NULL THEN NULL ELSE now() END, $5::integer, $6, $7, $8::jsonb)
       ON CONFLICT (name) DO UPDATE SET
         concurrency = excluded.concurrency, models = excluded.models, rate_limit = excluded.rate_limit, rate_window_ms = excluded.rate_window_ms,
         tokens = CASE WHEN excluded.rate_limit IS NULL THEN NULL ELSE least(excluded.rate_limit, coalesce(a.tokens, excluded.rate_limit)) END,
         refilled_at = CASE WHEN excluded.rate_limit IS NULL THEN NULL ELSE coalesce(a.refilled_at, now()) END,
         daily_limit = excluded.daily_limit, daily_reset_at = excluded.daily_reset_at, daily_tz = excluded.daily_tz,
         day_start = CASE WHEN excluded.daily_limit IS NULL THEN NULL ELSE a.day_start END,
         day_ends = NULL,
         day_count = CASE WHEN excluded.daily_limit IS NULL THEN 0 ELSE a.day_count END,
         updated_at = now()`,
      [agent, concurrency, rate?.limit ?? null, rate?.windowMs ?? null, dailyLimit?.limit ?? null, dailyLimit?.resetAt ?? null, dailyLimit?.tz ?? null, models ? JSON.stringify(models) : null],
    );
    await notifyHints(client, HINTS.agents);
  });
}

/** An agent's row as `stats()` shows it: its concurrency (total, and per model) and its fast-failure pause. */
export interface AgentRow {
  concurrency: number | null;
  models: Readonly<Record<string, number>>;
  /** Until when a pause holds it, or one not yet ended (epoch ms, the database's clock); null: none. */
  pausedUntil: number | null;
}

/** Every agent's row of `troupe_agents`, by name (a row per agent that ever had limits or a backoff: a handful). */
export async function readAgentRows(pool: Pick<pg.Pool, 'query'>): Promise<Map<string, AgentRow>> {
  try {
    const { rows } = await pool.query<{ name: string; concurrency: number | null; models: Record<string, number> | null; until: number | null }>(
      `SELECT name, concurrency, models, ${epochMs('paused_until', 'until')} FROM troupe_agents`,
    );
    return new Map(rows.map((r) => [r.name, { concurrency: r.concurrency, models: r.models ?? {}, pausedUntil: r.until }]));
  } catch (error) {
    throw storeFailed('reading the agents', error);
  }
}

/**
 * How many of `wanted` tasks a claim may start at `at` (epoch ms, the database's clock) with
 * `running` attempts of the agent running (`byModel` of them per model), and the state after it
 * started `k` of them. Pure: the same refill and daily window as flow.ts. A clock that went back
 * refills nothing.
 */
export function decideSlots(limits: AgentLimits, state: LimitState, running: number, at: number, wanted: number, byModel: Readonly<Record<string, number>> = {}): SlotDecision {
  let allowed = wanted;
  let room: Record<string, number> | undefined;
  if (hasModels(limits)) {
    room = {};
    for (const [model, limit] of Object.entries(limits.models!)) room[model] = Math.max(0, limit - (byModel[model] ?? 0));
  }
  const next: LimitState = { ...state };
  if (limits.concurrency !== null) allowed = Math.min(allowed, limits.concurrency - running);
  if (limits.rate !== null) {
    const { limit, windowMs } = limits.rate;
    const tokens = next.tokens ?? limit;
    const refilledAt = next.refilledAt ?? at;
    next.tokens = Math.min(limit, tokens + (Math.max(0, at - refilledAt) * limit) / windowMs);
    // Never back: the refill from the stored time to a later one must not be counted twice.
    next.refilledAt = Math.max(refilledAt, at);
    allowed = Math.min(allowed, Math.floor(next.tokens));
  }
  if (limits.dailyLimit !== null) {
    if (next.dayStart === undefined || next.dayEnds === undefined || at < next.dayStart || at >= next.dayEnds) {
      const daily = dailyOf(limits.dailyLimit);
      const start = windowStart(daily, at);
      next.dayEnds = daily.next(start);
      if (next.dayStart !== start) {
        next.dayStart = start;
        next.dayCount = 0;
      }
    }
    allowed = Math.min(allowed, limits.dailyLimit.limit - next.dayCount);
  }
  allowed = Math.max(0, allowed);
  return {
    allowed,
    ...(room && { room }),
    after(k) {
      const after = { ...next };
      if (limits.rate !== null) after.tokens = after.tokens! - k;
      if (limits.dailyLimit !== null) after.dayCount += k;
      return after;
    },
  };
}

/** What a claim may take in its transaction, and how it records what it took. */
export interface Reservation {
  allowed: number;
  /** See {@link SlotDecision.room}. */
  room?: Record<string, number>;
  /** Records that the claim started `k` tasks (spent tokens and the day's budget). */
  spend(k: number): Promise<void>;
}

/**
 * In a claim's transaction (holding the controls shared, so the limits cannot change under it):
 * locks the agent's row when it has limits and decides how many of `wanted` tasks may start.
 */
export async function reserveSlots(client: pg.PoolClient, agent: string, limits: AgentLimits, wanted: number): Promise<Reservation> {
  if (!isLimited(limits)) return { allowed: wanted, spend: async () => undefined };
  const { rows } = await client.query<{ tokens: number | null; refilled_at: number | null; day_start: number | null; day_ends: number | null; day_count: number }>(
    `SELECT tokens, ${epochMs('refilled_at')}, ${epochMs('day_start')}, ${epochMs('day_ends')}, day_count FROM troupe_agents WHERE name = $1 FOR UPDATE`,
    [agent],
  );
  const row = rows[0]!;
  // A statement of its own, after the lock: see the module comment.
  const now = await client.query<{ at: number; running: number; by_model: Record<string, number> | null }>(
    `SELECT ${epochMs('clock_timestamp()', 'at')}, CASE WHEN $2 THEN (SELECT count(*)::int FROM troupe_tasks WHERE agent = $1 AND state = 'running') ELSE 0 END AS running,
            CASE WHEN $3 THEN (SELECT jsonb_object_agg(model, n) FROM (SELECT labels ->> 'model' AS model, count(*)::int AS n FROM troupe_tasks
                                WHERE agent = $1 AND state = 'running' AND labels ? 'model' GROUP BY 1) m) END AS by_model`,
    [agent, limits.concurrency !== null, hasModels(limits)],
  );
  const state: LimitState = { dayCount: row.day_count };
  if (row.tokens !== null) state.tokens = row.tokens;
  if (row.refilled_at !== null) state.refilledAt = row.refilled_at;
  if (row.day_start !== null) state.dayStart = row.day_start;
  if (row.day_ends !== null) state.dayEnds = row.day_ends;
  const { running, at, by_model } = now.rows[0]!;
  const decision = decideSlots(limits, state, running, at, wanted, by_model ?? {});
  return {
    allowed: decision.allowed,
    ...(decision.room && { room: decision.room }),
    async spend(k) {
      if (k === 0 || (limits.rate === null && limits.dailyLimit === null)) return;
      const after = decision.after(k);
      await client.query(
        `UPDATE troupe_agents SET tokens = $2, refilled_at = to_timestamp($3::float8 / 1000), day_start = to_timestamp($4::float8 / 1000),
                day_ends = to_timestamp($5::float8 / 1000), day_count = $6, updated_at = now()
          WHERE name = $1`,
        [agent, after.tokens ?? null, after.refilledAt ?? null, after.dayStart ?? null, after.dayEnds ?? null, after.dayCount],
      );
    },
  };
}

/** Compiled daily schedules by reset time and zone (a handful per process; compiling costs cron work). */
const dailies = new Map<string, CronSchedule>();

function dailyOf({ resetAt, tz }: Required<DailyLimit>): CronSchedule {
  const key = `${resetAt} ${tz}`;
  let daily = dailies.get(key);
  if (!daily) dailies.set(key, (daily = dailyAt(resetAt, tz)));
  return daily;
}

/** Checks limits as a registration's resolved fields (undefined is none); INVALID_INPUT naming the bad one. */
function checkLimits(limits: AgentLimits): AgentLimits {
  if (typeof limits !== 'object' || limits === null) throw invalid('limits must be an object { concurrency, rate, dailyLimit }');
  const positive = (value: unknown, where: string, max = INT4_MAX) => {
    if (!Number.isSafeInteger(value) || (value as number) <= 0 || (value as number) > max) throw invalid(`${where} must be a positive integer of at most ${max}`);
  };
  const concurrency = limits.concurrency ?? null;
  if (concurrency !== null) positive(concurrency, 'limits.concurrency');
  const given = limits.models ?? {};
  if (typeof given !== 'object' || given === null || Array.isArray(given)) throw invalid('limits.models must be an object { [model]: n }');
  const models: Record<string, number> = {};
  for (const [model, limit] of Object.entries(given)) {
    // jsonb, where the sub-limits are kept, cannot hold a NUL.
    if (model.includes('\u0000')) throw invalid(`limits.models: a model name must not contain NUL (${JSON.stringify(model)})`);
    positive(limit, `limits.models[${JSON.stringify(model)}]`);
    models[model] = limit;
  }
  const rate = limits.rate ?? null;
  if (rate !== null) {
    if (typeof rate !== 'object') throw invalid('limits.rate must be { limit, windowMs } or null');
    positive(rate.limit, 'limits.rate.limit');
    positive(rate.windowMs, 'limits.rate.windowMs', Number.MAX_SAFE_INTEGER);
  }
  const dailyLimit = limits.dailyLimit ?? null;
  if (dailyLimit !== null) {
    if (typeof dailyLimit !== 'object') throw invalid('limits.dailyLimit must be { limit, resetAt, tz } or null');
    positive(dailyLimit.limit, 'limits.dailyLimit.limit');
    try {
      dailyOf(dailyLimit);
    } catch (error) {
      throw invalid(`limits.dailyLimit: ${(error as Error).message}`);
    }
  }
  return {
    concurrency,
    ...(Object.keys(models).length > 0 && { models }),
    rate: rate && { limit: rate.limit, windowMs: rate.windowMs },
    dailyLimit: dailyLimit && { limit: dailyLimit.limit, resetAt: dailyLimit.resetAt, tz: dailyLimit.tz },
  };
}

function invalid(message: string): TroupeError {
  return new TroupeError('INVALID_INPUT', message);
}
