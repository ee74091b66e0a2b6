import { describe, expect, it } from 'vitest';
import { EVERY_MINUTE, MIN } from '../../fixtures/every-minute.js';
import type { TaskState } from '../../../machines/index.js';
import type { RetryPolicy, ScheduleRecord, TaskRecord } from '../../../src/store/records.js';
import type { ValidSpec } from '../../../src/tasks/spec.js';
import { decideFire, MAX_TICKS_PER_FIRE, type FireInput, type FireTemplate, type FireView } from '../../../src/steps/fire.js';
import type { StepContext, StepResult } from '../../../src/steps/types.js';

const RETRY: RetryPolicy = { maxAttempts: 3, backoff: 'exponential', delayMs: 1_000, maxDelayMs: 60_000, jitter: 0 };
const NOW = 100 * MIN + 5_000;
const iso = (ms: number) => new Date(ms).toISOString();

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const inner of Object.values(value)) deepFreeze(inner);
  }
  return value;
}

function context(firstSeq = 1_000): StepContext & { readonly next: number } {
  let seq = firstSeq;
  let ids = 0;
  return { now: NOW, seq: () => seq++, random: () => 0, id: () => `T${++ids}`, get next() { return seq; } };
}


function scheduleOf(patch: Partial<ScheduleRecord> = {}): ScheduleRecord {
  return {
    id: 'tick', cron: '* * * * *', tz: 'UTC', task: { agent: 'echo' }, overlap: 'skip', catchUp: 'skip', catchUpWindowMs: 86_400_000, paused: false,
    nextRunAt: 100 * MIN, fired: 3, skipped: 1, createdAt: 0, updatedAt: 0,
    ...patch,
  };
}

const SPEC = { agent: undefined, unmatched: false, agentName: 'echo', input: null, priority: 0, lane: 'default', labels: {}, timeoutMs: 0, retry: RETRY, instanceKey: 'echo/default/abc' } as ValidSpec;

interface Setup {
  schedule?: Partial<ScheduleRecord>;
  last?: TaskState;
  openedAt?: number;
  existing?: Record<string, TaskRecord>;
  template?: FireTemplate;
  queued?: number;
  maxQueued?: number;
  input?: { kind: 'due'; expected?: number } | { kind: 'pending' };
  ctx?: StepContext;
}

function fire(setup: Setup = {}): StepResult {
  const schedule = scheduleOf(setup.schedule);
  const view: FireView = {
    schedule,
    cron: EVERY_MINUTE,
    openedAt: setup.openedAt ?? 0,
    lastTaskState: setup.last,
    taskOfKey: (key) => setup.existing?.[key],
    workspacesDir: '/data/workspaces',
  };
  const kind = setup.input ?? { kind: 'due' };
  const base = { template: setup.template ?? { spec: SPEC }, queued: setup.queued ?? 0, maxQueued: setup.maxQueued ?? 100 };
  const input: FireInput = kind.kind === 'pending' ? { ...base, kind: 'pending' } : { ...base, kind: 'due', expected: kind.expected ?? schedule.nextRunAt };
  return decideFire(deepFreeze(view), deepFreeze(input), setup.ctx ?? context());
}

const scheduleIn = (out: StepResult) => {
  const change = out.changes.find((c) => c.kind === 'schedule');
  return change?.kind === 'schedule' ? change.schedule : undefined;
};
const firedData = (out: StepResult) => out.events.filter((e) => e.type === 'schedule.fired').map((e) => e.data);
const tasksIn = (out: StepResult) => out.changes.flatMap((c) => (c.kind === 'task' ? [c.task] : []));

