/**
 * Runtime controls (freeze, unfreeze, kill, poke) and capability routing, over real threads and a
 * real store, including a restart.
 */
import { describe, expect, it } from 'vitest';
import { builtinAgent, createRuntime, type Runtime, type RuntimeEvent, type RuntimeOptions } from 'troupe';
import { nextEvent } from 'troupe/testing';
import { scratchDirs, started } from '../helpers.js';

const dir = scratchDirs();

function open(options: RuntimeOptions): Promise<Runtime> {
  return createRuntime({ logger: false, threads: 2, slotsPerThread: 2, cancelGraceMs: 500, ...options });
}

describe('freeze, unfreeze, kill and poke', () => {
  it('freeze stops dispatch but accepts submits and lets running attempts finish; it survives a restart', async () => {
    const path = dir();
    const agents = [builtinAgent('sleep'), builtinAgent('echo')];
    let rt = await open({ dataDir: path, agents });
    const running = await rt.submit({ agent: 'sleep', input: { ms: 300 } });
    await started(rt, running.id);
    const frozen = nextEvent(rt, 'runtime.frozen');
    await rt.freeze('maintenance');
    expect((await frozen).data).toEqual({ reason: 'maintenance', killed: false });
    const held = await rt.submit({ agent: 'echo', input: 'later' });
    expect(await rt.wait(running.id)).toMatchObject({ state: 'done' });
    await expect(rt.wait(held.id, { timeoutMs: 300 })).rejects.toMatchObject({ code: 'WAIT_TIMEOUT' });
    expect(rt.stats()).toMatchObject({ frozen: true, freeze: { reason: 'maintenance', killed: false } });
    await rt.close();

    rt = await open({ dataDir: path, agents });
    expect(rt.stats().frozen).toBe(true);
    rt.poke(); // poke drains, but never past a freeze
    await expect(rt.wait(held.id, { timeoutMs: 200 })).rejects.toMatchObject({ code: 'WAIT_TIMEOUT' });
    const unfrozen = nextEvent(rt, 'runtime.unfrozen');
    await rt.unfreeze();
    await unfrozen;
    expect(await rt.wait(held.id)).toMatchObject({ state: 'done', output: 'later', attempts: 1 });
    expect(rt.stats()).toMatchObject({ frozen: false, freeze: null });
    await rt.close();
  });

  it('kill aborts every running attempt and freezes; the tasks are requeued with their budget intact', async () => {
    const path = dir();
    const agents = [builtinAgent('sleep', { retry: { maxAttempts: 1 } })];
    let rt = await open({ dataDir: path, agents });
    const tasks = await rt.submitMany(Array.from({ length: 3 }, () => ({ agent: 'sleep', input: { ms: 60_000, steps: 1 } })));
    await Promise.all(tasks.map((t) => started(rt, t.id)));
    await rt.kill('runaway spend');
    for (const t of tasks) expect(await rt.get(t.id)).toMatchObject({ state: 'queued', attempts: 0 });
    expect(rt.stats()).toMatchObject({ frozen: true, freeze: { reason: 'runaway spend', killed: true }, attempts: { executing: 0 } });
    await rt.close();

    rt = await open({ dataDir: path, agents });
    expect(rt.stats()).toMatchObject({ frozen: true, freeze: { killed: true } });
    for (const t of tasks) await rt.cancel(t.id, 'cleanup');
    const short = await rt.submit({ agent: 'sleep', input: { ms: 1 } });
    await rt.unfreeze();
    expect(await rt.wait(short.id)).toMatchObject({ state: 'done', attempts: 1 });
    await rt.close();
  });

  it('freeze and unfreeze apply in call order, one event each, even when not awaited', async () => {
    const rt = await open({ dataDir: dir(), agents: [builtinAgent('echo')] });
    const events: string[] = [];
    rt.on('runtime.frozen', () => events.push('frozen'));
    rt.on('runtime.unfrozen', () => events.push('unfrozen'));
    await Promise.all([rt.freeze('a'), rt.freeze('b'), rt.unfreeze(), rt.freeze('c')]);
    expect(rt.stats()).toMatchObject({ frozen: true, freeze: { reason: 'c' } });
    expect(events).toEqual(['frozen', 'unfrozen', 'frozen']);
    await rt.unfreeze();
    expect(await rt.wait((await rt.submit({ agent: 'echo', input: 'ok' })).id)).toMatchObject({ state: 'done' });
    await rt.close();
  });

    it('controls on a closed runtime throw CLOSED', async () => {
    const rt = await open({ dataDir: dir() });
    await rt.close();
    await expect(rt.freeze()).rejects.toMatchObject({ code: 'CLOSED' });
    await expect(rt.unfreeze()).rejects.toMatchObject({ code: 'CLOSED' });
    await expect(rt.kill('x')).rejects.toMatchObject({ code: 'CLOSED' });
    expect(() => rt.poke()).toThrow(expect.objectContaining({ code: 'CLOSED' }));
  });

  it('rejects a non-string reason', async () => {
    const rt = await open({ dataDir: dir() });
    await expect(rt.freeze(42 as unknown as string)).rejects.toMatchObject({ code: 'INVALID_INPUT' });
    await expect(rt.kill({} as unknown as string)).rejects.toMatchObject({ code: 'INVALID_INPUT' });
    expect(rt.stats().frozen).toBe(false);
    await rt.close();
  });
});

