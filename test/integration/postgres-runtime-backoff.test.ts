/**
 * An agent's fast-failure backoff on PostgreSQL (store/postgres/backoff.ts), with the LMDB
 * runtime's semantics (test/integration/limits.test.ts, holds.test.ts) for the whole cluster:
 * fast failures counted on any runtime pause the agent on all of them, claims take nothing of it
 * while the pause holds (no `task.started` of it between `agent.paused` and `agent.resumed` in the
 * log), the pause ends on the database's clock or by `resumeAgent` from any runtime, with the
 * LMDB events; failures on purpose, and an agent without a backoff, never pause; bad options are
 * refused with the LMDB runtime's codes and messages.
 */
import type pg from 'pg';
import { describe, expect, it } from 'vitest';
import { builtinAgent, createRuntime, type AgentRegistration, type EventType, type Runtime, type RuntimeEvent } from 'troupe';
import { rejection, scratchDirs, scratchPools } from '../helpers.js';
import { pgRuntimes, thrown } from '../pg-runtime.js';
import { pauseHolds } from '../../src/store/postgres/backoff.js';

const pools = scratchPools();
const runtime = pgRuntimes();
const dirs = scratchDirs();

const LONG = { failures: 3, fastFailMs: 60_000, pauseMs: 600_000 };
const failing = (backoff: AgentRegistration['backoff']) => builtinAgent('fail', { retry: { maxAttempts: 1 }, backoff });
const THROW = { mode: 'throw' as const };
const HEALTHY = { succeedOnAttempt: 1 };

/** The next event of `type` that `rt` hears. */
function next(rt: Runtime, type: EventType): Promise<RuntimeEvent> {
  return new Promise((resolve) => {
    const off = rt.on(type, (event) => {
      off();
      resolve(event);
    });
  });
}

/** Every event `rt` hears, in log order. */
function record(rt: Runtime): RuntimeEvent[] {
  const events: RuntimeEvent[] = [];
  rt.on('*', (event) => events.push(event));
  return events;
}

/** The `task.started` events that sort between an `agent.paused` and the `agent.resumed` after it. */
function startedWhilePaused(events: readonly RuntimeEvent[]): RuntimeEvent[] {
  let paused = false;
  const found: RuntimeEvent[] = [];
  for (const event of events) {
    if (event.type === 'agent.paused') paused = true;
    else if (event.type === 'agent.resumed') paused = false;
    else if (event.type === 'task.started' && paused) found.push(event);
  }
  return found;
}

const agentRow = async (pool: pg.Pool) => (await pool.query("SELECT fast_fails, paused_until FROM troupe_agents WHERE name = 'fail'")).rows[0] as { fast_fails: number; paused_until: Date | null } | undefined;

/** Several claim polls of every runtime: what a paused agent must not start meanwhile. */
async function pollsPass(...runtimes: Runtime[]): Promise<void> {
  for (const rt of runtimes) rt.poke();
  await new Promise((resolve) => setTimeout(resolve, 1_000));
}

