/**
 * Per-agent limits observed from the agents' side: concurrency with per-model sub-limits, rate
 * pacing, the daily budget and the backoff pause, each on an injected clock and across a restart.
 */
import { readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { builtinAgent, createRuntime, ManualClock, type Runtime, type RuntimeEvent, type RuntimeOptions } from 'troupe';
import { nextEvent } from 'troupe/testing';
import { fixtureAgent, maxOverlap, scratchDirs } from '../helpers.js';
import { prng } from '../fixtures/prng.js';

const dir = scratchDirs();
const T0 = Date.UTC(2026, 0, 1, 10, 0, 0);

/** Lines the record agent wrote: one per attempt start. */
function starts(file: string): number {
  return existsSync(file) ? readFileSync(file, 'utf8').trim().split('\n').filter(Boolean).length : 0;
}

function open(options: RuntimeOptions): Promise<Runtime> {
  return createRuntime({ logger: false, threads: 2, slotsPerThread: 2, cancelGraceMs: 500, ...options });
}

describe('per-agent limits, seen by the agents', () => {
  it('concurrency {total, [model]}: labels.model picks the sub-limit, other models are not blocked behind it', async () => {
    const path = dir();
    const file = join(dir(), 'overlap.log');
    const rt = await open({ dataDir: path, threads: 2, slotsPerThread: 4, agents: [{ name: 'llm', module: fixtureAgent('overlap'), concurrency: { total: 3, 'gpt-5': 1 } }] });
    // gpt-5 tasks first, so a head-of-line block would starve the mini ones behind them.
    const big = await rt.submitMany(Array.from({ length: 6 }, () => ({ agent: 'llm', input: { file, ms: 40 }, labels: { model: 'gpt-5' } })));
    const small = await rt.submitMany(Array.from({ length: 6 }, () => ({ agent: 'llm', input: { file, ms: 40 }, labels: { model: 'mini' } })));
    await Promise.all([...big, ...small].map((t) => rt.wait(t.id)));
    expect(maxOverlap(file, new Set(big.map((t) => t.id)))).toBe(1);
    expect(maxOverlap(file)).toBe(3);
    expect(rt.stats().agents.llm).toMatchObject({ limit: 3, models: { 'gpt-5': { reserved: 0, limit: 1 } }, tasks: { done: 12 } });
    await rt.close();
  });

  it('under a mixed load, no limit that applies is ever exceeded: slots, agent total, model, dispatch target', async () => {
    const file = join(dir(), 'overlap.log');
    const rt = await open({
      dataDir: dir(),
      threads: 2,
      slotsPerThread: 3,
      agents: [
        { name: 'llm', module: fixtureAgent('overlap'), concurrency: { total: 4, 'gpt-5': 2 } },
        { name: 'free', module: fixtureAgent('overlap') },
      ],
    });
    const probe = await rt.wait((await rt.submit({ agent: 'llm', lane: 'narrow', input: { file: join(dir(), 'probe.log'), ms: 1 } })).id);
    await rt.setDispatchTarget(probe.instanceKey, 1);
    const random = prng(7);
    const specs = Array.from({ length: 60 }, (_, i) => {
      const roll = random();
      const agent = roll < 0.7 ? 'llm' : 'free';
      const labels: Record<string, string> = agent === 'llm' && random() < 0.5 ? { model: 'gpt-5' } : {};
      const lane = agent === 'llm' && random() < 0.3 ? 'narrow' : `lane${i % 3}`;
      return { agent, lane, labels, input: { file, ms: 5 + Math.floor(random() * 30) } };
    });
    const tasks = await rt.submitMany(specs);
    await Promise.all(tasks.map((t) => rt.wait(t.id)));
    const ids = (keep: (t: (typeof tasks)[number]) => boolean) => new Set(tasks.filter(keep).map((t) => t.id));
    expect(maxOverlap(file)).toBeLessThanOrEqual(6);
    expect(maxOverlap(file, ids((t) => t.agent === 'llm'))).toBeLessThanOrEqual(4);
    expect(maxOverlap(file, ids((t) => t.labels.model === 'gpt-5'))).toBeLessThanOrEqual(2);
    expect(maxOverlap(file, ids((t) => t.instanceKey === probe.instanceKey))).toBe(1);
    // The limits bind: the work really ran concurrently up to them.
    expect(maxOverlap(file, ids((t) => t.agent === 'llm'))).toBeGreaterThanOrEqual(3);
    await rt.close();
  });

  it('rate {limit, windowMs}: a token bucket on the clock, still spent after a restart', async () => {
    const path = dir();
    const file = join(dir(), 'starts.log');
    const clock = new ManualClock(T0);
    const agents = [{ name: 'rec', module: fixtureAgent('record'), rate: { limit: 2, windowMs: 1_000 } }];
    let rt = await open({ dataDir: path, clock, agents });
    const tasks = await rt.submitMany(Array.from({ length: 5 }, () => ({ agent: 'rec', input: { file } })));
    await rt.wait(tasks[0]!.id);
    await rt.wait(tasks[1]!.id);
    expect(starts(file)).toBe(2);
    expect(rt.stats().agents.rec).toMatchObject({ paused: true, queued: 3, flow: { tokens: 0, heldUntil: T0 + 500 } });
    clock.advance(500);
    await rt.wait(tasks[2]!.id);
    expect(starts(file)).toBe(3);
    await rt.close();

    rt = await open({ dataDir: path, clock, agents });
    // The bucket was stored empty: a restart does not refill it.
    expect(rt.stats().agents.rec).toMatchObject({ paused: true, flow: { tokens: 0, heldUntil: T0 + 1_000 } });
    expect(starts(file)).toBe(3);
    clock.advance(500);
    await rt.wait(tasks[3]!.id);
    expect(starts(file)).toBe(4);
    expect((await rt.get(tasks[4]!.id)).state).toBe('queued');
    clock.advance(500);
    await rt.wait(tasks[4]!.id);
    expect(starts(file)).toBe(5);
    await rt.close();
  });

  it('dailyLimit: the day budget holds across a restart and resets at resetAt in its zone', async () => {
    const path = dir();
    const file = join(dir(), 'starts.log');
    const clock = new ManualClock(T0);
    const agents = [{ name: 'rec', module: fixtureAgent('record'), dailyLimit: { limit: 2, resetAt: '12:00', tz: 'Europe/Berlin' } }];
    let rt = await open({ dataDir: path, clock, agents });
    const tasks = await rt.submitMany(Array.from({ length: 3 }, () => ({ agent: 'rec', input: { file } })));
    await rt.wait(tasks[0]!.id);
    await rt.wait(tasks[1]!.id);
    await rt.close();
    rt = await open({ dataDir: path, clock, agents });
    const resetsAt = Date.UTC(2026, 0, 1, 11, 0, 0); // 12:00 in Berlin (CET)
    expect(rt.stats().agents.rec).toMatchObject({ paused: true, flow: { today: { count: 2, limit: 2, resetsAt } } });
    expect(starts(file)).toBe(2);
    clock.set(resetsAt);
    await rt.wait(tasks[2]!.id);
    expect(starts(file)).toBe(3);
    expect(rt.stats().agents.rec.flow?.today?.count).toBe(1);
    await rt.close();
  });

  it('backoff: K fast failures pause the agent (event, stats, persisted), and the pause ends on the clock', async () => {
    const path = dir();
    const clock = new ManualClock(T0);
    const agents = [builtinAgent('fail', { concurrency: 1, retry: { maxAttempts: 1 }, backoff: { failures: 3, fastFailMs: 60_000, pauseMs: 600_000 } })];
    let rt = await open({ dataDir: path, clock, agents });
    const paused = nextEvent(rt, 'agent.paused');
    const failing = await rt.submitMany(Array.from({ length: 3 }, () => ({ agent: 'fail', input: { mode: 'throw' as const } })));
    const healthy = await rt.submit({ agent: 'fail', input: { succeedOnAttempt: 1 } });
    for (const t of failing) expect((await rt.wait(t.id)).state).toBe('dropped');
    expect((await paused).data).toMatchObject({ agent: 'fail', until: T0 + 600_000, reason: 'fast_failures' });
    expect(rt.stats().agents.fail).toMatchObject({ paused: true, queued: 1, flow: { pausedUntil: T0 + 600_000 } });
    await rt.close();

    rt = await open({ dataDir: path, clock, agents });
    expect(rt.stats().agents.fail).toMatchObject({ paused: true, flow: { pausedUntil: T0 + 600_000 } });
    expect((await rt.get(healthy.id)).state).toBe('queued');
    const resumed = nextEvent(rt, 'agent.resumed');
    clock.advance(600_000);
    expect((await resumed).data).toMatchObject({ agent: 'fail', by: 'clock' });
    expect(await rt.wait(healthy.id)).toMatchObject({ state: 'done', attempts: 1 });
    await rt.close();
  });

  it('resumeAgent lifts a backoff pause early; unknown agents are rejected', async () => {
    const clock = new ManualClock(T0);
    const rt = await open({ dataDir: dir(), clock, agents: [builtinAgent('fail', { concurrency: 1, retry: { maxAttempts: 1 }, backoff: { failures: 1 } })] });
    const failed = await rt.wait((await rt.submit({ agent: 'fail', input: { mode: 'throw' } })).id);
    expect(failed.state).toBe('dropped');
    const next = await rt.submit({ agent: 'fail', input: { succeedOnAttempt: 1 } });
    expect(rt.stats().agents.fail.paused).toBe(true);
    expect(await rt.resumeAgent('fail')).toBe(true);
    expect(await rt.wait(next.id)).toMatchObject({ state: 'done' });
    expect(await rt.resumeAgent('fail')).toBe(false);
    await expect(rt.resumeAgent('nope')).rejects.toMatchObject({ code: 'UNKNOWN_AGENT' });
    await rt.close();
  });
});