describe('capabilities and requires', () => {
  const agents = [
    builtinAgent('echo', { name: 'full', capabilities: ['git', 'ts'], concurrency: 2 }),
    builtinAgent('echo', { name: 'git-only', capabilities: ['git'], concurrency: 2 }),
  ];

  it('routes requires-only tasks to an agent covering all of them, least-loaded first', async () => {
    const rt = await open({ dataDir: dir(), agents });
    const ts = await rt.submit({ requires: ['ts', 'git'], input: 1 });
    expect(ts.agent).toBe('full');
    const batch = await rt.submitMany(Array.from({ length: 8 }, (_, i) => ({ requires: ['git'], input: i })));
    const byAgent = { full: 0, 'git-only': 0 } as Record<string, number>;
    for (const t of batch) byAgent[t.agent]!++;
    // Equal capacity: the batch spreads evenly (the one ts task counts against `full`).
    expect(Math.abs(byAgent.full! - byAgent['git-only']!)).toBeLessThanOrEqual(2);
    expect(byAgent.full! + byAgent['git-only']!).toBe(8);
    for (const t of [ts, ...batch]) expect(await rt.wait(t.id)).toMatchObject({ state: 'done', requires: t.requires });
    await rt.close();
  });

  it('an unmatched task goes straight to needs_attention; an operator retry routes it once an agent covers it', async () => {
    const rt = await open({ dataDir: dir(), agents });
    const attention = nextEvent(rt, 'task.needs_attention');
    const rusty = await rt.submit({ requires: ['rust'], input: 'r' });
    expect(rusty).toMatchObject({ state: 'needs_attention', reason: 'unmatched', agent: '' });
    expect((await attention).data).toMatchObject({ reason: 'unmatched', requires: ['rust'] });
    expect(await rt.wait(rusty.id)).toMatchObject({ state: 'needs_attention' });
    const named = await rt.submit({ agent: 'git-only', requires: ['ts'], input: 'n' });
    expect(named).toMatchObject({ state: 'needs_attention', reason: 'unmatched', agent: 'git-only' });
    await expect(rt.retry(rusty.id)).rejects.toMatchObject({ code: 'UNKNOWN_AGENT' });
    expect((await rt.get(rusty.id)).state).toBe('needs_attention');
    rt.agents.register(builtinAgent('echo', { name: 'crab', capabilities: ['rust'] }));
    expect(await rt.retry(rusty.id)).toMatchObject({ state: 'queued', agent: 'crab' });
    expect(await rt.wait(rusty.id)).toMatchObject({ state: 'done', output: 'r', agent: 'crab' });
    expect(await rt.cancel(named.id)).toMatchObject({ state: 'cancelled' });
    expect(rt.stats().tasks).toMatchObject({ done: 1, cancelled: 1 });
    await rt.close();
  });

  it('rejects a bad requires before storing anything', async () => {
    const rt = await open({ dataDir: dir(), agents });
    for (const requires of [[], [''], 'git', [1]]) {
      await expect(rt.submit({ requires: requires as string[] })).rejects.toMatchObject({ code: 'INVALID_INPUT' });
    }
    await expect(rt.submit({} as never)).rejects.toMatchObject({ code: 'INVALID_INPUT', message: expect.stringContaining('requires') });
    expect(rt.stats().tasks).toEqual({ queued: 0, running: 0, waiting: 0, sleeping: 0, needs_attention: 0, done: 0, failed: 0, dropped: 0, cancelled: 0 });
    await rt.close();
  });
});