describe('decideFire: a due tick', () => {
  it('submits the tick’s task with key schedule:<id>:<tick ISO>, advances the schedule, and re-arms it', () => {
    const tick = 100 * MIN;
    const out = fire();
    const [task] = tasksIn(out);
    expect(task).toMatchObject({ id: 'T1', state: 'queued', idempotencyKey: `schedule:tick:${iso(tick)}`, queuedOrder: 1_000 });
    expect(out.changes).toContainEqual({ kind: 'idempotency', key: `schedule:tick:${iso(tick)}`, taskId: 'T1' });
    expect(out.events).toEqual([
      { seq: 1_000, at: NOW, type: 'task.queued', taskId: 'T1', data: { run: 1, agent: 'echo', priority: 0 } },
      { seq: 1_001, at: NOW, type: 'schedule.fired', taskId: 'T1', data: { scheduleId: 'tick', tick, tickIso: iso(tick) } },
    ]);
    expect(scheduleIn(out)).toStrictEqual({ ...scheduleOf(), nextRunAt: 101 * MIN, fired: 4, skipped: 1, updatedAt: NOW, lastTickAt: tick, lastTaskId: 'T1' });
    expect(out.effects).toEqual([{ kind: 'arm-schedule', scheduleId: 'tick', due: 101 * MIN }]);
  });

  it('fails the compare-and-swap when the stored tick is not the one fired: only re-arms from the stored tick', () => {
    const ctx = context();
    const out = fire({ input: { kind: 'due', expected: 99 * MIN }, ctx });
    expect(out).toEqual({ changes: [], events: [], effects: [{ kind: 'arm-schedule', scheduleId: 'tick', due: 100 * MIN }] });
    expect(ctx.next).toBe(1_000);
  });

  it('does nothing for a paused schedule, and only re-arms one whose tick is not due yet', () => {
    expect(fire({ schedule: { paused: true } })).toEqual({ changes: [], events: [], effects: [] });
    expect(fire({ schedule: { nextRunAt: NOW + 1 } })).toEqual({ changes: [], events: [], effects: [{ kind: 'arm-schedule', scheduleId: 'tick', due: NOW + 1 }] });
  });

  it('does not submit a tick twice: a task already holding its key is picked', () => {
    const tick = 100 * MIN;
    const held = { id: 'OLD' } as TaskRecord;
    const out = fire({ existing: { [`schedule:tick:${iso(tick)}`]: held } });
    expect(tasksIn(out)).toEqual([]);
    expect(out.events).toEqual([{ seq: 1_000, at: NOW, type: 'schedule.fired', taskId: 'OLD', data: { scheduleId: 'tick', tick, tickIso: iso(tick) } }]);
    expect(scheduleIn(out)).toMatchObject({ fired: 4, lastTaskId: 'OLD' });
  });

  it('submits an unmatched template’s task into needs_attention', () => {
    const out = fire({ template: { spec: { ...SPEC, unmatched: true, agentName: '', instanceKey: '', requires: ['gpu'] } }, queued: 100, maxQueued: 100 });
    expect(tasksIn(out)[0]).toMatchObject({ state: 'needs_attention', reason: 'unmatched' });
    expect(out.events.map((e) => e.type)).toEqual(['task.needs_attention', 'schedule.fired']);
  });
});

describe('decideFire: overlap', () => {
  it('skip: a tick while the previous run is going is skipped', () => {
    const out = fire({ schedule: { lastTaskId: 'PREV' }, last: 'running' });
    expect(tasksIn(out)).toEqual([]);
    expect(firedData(out)).toEqual([{ scheduleId: 'tick', tick: 100 * MIN, tickIso: iso(100 * MIN), skipped: 'overlap' }]);
    expect(out.events[0]!.taskId).toBeUndefined();
    expect(scheduleIn(out)).toMatchObject({ nextRunAt: 101 * MIN, fired: 3, skipped: 2, lastTaskId: 'PREV' });
  });

  it('a terminal (or unknown) previous run does not hold the tick back', () => {
    expect(tasksIn(fire({ schedule: { lastTaskId: 'PREV' }, last: 'done' }))).toHaveLength(1);
    expect(tasksIn(fire({ schedule: { lastTaskId: 'PREV' }, last: undefined }))).toHaveLength(1);
  });

  it('allow: a tick runs whatever the previous run is doing', () => {
    const out = fire({ schedule: { lastTaskId: 'PREV', overlap: 'allow' }, last: 'running' });
    expect(tasksIn(out)).toHaveLength(1);
  });

  it('queue_one: holds the tick until the previous run settles; a newer tick replaces it (the older is skipped)', () => {
    const held = fire({ schedule: { lastTaskId: 'PREV', overlap: 'queue_one' }, last: 'running' });
    expect(tasksIn(held)).toEqual([]);
    expect(firedData(held)).toEqual([]);
    expect(scheduleIn(held)).toMatchObject({ pendingTick: 100 * MIN, skipped: 1, fired: 3 });
    const replaced = fire({ schedule: { lastTaskId: 'PREV', overlap: 'queue_one', pendingTick: 99 * MIN }, last: 'running' });
    expect(firedData(replaced)).toEqual([{ scheduleId: 'tick', tick: 99 * MIN, tickIso: iso(99 * MIN), skipped: 'overlap' }]);
    expect(scheduleIn(replaced)).toMatchObject({ pendingTick: 100 * MIN, skipped: 2 });
  });

  it('queue_one with several due ticks: the first runs, the last is held, those between are skipped', () => {
    const out = fire({ schedule: { overlap: 'queue_one', nextRunAt: 98 * MIN } });
    expect(tasksIn(out).map((t) => t.idempotencyKey)).toEqual([`schedule:tick:${iso(98 * MIN)}`]);
    expect(firedData(out).filter((d) => d!.skipped)).toEqual([{ scheduleId: 'tick', tick: 99 * MIN, tickIso: iso(99 * MIN), skipped: 'overlap' }]);
    expect(scheduleIn(out)).toMatchObject({ pendingTick: 100 * MIN, lastTickAt: 98 * MIN, nextRunAt: 101 * MIN });
  });
});