describe('the fast-failure backoff on PostgreSQL', () => {
  it('counts fast failures across runtimes: two on one and a third on another pause the agent for both', async () => {
    const { url, pool } = await pools({ max: 2 });
    let a = await runtime(url, { agents: [failing(LONG)] });
    for (let i = 0; i < 2; i++) expect((await a.wait((await a.submit({ agent: 'fail', input: THROW })).id, { timeoutMs: 20_000 })).state).toBe('dropped');
    expect(await agentRow(pool)).toMatchObject({ fast_fails: 2, paused_until: null });
    await a.close();

    const b = await runtime(url, { agents: [failing(LONG)] });
    const events = record(b);
    const paused = next(b, 'agent.paused');
    const third = await b.submit({ agent: 'fail', input: THROW });
    expect((await b.wait(third.id, { timeoutMs: 20_000 })).state).toBe('dropped');
    const pause = await paused;
    const until = (await agentRow(pool))!.paused_until!.getTime();
    expect(pause).toMatchObject({ taskId: third.id, attemptId: `${third.id}:1:1`, data: { agent: 'fail', until: expect.any(Number), reason: 'fast_failures' } });
    // The row's microseconds, as the event rounds them.
    expect(Math.abs((pause.data as { until: number }).until - until)).toBeLessThanOrEqual(1);
    expect(until - pause.at).toBeGreaterThan(590_000);
    expect(await agentRow(pool)).toMatchObject({ fast_fails: 0 });

    // The pause holds on every runtime: a runtime opened now claims nothing of the agent either.
    a = await runtime(url, { agents: [failing(LONG)] });
    const held = await a.submit({ agent: 'fail', input: HEALTHY });
    await pollsPass(a, b);
    expect((await b.get(held.id)).state).toBe('queued');
    for (const rt of [a, b]) expect(rt.stats().agents.fail.paused).toBe(true);
    expect(events.filter((e) => e.type === 'task.started' && e.taskId === held.id)).toEqual([]);

    // Another runtime ends it early; the count starts again from 0.
    const resumed = next(b, 'agent.resumed');
    expect(await a.resumeAgent('fail')).toBe(true);
    expect((await resumed).data).toEqual({ agent: 'fail', by: 'operator' });
    expect(await b.wait(held.id, { timeoutMs: 20_000 })).toMatchObject({ state: 'done', attempts: 1 });
    expect(a.stats().agents.fail.paused).toBe(false);
    expect(await b.resumeAgent('fail')).toBe(false);
    expect(await rejection(b.resumeAgent('nope'))).toMatchObject({ code: 'UNKNOWN_AGENT', message: 'resumeAgent: no agent named "nope" is registered' });
    expect(startedWhilePaused(events)).toEqual([]);
  });

  it('pauses for both runtimes failing together, with no claim of the agent while paused on either', async () => {
    const { url } = await pools({ max: 2 });
    const a = await runtime(url, { agents: [failing(LONG)] });
    const b = await runtime(url, { agents: [failing(LONG)] });
    const events = record(a);
    const pausedA = next(a, 'agent.paused');
    const pausedB = next(b, 'agent.paused');
    const tasks = await a.submitMany(Array.from({ length: 12 }, () => ({ agent: 'fail', input: THROW })));
    await Promise.all([pausedA, pausedB]);
    // Attempts claimed before the pause run on, as on LMDB (the nodes may have claimed all 12 ahead); none after it.
    const later = await b.submitMany(Array.from({ length: 4 }, () => ({ agent: 'fail', input: HEALTHY })));
    await pollsPass(a, b);
    for (const rt of [a, b]) expect(rt.stats().agents.fail.paused).toBe(true);
    const states = await Promise.all(tasks.map(async (t) => (await a.get(t.id)).state));
    expect(states.filter((s) => s === 'dropped').length).toBeGreaterThanOrEqual(3);
    for (const t of later) expect((await a.get(t.id)).state).toBe('queued');
    expect(startedWhilePaused(events)).toEqual([]);
    expect(events.filter((e) => e.type === 'task.started' && later.some((t) => t.id === e.taskId))).toEqual([]);
  });

  it('ends a pause on the database clock, with agent.resumed by the clock, and then runs the agent', async () => {
    const { url, pool } = await pools({ max: 2 });
    const backoff = { failures: 1, fastFailMs: 60_000, pauseMs: 1_500 };
    const a = await runtime(url, { agents: [failing(backoff)] });
    const b = await runtime(url, { agents: [failing(backoff)] });
    const events = record(b);
    const paused = next(a, 'agent.paused');
    const resumed = next(b, 'agent.resumed');
    await a.wait((await a.submit({ agent: 'fail', input: THROW })).id, { timeoutMs: 20_000 });
    const healthy = await b.submit({ agent: 'fail', input: HEALTHY });
    const { data } = await paused;
    const end = await resumed;
    expect(end.data).toEqual({ agent: 'fail', by: 'clock' });
    expect(end.at).toBeGreaterThanOrEqual((data as { until: number }).until);
    const done = await a.wait(healthy.id, { timeoutMs: 20_000 });
    expect(done).toMatchObject({ state: 'done', attempts: 1 });
    expect(done.startedAt).toBeGreaterThanOrEqual((data as { until: number }).until);
    expect(await agentRow(pool)).toMatchObject({ paused_until: null });
    expect(events.filter((e) => e.type === 'agent.resumed')).toHaveLength(1);
    expect(startedWhilePaused(events)).toEqual([]);
  });

  it('judges a pause at the instant of the claim transaction: one that ends while it is open holds it back, and the wake ends it, dated after its end', async () => {
    const { url, pool } = await pools({ max: 2 });
    const a = await runtime(url, { agents: [failing(LONG)] });
    const resumed = next(a, 'agent.resumed');
    const client = await pool.connect();
    try {
      await client.query('BEGIN');
      // A pause that ends after this transaction's instant (now()) and before the lock is read
      // (clock_timestamp() moves on): the claim's started_at and events would carry now().
      await client.query("UPDATE troupe_agents SET paused_until = clock_timestamp() WHERE name = 'fail'");
      const { rows } = await client.query<{ inside: boolean; over: boolean }>("SELECT paused_until > now() AS inside, paused_until < clock_timestamp() AS over FROM troupe_agents WHERE name = 'fail'");
      expect(rows[0]).toEqual({ inside: true, over: true });
      expect(await pauseHolds(client, 'fail', true)).toBe(true);
      expect((await client.query("SELECT paused_until FROM troupe_agents WHERE name = 'fail'")).rows[0].paused_until).not.toBeNull();
      await client.query('COMMIT');
    } finally {
      client.release();
    }
    // The wake ends it at an instant past its end.
    const until = (await agentRow(pool))!.paused_until!.getTime();
    const end = await resumed;
    expect(end.data).toEqual({ agent: 'fail', by: 'clock' });
    expect(end.at).toBeGreaterThanOrEqual(until);
    expect(await agentRow(pool)).toMatchObject({ paused_until: null });
  });

  it('ends a pause on the clock where no runtime runs the agent: the wake of one that does not', async () => {
    const { url, pool } = await pools({ max: 2 });
    const backoff = { failures: 1, fastFailMs: 60_000, pauseMs: 1_000 };
    const a = await runtime(url, { agents: [failing(backoff)] });
    const paused = next(a, 'agent.paused');
    await a.wait((await a.submit({ agent: 'fail', input: THROW })).id, { timeoutMs: 20_000 });
    await paused;
    await a.close();
    const other = await runtime(url, { agents: [builtinAgent('echo')] });
    const resumed = next(other, 'agent.resumed');
    expect((await resumed).data).toEqual({ agent: 'fail', by: 'clock' });
    expect(await agentRow(pool)).toMatchObject({ paused_until: null });
  });

  it('never pauses on failures reported on purpose, nor an agent without a backoff', async () => {
    const { url, pool } = await pools({ max: 2 });
    const a = await runtime(url, { agents: [failing({ failures: 2 })] });
    const events = record(a);
    for (const mode of ['fatal', 'result', 'fatal', 'result'] as const) expect((await a.wait((await a.submit({ agent: 'fail', input: { mode } })).id, { timeoutMs: 20_000 })).state).toBe('failed');
    expect(await agentRow(pool)).toMatchObject({ fast_fails: 0, paused_until: null });
    // A retryable one counts (so the 0 above is not for want of counting).
    expect((await a.wait((await a.submit({ agent: 'fail', input: THROW })).id, { timeoutMs: 20_000 })).state).toBe('dropped');
    expect(await agentRow(pool)).toMatchObject({ fast_fails: 1, paused_until: null });
    await a.close();

    // A registration without a backoff leaves a stored one as it is (as it leaves stored limits): a database of its own.
    const plain = await runtime((await pools({ max: 2 })).url, { agents: [builtinAgent('echo'), builtinAgent('fail', { retry: { maxAttempts: 1 } })] });
    const plainEvents = record(plain);
    const tasks = await plain.submitMany(Array.from({ length: 4 }, () => ({ agent: 'fail', input: THROW })));
    for (const t of tasks) expect((await plain.wait(t.id, { timeoutMs: 20_000 })).state).toBe('dropped');
    expect(plain.stats().agents.fail.paused).toBe(false);
    expect([...events, ...plainEvents].filter((e) => e.type === 'agent.paused')).toEqual([]);
    expect(await plain.resumeAgent('fail')).toBe(false);
  });

  it('clears the stored policy on a registration with backoff: false, and leaves it on one that gives none', async () => {
    const { url, pool } = await pools({ max: 2 });
    const row = async () => (await pool.query("SELECT backoff_failures, backoff_fast_fail_ms::int AS fast_fail_ms, backoff_pause_ms::int AS pause_ms, fast_fails, paused_until FROM troupe_agents WHERE name = 'fail'")).rows[0] as Record<string, unknown>;
    const a = await runtime(url, { agents: [failing({ failures: 2 })] });
    expect((await a.wait((await a.submit({ agent: 'fail', input: THROW })).id, { timeoutMs: 20_000 })).state).toBe('dropped');
    const stored = { backoff_failures: 2, fast_fail_ms: 60_000, pause_ms: 1_800_000, fast_fails: 1, paused_until: null };
    expect(await row()).toEqual(stored);
    await a.close();
    // None given (nor a defaultBackoff): the stored policy stays, as stored limits do.
    const b = await runtime(url, { agents: [failing(undefined)] });
    expect(await row()).toEqual(stored);
    // `false` turns it off for the cluster, overriding the runtime's defaultBackoff; the count stays (as on LMDB).
    const c = await runtime(url, { defaultBackoff: LONG, agents: [failing(false)] });
    expect(c.agents.list()[0]!.backoff).toBeNull();
    expect(await row()).toEqual({ ...stored, backoff_failures: null, fast_fail_ms: null, pause_ms: null });
    // Fast failures count no more, on whichever runtime runs them: two would have paused it.
    const events = record(c);
    for (const t of await c.submitMany([THROW, THROW, THROW].map((input) => ({ agent: 'fail', input })))) expect((await c.wait(t.id, { timeoutMs: 20_000 })).state).toBe('dropped');
    expect(events.filter((e) => e.type === 'agent.paused')).toEqual([]);
    expect(await row()).toMatchObject({ fast_fails: 1, paused_until: null });
    expect(b.stats().agents.fail.paused).toBe(false);
  });

  it('refuses bad backoff options with the LMDB runtime\'s codes and messages', async () => {
    const { url } = await pools({ max: 2 });
    const pg = await runtime(url, { agents: [builtinAgent('echo')] });
    const lmdb = await createRuntime({ dataDir: dirs(), logger: false, threads: 1, agents: [builtinAgent('echo')] });
    try {
      const bad: unknown[] = [{ failures: 0 }, { fastFailMs: -1 }, { pauseMs: 1.5 }, { bogus: 1 }, 'yes', null];
      for (const backoff of bad) {
        const registration = { name: 'flaky', module: builtinAgent('fail').module, backoff } as AgentRegistration;
        const onLmdb = thrown(() => lmdb.agents.register(registration));
        expect(onLmdb.code, JSON.stringify(backoff)).toBe('INVALID_OPTIONS');
        expect(thrown(() => pg.agents.register(registration))).toMatchObject({ code: onLmdb.code, message: onLmdb.message });
        const options = { logger: false as const, threads: 1, defaultBackoff: backoff as never };
        const lmdbStart = await rejection(createRuntime({ ...options, dataDir: dirs() }));
        expect(await rejection(createRuntime({ ...options, store: { postgres: url } }))).toMatchObject({ code: lmdbStart.code, message: lmdbStart.message });
      }
    } finally {
      await lmdb.close();
    }
    // Good ones are taken: an agent's own, and the runtime's default for agents that set none.
    const rt = await runtime(url, { defaultBackoff: { pauseMs: 5_000 }, agents: [builtinAgent('echo')] });
    expect(rt.agents.list()[0]!.backoff).toEqual({ failures: 3, fastFailMs: 60_000, pauseMs: 5_000 });
    expect(rt.agents.register({ name: 'flaky', module: builtinAgent('fail').module, backoff: true }).backoff).toEqual({ failures: 3, fastFailMs: 60_000, pauseMs: 5_000 });
  });
});
