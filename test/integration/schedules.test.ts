/**
 * Cron schedules on an injected clock: validation, firing with one idempotency key per tick,
 * overlap policies, catch-up after downtime, pause/resume/update/delete, and real DST days.
 */
import { describe, expect, it } from 'vitest';
import { builtinAgent, createRuntime, ManualClock, type Runtime, type RuntimeEvent, type RuntimeOptions } from 'troupe';
import { scratchDirs } from '../helpers.js';

const dir = scratchDirs();
const T0 = Date.UTC(2026, 0, 1, 10, 0, 0);
const HOUR = 3_600_000;

// The clock jumps hours at a time here: a lease longer than any jump keeps running attempts alive.
function open(options: RuntimeOptions): Promise<Runtime> {
  return createRuntime({ logger: false, threads: 1, slotsPerThread: 4, cancelGraceMs: 500, leaseMs: 365 * 86_400_000, agents: [builtinAgent('echo'), builtinAgent('sleep')], ...options });
}

/** Collects schedule.fired events. */
function fired(rt: Runtime): Array<RuntimeEvent<'schedule.fired'>> {
  const events: Array<RuntimeEvent<'schedule.fired'>> = [];
  rt.on('schedule.fired', (e) => events.push(e));
  return events;
}

/** Waits until `n` events have been collected. */
async function until(events: readonly unknown[], n: number): Promise<void> {
  for (let i = 0; i < 2_000 && events.length < n; i++) await new Promise((resolve) => setTimeout(resolve, 2));
  expect(events.length).toBeGreaterThanOrEqual(n);
}

const iso = (ms: number) => new Date(ms).toISOString();

describe('schedules: validation', () => {
  it('rejects bad expressions, zones, templates and ids, storing nothing', async () => {
    const path = dir();
    let rt = await open({ dataDir: path });
    const task = { agent: 'echo' };
    const cases: Array<[object, string]> = [
      [{ id: 'a', cron: '* * * *', task }, 'INVALID_CRON'],
      [{ id: 'a', cron: '* * * * * * *', task }, 'INVALID_CRON'],
      [{ id: 'a', cron: '61 * * * *', task }, 'INVALID_CRON'],
      [{ id: 'a', cron: '@daily', task }, 'INVALID_CRON'],
      [{ id: 'a', cron: 'bogus', task }, 'INVALID_CRON'],
      [{ id: 'a', cron: '0 3 * * *', tz: 'Mars/Olympus', task }, 'INVALID_TIMEZONE'],
      [{ id: 'a', cron: 'bogus', tz: 'Nowhere/Land', task }, 'INVALID_TIMEZONE'],
      [{ id: 'a', cron: '0 3 * * *', task: { agent: 'ghost' } }, 'UNKNOWN_AGENT'],
      [{ id: 'a', cron: '0 3 * * *', task: { agent: 'echo', idempotencyKey: 'k' } }, 'INVALID_INPUT'],
      [{ id: 'a', cron: '0 3 * * *', task: { agent: 'echo', input: () => 1 } }, 'INVALID_INPUT'],
      [{ id: 'bad id!', cron: '0 3 * * *', task }, 'INVALID_INPUT'],
      [{ id: 'a', cron: '0 3 * * *', task, overlap: 'sometimes' }, 'INVALID_INPUT'],
      [{ id: 'a', cron: '0 3 * * *', task, catchUp: 'some' }, 'INVALID_INPUT'],
      [{ id: 'a', cron: '0 3 * * *', task, catchUpWindowMs: -1 }, 'INVALID_INPUT'],
      [{ id: 'a', cron: '0 3 * * *', task, extra: 1 }, 'INVALID_INPUT'],
    ];
    for (const [spec, code] of cases) await expect(rt.schedules.create(spec as never), JSON.stringify(spec)).rejects.toMatchObject({ code });
    expect(rt.schedules.list()).toEqual([]);
    await rt.schedules.create({ id: 'a', cron: '0 3 * * *', task });
    await expect(rt.schedules.create({ id: 'a', cron: '0 4 * * *', task })).rejects.toMatchObject({ code: 'INVALID_INPUT', message: expect.stringContaining('already exists') });
    await expect(rt.schedules.update('a', { cron: 'nope' })).rejects.toMatchObject({ code: 'INVALID_CRON' });
    expect(rt.schedules.get('a').cron).toBe('0 3 * * *');
    expect(() => rt.schedules.get('zzz')).toThrow(expect.objectContaining({ code: 'NOT_FOUND' }));
    await rt.close();
    rt = await open({ dataDir: path });
    expect(rt.schedules.list().map((s) => s.id)).toEqual(['a']);
    await rt.close();
    expect(() => rt.schedules.list()).toThrow(expect.objectContaining({ code: 'CLOSED' }));
    await expect(rt.schedules.create({ id: 'b', cron: '0 3 * * *', task })).rejects.toMatchObject({ code: 'CLOSED' });
  });
});