describe('decideFire: a held (queue_one) tick', () => {
  const held = { overlap: 'queue_one' as const, lastTaskId: 'PREV', pendingTick: 99 * MIN, nextRunAt: 101 * MIN };

  it('fires once the previous run settled, clearing it and leaving nextRunAt', () => {
    const out = fire({ schedule: held, last: 'done', input: { kind: 'pending' } });
    expect(tasksIn(out)[0]).toMatchObject({ idempotencyKey: `schedule:tick:${iso(99 * MIN)}` });
    const updated = scheduleIn(out)!;
    expect(updated).toMatchObject({ nextRunAt: 101 * MIN, fired: 4, lastTickAt: 99 * MIN, lastTaskId: 'T1' });
    expect('pendingTick' in updated).toBe(false);
    expect(out.effects).toEqual([{ kind: 'arm-schedule', scheduleId: 'tick', due: 101 * MIN }]);
  });

  it('re-arms as paused (off the wheel) a paused schedule whose held tick fired', () => {
    expect(fire({ schedule: { ...held, paused: true }, last: 'failed', input: { kind: 'pending' } }).effects).toEqual([{ kind: 'arm-schedule', scheduleId: 'tick', due: null }]);
  });

  it('runs before a newer due tick when the previous run settled before the held one could fire; the newer one is held', () => {
    const out = fire({ schedule: { ...held, nextRunAt: 100 * MIN }, last: 'cancelled' });
    expect(tasksIn(out).map((t) => t.idempotencyKey)).toEqual([`schedule:tick:${iso(99 * MIN)}`]);
    expect(firedData(out).filter((d) => d!.skipped)).toEqual([]);
    expect(scheduleIn(out)).toMatchObject({ lastTickAt: 99 * MIN, pendingTick: 100 * MIN, nextRunAt: 101 * MIN });
  });

  it('does nothing while the previous run is still going, or with no held tick', () => {
    expect(fire({ schedule: held, last: 'running', input: { kind: 'pending' } })).toEqual({ changes: [], events: [], effects: [] });
    expect(fire({ schedule: { ...held, pendingTick: undefined }, last: 'done', input: { kind: 'pending' } })).toEqual({ changes: [], events: [], effects: [] });
  });
});

