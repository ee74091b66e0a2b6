import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/clock.js';
import { FlowControl } from '../../src/governor/flow.js';
import type { Governor } from '../../src/governor/governor.js';
import type { RegisteredAgent } from '../../src/agents/registry.js';
import type { AgentFlowState } from '../../src/store/records.js';
import { DEFAULT_RETRY } from '../../src/options.js';

const T0 = Date.UTC(2026, 0, 1, 10, 0, 0);

function agent(extra: Partial<RegisteredAgent> = {}): RegisteredAgent {
  return { name: 'a', module: 'file:///a.js', concurrency: null, models: {}, capabilities: [], timeoutMs: 0, retry: DEFAULT_RETRY, rate: null, dailyLimit: null, backoff: null, retention: null, ...extra };
}

function harness() {
  const clock = new ManualClock(T0);
  const paused = new Map<string, boolean>();
  const ended: Array<{ agent: string; state: AgentFlowState; at: number }> = [];
  let releases = 0;
  const governor = { pauseAgent: (name: string, p: boolean) => paused.set(name, p) } as unknown as Governor;
  const flow = new FlowControl({ clock, governor, onRelease: () => releases++, onPauseEnded: (a, state, at) => ended.push({ agent: a, state, at }) });
  return { clock, paused, ended, flow, releases: () => releases };
}

describe('FlowControl: rate pacing (token bucket)', () => {
  it('allows a burst of `limit`, then one start per windowMs/limit, on the injected clock', () => {
    const h = harness();
    h.flow.configure(agent({ rate: { limit: 2, windowMs: 1_000 } }), undefined, h.clock.now());
    expect(h.paused.get('a') ?? false).toBe(false);
    h.flow.started('a', h.clock.now());
    expect(h.paused.get('a') ?? false).toBe(false);
    h.flow.started('a', h.clock.now());
    expect(h.paused.get('a')).toBe(true);
    expect(h.flow.view('a', h.clock.now())).toMatchObject({ tokens: 0, heldUntil: T0 + 500 });
    h.clock.advance(499);
    expect(h.paused.get('a')).toBe(true);
    h.clock.advance(1);
    expect(h.paused.get('a')).toBe(false);
    expect(h.releases()).toBe(1);
    h.flow.started('a', h.clock.now());
    expect(h.paused.get('a')).toBe(true);
  });

  it('never refills past the limit and resumes from a stored bucket (restart)', () => {
    const h = harness();
    const stored: AgentFlowState = { tokens: 0.5, refilledAt: T0 - 100, fastFails: 0 };
    h.flow.configure(agent({ rate: { limit: 4, windowMs: 4_000 } }), stored, h.clock.now());
    // 0.5 + 100 ms × 1/ms·1000 = 0.6 tokens: held until the next whole token.
    expect(h.paused.get('a')).toBe(true);
    expect(h.flow.view('a', h.clock.now())?.heldUntil).toBe(T0 + 400);
    h.clock.advance(60_000);
    expect(h.flow.view('a', h.clock.now())?.tokens).toBe(4);
  });

  it('returns the state to persist with each start, and nothing for an agent without limits', () => {
    const h = harness();
    h.flow.configure(agent({ name: 'free' }), undefined, T0);
    expect(h.flow.started('free', T0)).toBeUndefined();
    h.flow.configure(agent({ rate: { limit: 3, windowMs: 3_000 } }), undefined, T0);
    expect(h.flow.started('a', T0)).toMatchObject({ tokens: 2, refilledAt: T0 });
  });
});