describe('schedules: firing', () => {
  it('submits one task per tick with the key schedule:<id>:<tick ISO>, 5 and 6 fields', async () => {
    const clock = new ManualClock(T0);
    const rt = await open({ dataDir: dir(), clock });
    const events = fired(rt);
    const created = await rt.schedules.create({ id: 'five', cron: '*/5 * * * *', task: { agent: 'echo', input: 'tick' } });
    expect(created).toMatchObject({ id: 'five', tz: 'UTC', overlap: 'skip', catchUp: 'skip', paused: false, nextRunAt: T0 + 300_000, fired: 0 });
    await rt.schedules.create({ id: 'secs', cron: '*/30 * * * * *', task: { agent: 'echo', input: 's' } });
    clock.advance(30_000);
    await until(events, 1);
    expect(events[0]!.data).toMatchObject({ scheduleId: 'secs', tickIso: iso(T0 + 30_000) });
    await rt.schedules.pause('secs');
    clock.advance(270_000);
    await until(events, 2);
    const five = events[1]!;
    const task = await rt.wait(five.taskId!);
    expect(task).toMatchObject({ state: 'done', output: 'tick', idempotencyKey: `schedule:five:${iso(T0 + 300_000)}` });
    expect(five.data).toMatchObject({ scheduleId: 'five', tick: T0 + 300_000, tickIso: iso(T0 + 300_000) });
    expect(rt.schedules.get('five')).toMatchObject({ fired: 1, skipped: 0, lastTaskId: task.id, lastTickAt: T0 + 300_000, nextRunAt: T0 + 600_000 });
    expect(rt.schedules.get('secs')).toMatchObject({ fired: 1, paused: true });
    expect(events).toHaveLength(2);
    await rt.close();
  });

  it('overlap: skip (default), allow and queue_one', async () => {
    const clock = new ManualClock(T0);
    const rt = await open({ dataDir: dir(), clock });
    const events = fired(rt);
    const task = { agent: 'sleep', input: { ms: 60_000, steps: 1 } };
    for (const overlap of ['skip', 'allow', 'queue_one'] as const) await rt.schedules.create({ id: overlap, cron: '0 * * * *', overlap, task });
    // queue_one records nothing for a tick it holds back, until a later tick replaces it.
    for (const total of [3, 5, 8]) {
      clock.advance(HOUR);
      await until(events, total);
    }
    const of = (id: string) => events.filter((e) => e.data.scheduleId === id);
    expect(of('skip').map((e) => e.data.skipped ?? 'fired')).toEqual(['fired', 'overlap', 'overlap']);
    expect(of('allow').map((e) => e.data.skipped ?? 'fired')).toEqual(['fired', 'fired', 'fired']);
    // queue_one: 11:00 fired; 12:00 was held back, then replaced by 13:00 (and recorded as skipped).
    expect(of('queue_one').map((e) => e.data.skipped ?? 'fired')).toEqual(['fired', 'overlap']);
    expect(rt.schedules.get('queue_one')).toMatchObject({ pendingTick: T0 + 3 * HOUR, fired: 1, skipped: 1 });
    const first = of('queue_one')[0]!.taskId!;
    await rt.cancel(first);
    await until(events, 9);
    const pending = events[8]!;
    expect(pending.data).toMatchObject({ scheduleId: 'queue_one', tick: T0 + 3 * HOUR });
    expect((await rt.get(pending.taskId!)).idempotencyKey).toBe(`schedule:queue_one:${iso(T0 + 3 * HOUR)}`);
    expect(rt.schedules.get('queue_one').pendingTick).toBeUndefined();
    await rt.kill('done');
    await rt.close();
  });

  it('catch-up after downtime: skip, once and all within catchUpWindowMs', async () => {
    const path = dir();
    const clock = new ManualClock(T0);
    let rt = await open({ dataDir: path, clock });
    const task = { agent: 'echo' };
    await rt.schedules.create({ id: 'skip', cron: '0 * * * *', task });
    await rt.schedules.create({ id: 'once', cron: '0 * * * *', task, catchUp: 'once' });
    await rt.schedules.create({ id: 'all', cron: '0 * * * *', task, catchUp: 'all', overlap: 'allow', catchUpWindowMs: 2.5 * HOUR });
    await rt.close();
    clock.set(T0 + 5.5 * HOUR); // down through the 11:00 to 15:00 ticks
    rt = await open({ dataDir: path, clock });
    const events = fired(rt);
    clock.advance(0); // a manual clock fires the overdue timers only when it moves
    await until(events, 15);
    const firedTicks = (id: string) => events.filter((e) => e.data.scheduleId === id && !e.data.skipped).map((e) => e.data.tick);
    expect(firedTicks('skip')).toEqual([]);
    expect(firedTicks('once')).toEqual([T0 + 5 * HOUR]);
    expect(firedTicks('all')).toEqual([T0 + 3 * HOUR, T0 + 4 * HOUR, T0 + 5 * HOUR]);
    for (const id of ['skip', 'once', 'all']) expect(rt.schedules.get(id).nextRunAt).toBe(T0 + 6 * HOUR);
    expect(rt.schedules.get('skip')).toMatchObject({ fired: 0, skipped: 5 });
    expect(rt.schedules.get('all')).toMatchObject({ fired: 3, skipped: 2 });
    await rt.close();
  });

  it('a tick whose submit fails (agent no longer registered) is recorded as skipped and the schedule moves on', async () => {
    const path = dir();
    const clock = new ManualClock(T0);
    let rt = await open({ dataDir: path, clock });
    await rt.schedules.create({ id: 'orphan', cron: '0 * * * *', task: { agent: 'echo' } });
    await rt.close();
    rt = await open({ dataDir: path, clock, agents: [] });
    const events = fired(rt);
    clock.advance(HOUR);
    await until(events, 1);
    expect(events[0]!.data).toMatchObject({ scheduleId: 'orphan', tick: T0 + HOUR, skipped: 'error', error: expect.stringContaining('echo') });
    expect(rt.schedules.get('orphan')).toMatchObject({ fired: 0, skipped: 1, nextRunAt: T0 + 2 * HOUR });
    await rt.close();
  });

    it('pause, resume, update and delete survive a restart', async () => {
    const path = dir();
    const clock = new ManualClock(T0);
    let rt = await open({ dataDir: path, clock });
    const events = fired(rt);
    await rt.schedules.create({ id: 'p', cron: '0 * * * *', task: { agent: 'echo' } });
    await rt.schedules.create({ id: 'gone', cron: '0 * * * *', task: { agent: 'echo' } });
    expect(await rt.schedules.pause('p')).toMatchObject({ paused: true });
    await rt.schedules.delete('gone');
    expect(() => rt.schedules.get('gone')).toThrow(expect.objectContaining({ code: 'NOT_FOUND' }));
    await rt.close();
    rt = await open({ dataDir: path, clock });
    rt.on('schedule.fired', (e) => events.push(e));
    expect(rt.schedules.list().map((s) => [s.id, s.paused])).toEqual([['p', true]]);
    clock.advance(2 * HOUR);
    expect(await rt.schedules.resume('p')).toMatchObject({ paused: false, nextRunAt: T0 + 3 * HOUR });
    const updated = await rt.schedules.update('p', { cron: '30 * * * *', tz: 'Asia/Kolkata', task: { agent: 'echo', input: 'v2' } });
    // 12:00 UTC is 17:30 in Kolkata: the next :30 there is 18:30 = 13:00 UTC.
    expect(updated).toMatchObject({ cron: '30 * * * *', tz: 'Asia/Kolkata', nextRunAt: T0 + 3 * HOUR });
    clock.advance(HOUR);
    await until(events, 1);
    expect(await rt.wait(events[0]!.taskId!)).toMatchObject({ output: 'v2' });
    await rt.close();
  });
});