describe('decideFire: catch-up of ticks missed while the runtime was down', () => {
  // Opened at NOW: the ticks 96..100 min all fell due before the open.
  const missed = { schedule: { nextRunAt: 96 * MIN, catchUpWindowMs: 3 * MIN + 5_000, overlap: 'allow' as const }, openedAt: NOW };
  const skippedTicks = (out: StepResult) => firedData(out).filter((d) => d!.skipped === 'catch_up').map((d) => d!.tick);
  const firedTicks = (out: StepResult) => tasksIn(out).map((t) => t.idempotencyKey);

  it('skip: fires none of them', () => {
    const out = fire(missed);
    expect(firedTicks(out)).toEqual([]);
    expect(skippedTicks(out)).toEqual([96, 97, 98, 99, 100].map((m) => m * MIN));
    expect(scheduleIn(out)).toMatchObject({ nextRunAt: 101 * MIN, skipped: 6, fired: 3 });
  });

  it('once: fires the latest within the window, skips the rest', () => {
    const out = fire({ ...missed, schedule: { ...missed.schedule, catchUp: 'once' } });
    expect(firedTicks(out)).toEqual([`schedule:tick:${iso(100 * MIN)}`]);
    expect(skippedTicks(out)).toEqual([96, 97, 98, 99].map((m) => m * MIN));
  });

  it('all: fires every one within the window (older ones skipped), in tick order', () => {
    const out = fire({ ...missed, schedule: { ...missed.schedule, catchUp: 'all' } });
    expect(firedTicks(out)).toEqual([97, 98, 99, 100].map((m) => `schedule:tick:${iso(m * MIN)}`));
    expect(skippedTicks(out)).toEqual([96 * MIN]);
    // Every task.queued first, then the fired ticks, then the skipped ones.
    expect(out.events.map((e) => e.type)).toEqual([...Array(4).fill('task.queued'), ...Array(5).fill('schedule.fired')]);
    expect(out.events.map((e) => e.seq)).toEqual([...Array(9).keys()].map((i) => 1_000 + i));
    expect(scheduleIn(out)).toMatchObject({ lastTickAt: 100 * MIN, lastTaskId: 'T4', fired: 7, skipped: 2 });
  });

  it('ticks after the open are on time, whatever the policy', () => {
    const out = fire({ schedule: { nextRunAt: 99 * MIN, overlap: 'allow' }, openedAt: 99 * MIN + 1 });
    expect(firedTicks(out)).toEqual([`schedule:tick:${iso(100 * MIN)}`]);
    expect(skippedTicks(out)).toEqual([99 * MIN]);
  });

  it('once: fires only the latest of a downtime longer than one look (MAX_TICKS_PER_FIRE), whatever the overlap', () => {
    for (const overlap of ['allow', 'skip', 'queue_one'] as const) {
      const fired: string[] = [];
      let schedule: Partial<ScheduleRecord> = { nextRunAt: -1_900 * MIN, catchUp: 'once', catchUpWindowMs: 86_400_000, overlap };
      for (let looks = 0; (schedule.nextRunAt ?? 0) <= NOW; looks++) {
        expect(looks).toBeLessThan(5);
        const out = fire({ schedule, openedAt: NOW });
        fired.push(...tasksIn(out).map((t) => t.idempotencyKey!));
        schedule = scheduleIn(out)!;
      }
      expect(fired).toEqual([`schedule:tick:${iso(100 * MIN)}`]);
      expect(schedule).toMatchObject({ lastTickAt: 100 * MIN, nextRunAt: 101 * MIN });
      expect(schedule.pendingTick).toBeUndefined();
    }
  });

  it('looks at most MAX_TICKS_PER_FIRE ticks, continuing from the last one', () => {
    const out = fire({ schedule: { nextRunAt: -1_900 * MIN }, openedAt: NOW });
    const ticks = skippedTicks(out);
    expect(ticks).toHaveLength(MAX_TICKS_PER_FIRE);
    expect(ticks.at(-1)).toBe(-901 * MIN);
    // Not past now: the rest is fired by the next timer, at once.
    expect(scheduleIn(out)!.nextRunAt).toBe(-900 * MIN);
  });
});

describe('decideFire: a tick that cannot submit its task', () => {
  it('records the ticks as skipped with the error, and still advances (a held tick stays held)', () => {
    const ctx = context();
    const out = fire({ schedule: { overlap: 'queue_one', nextRunAt: 99 * MIN }, template: { error: 'tasks[0].agent: no agent named "echo" is registered' }, ctx });
    expect(tasksIn(out)).toEqual([]);
    expect(firedData(out)).toEqual([{ scheduleId: 'tick', tick: 99 * MIN, tickIso: iso(99 * MIN), skipped: 'error', error: 'tasks[0].agent: no agent named "echo" is registered' }]);
    expect(scheduleIn(out)).toMatchObject({ nextRunAt: 101 * MIN, pendingTick: 100 * MIN, fired: 3, skipped: 2 });
    expect(scheduleIn(out)!.lastTaskId).toBeUndefined();
    expect(ctx.next).toBe(1_001);
  });

  it('skips with AT_CAPACITY’s message when the new tasks would pass maxQueued, taking no id', () => {
    const out = fire({ queued: 100, maxQueued: 100 });
    expect(tasksIn(out)).toEqual([]);
    expect(firedData(out)).toEqual([{ scheduleId: 'tick', tick: 100 * MIN, tickIso: iso(100 * MIN), skipped: 'error', error: 'admission is full: 100 tasks queued, maxQueued is 100' }]);
    expect(tasksIn(fire({ queued: 99, maxQueued: 100 }))).toHaveLength(1);
  });
});