describe('FlowControl: backoff after fast failures', () => {
  const backoff = { failures: 3, fastFailMs: 60_000, pauseMs: 1_800_000 };

  it('pauses after K consecutive fast agent-fault failures, then resumes on the clock', () => {
    const h = harness();
    h.flow.configure(agent({ backoff }), undefined, T0);
    expect(h.flow.ended('a', 'error', 10, T0)).toEqual({ state: { fastFails: 1 } });
    expect(h.flow.ended('a', 'error', 10, T0)).toEqual({ state: { fastFails: 2 } });
    const third = h.flow.ended('a', 'timeout', 10, T0);
    expect(third).toEqual({ state: { fastFails: 0, pausedUntil: T0 + 1_800_000 }, pausedUntil: T0 + 1_800_000 });
    expect(h.paused.get('a')).toBe(true);
    expect(h.flow.view('a', T0)).toMatchObject({ pausedUntil: T0 + 1_800_000, heldUntil: T0 + 1_800_000 });
    h.clock.advance(1_799_999);
    expect(h.paused.get('a')).toBe(true);
    expect(h.ended).toHaveLength(0);
    h.clock.advance(1);
    expect(h.paused.get('a')).toBe(false);
    expect(h.ended).toEqual([{ agent: 'a', state: { fastFails: 0 }, at: T0 + 1_800_000 }]);
  });

  it('a failure the agent reported on purpose never counts, and leaves the streak as it is', () => {
    const h = harness();
    h.flow.configure(agent({ backoff }), undefined, T0);
    h.flow.ended('a', 'error', 10, T0);
    h.flow.ended('a', 'error', 10, T0);
    for (let i = 0; i < 5; i++) {
      expect(h.flow.ended('a', 'fail', 10, T0)).toBeUndefined();
      expect(h.flow.ended('a', 'error', 10, T0, true)).toBeUndefined();
    }
    expect(h.paused.get('a') ?? false).toBe(false);
    expect(h.flow.view('a', T0)).toMatchObject({ fastFails: 2, pausedUntil: null });
  });

  it('a slow failure or a success breaks the streak; infrastructure exits leave it alone', () => {
    const h = harness();
    h.flow.configure(agent({ backoff }), undefined, T0);
    h.flow.ended('a', 'error', 10, T0);
    h.flow.ended('a', 'error', 10, T0);
    expect(h.flow.ended('a', 'error', 60_000, T0)).toEqual({ state: { fastFails: 0 } });
    h.flow.ended('a', 'error', 10, T0);
    h.flow.ended('a', 'error', 10, T0);
    expect(h.flow.ended('a', 'crashed', 1, T0)).toBeUndefined();
    expect(h.flow.ended('a', 'lease_expired', 1, T0)).toBeUndefined();
    expect(h.flow.ended('a', 'cancelled', 1, T0)).toBeUndefined();
    expect(h.flow.ended('a', 'interrupted', 1, T0)).toBeUndefined();
    expect(h.flow.ended('a', 'success', 1, T0)).toEqual({ state: { fastFails: 0 } });
    expect(h.flow.ended('a', 'success', 1, T0)).toBeUndefined();
    expect(h.paused.get('a') ?? false).toBe(false);
  });

  it('keeps a stored pause across a restart and can be lifted early', () => {
    const h = harness();
    h.flow.configure(agent({ backoff }), { fastFails: 0, pausedUntil: T0 + 5_000 }, T0);
    expect(h.paused.get('a')).toBe(true);
    expect(h.flow.resume('a', T0)).toEqual({ fastFails: 0 });
    expect(h.paused.get('a')).toBe(false);
    expect(h.flow.resume('a', T0)).toBeUndefined();
    // The lifted pause's timer must not fire a late "ended".
    h.clock.advance(10_000);
    expect(h.ended).toHaveLength(0);
  });

  it('a stored pause that ran out while the runtime was down ends as it opens: told, and nothing left to resume', () => {
    const h = harness();
    h.flow.configure(agent({ backoff }), { fastFails: 0, pausedUntil: T0 - 1 }, T0);
    expect(h.paused.get('a') ?? false).toBe(false);
    expect(h.flow.view('a', T0)?.pausedUntil).toBeNull();
    expect(h.ended).toEqual([{ agent: 'a', state: { fastFails: 0 }, at: T0 }]);
    expect(h.flow.resume('a', T0)).toBeUndefined();
    h.flow.refresh(T0);
    expect(h.ended).toHaveLength(1);
  });

  it('with backoff off, failures change nothing', () => {
    const h = harness();
    h.flow.configure(agent(), undefined, T0);
    for (let i = 0; i < 10; i++) expect(h.flow.ended('a', 'error', 1, T0)).toBeUndefined();
    expect(h.paused.get('a') ?? false).toBe(false);
  });
});

describe('FlowControl: daily limit', () => {
  it('holds the agent once the day is spent and releases it at the reset time in its zone', () => {
    const h = harness();
    // 10:00 UTC; resets at 06:00 in New York (11:00 UTC in January).
    h.flow.configure(agent({ dailyLimit: { limit: 2, resetAt: '06:00', tz: 'America/New_York' } }), undefined, T0);
    h.flow.started('a', T0);
    expect(h.paused.get('a') ?? false).toBe(false);
    const state = h.flow.started('a', T0);
    expect(state).toMatchObject({ dayCount: 2 });
    expect(h.paused.get('a')).toBe(true);
    const resetsAt = Date.UTC(2026, 0, 1, 11, 0, 0);
    expect(h.flow.view('a', T0)).toMatchObject({ today: { count: 2, limit: 2, resetsAt }, heldUntil: resetsAt });
    h.clock.set(resetsAt - 1);
    expect(h.paused.get('a')).toBe(true);
    h.clock.set(resetsAt);
    expect(h.paused.get('a')).toBe(false);
    expect(h.flow.view('a', resetsAt)?.today?.count).toBe(0);
  });

  it('does not start a day over when the clock steps back into the day before', () => {
    const h = harness();
    const day = Date.UTC(2026, 0, 2);
    h.clock.set(day + 60_000);
    h.flow.configure(agent({ dailyLimit: { limit: 3, resetAt: '00:00', tz: 'UTC' } }), undefined, h.clock.now());
    for (let i = 0; i < 3; i++) h.flow.started('a', h.clock.now());
    expect(h.paused.get('a')).toBe(true);
    // NTP steps the clock back five minutes, over the reset (the manual clock only goes forward:
    // the time is given to the calls, as a poke after the jump gives it).
    const back = day - 4 * 60_000;
    h.flow.refresh(back);
    expect(h.paused.get('a')).toBe(true);
    expect(h.flow.view('a', back)?.today).toEqual({ count: 3, limit: 3, resetsAt: day + 86_400_000 });
    h.clock.set(day + 3 * 60_000);
    h.flow.refresh(h.clock.now());
    expect(h.paused.get('a')).toBe(true);
    expect(h.flow.view('a', h.clock.now())?.today?.count).toBe(3);
    h.clock.set(day + 86_400_000);
    expect(h.paused.get('a')).toBe(false);
    expect(h.flow.view('a', h.clock.now())?.today?.count).toBe(0);
  });

  it('resumes the count from the stored state within the same day, and starts over on a new day', () => {
    const h = harness();
    const dayStart = Date.UTC(2026, 0, 1);
    h.flow.configure(agent({ dailyLimit: { limit: 3, resetAt: '00:00', tz: 'UTC' } }), { fastFails: 0, dayStart, dayCount: 3 }, T0);
    expect(h.paused.get('a')).toBe(true);
    const h2 = harness();
    h2.flow.configure(agent({ dailyLimit: { limit: 3, resetAt: '00:00', tz: 'UTC' } }), { fastFails: 0, dayStart: dayStart - 86_400_000, dayCount: 3 }, T0);
    expect(h2.paused.get('a') ?? false).toBe(false);
    expect(h2.flow.view('a', T0)?.today?.count).toBe(0);
  });
});