describe('schedules: daylight saving time in a real zone', () => {
  async function ticks(from: number, expected: number[]): Promise<void> {
    const clock = new ManualClock(from);
    const rt = await open({ dataDir: dir(), clock });
    const events = fired(rt);
    await rt.schedules.create({ id: 'nightly', cron: '30 2 * * *', tz: 'Europe/Berlin', task: { agent: 'echo' } });
    for (const [i, tick] of expected.entries()) {
      expect(rt.schedules.get('nightly').nextRunAt).toBe(tick);
      clock.set(tick);
      await until(events, i + 1);
      await rt.wait(events[i]!.taskId!);
    }
    expect(events.map((e) => e.data.tickIso)).toEqual(expected.map(iso));
    await rt.close();
  }

  it('a daily 02:30 Europe/Berlin job fires once on the spring-forward day, at 03:30 CEST', async () => {
    // 02:30 does not exist on 29 March 2026: the tick moves to 03:30 CEST (01:30 UTC), once.
    await ticks(Date.UTC(2026, 2, 27, 12), [Date.UTC(2026, 2, 28, 1, 30), Date.UTC(2026, 2, 29, 1, 30), Date.UTC(2026, 2, 30, 0, 30)]);
  });

  it('and once on the fall-back day, although 02:30 happens twice', async () => {
    // 25 October 2026: 02:30 CEST (00:30 UTC) and 02:30 CET (01:30 UTC); only the first fires.
    await ticks(Date.UTC(2026, 9, 24, 12), [Date.UTC(2026, 9, 25, 0, 30), Date.UTC(2026, 9, 26, 1, 30)]);
  });
});
