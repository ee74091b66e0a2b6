import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { describeUnserializable } from '../../actors/wire.js';
import type { RegisteredAgent } from '../../src/agents/registry.js';
import { TroupeError } from '../../src/errors.js';
import type { RetryPolicy, TaskRecord } from '../../src/store/records.js';
import { instanceKeyOf, toTask, validateSpec, type TaskSpec } from '../../src/tasks/spec.js';

const AGENT_RETRY: RetryPolicy = Object.freeze({ maxAttempts: 4, backoff: 'fixed', delayMs: 100, maxDelayMs: 1_000, jitter: 0.1 });

function agent(name = 'coder', extra: Partial<RegisteredAgent> = {}): RegisteredAgent {
  return { name, module: `file:///agents/${name}.js`, concurrency: null, models: {}, capabilities: [], timeoutMs: 2_500, retry: AGENT_RETRY, rate: null, dailyLimit: null, backoff: null, retention: null, ...extra };
}

const AGENTS = new Map([agent('coder'), agent('reviewer')].map((a) => [a.name, a]));
const lookup = (name: string) => AGENTS.get(name);

/** Runs validateSpec expecting a TroupeError and returns it. */
function rejects(spec: unknown, where?: string): TroupeError {
  try {
    validateSpec(spec as TaskSpec, lookup, where);
  } catch (error) {
    expect(error).toBeInstanceOf(TroupeError);
    return error as TroupeError;
  }
  throw new Error('expected validateSpec to throw');
}

function expectInvalidInput(spec: unknown, message: string | RegExp): void {
  const error = rejects(spec);
  expect(error.code).toBe('INVALID_INPUT');
  if (typeof message === 'string') expect(error.message).toBe(message);
  else expect(error.message).toMatch(message);
}

class Point {
  constructor(
    public x: number,
    public y: number,
  ) {}
}

describe('validateSpec: agent', () => {
  it('throws UNKNOWN_AGENT naming the agent when lookup misses', () => {
    const error = rejects({ agent: 'ghost' });
    expect(error.code).toBe('UNKNOWN_AGENT');
    expect(error.retryable).toBe(false);
    expect(error.message).toBe('task.agent: no agent named "ghost" is registered');
  });

  it('rejects a missing or empty agent name as INVALID_INPUT', () => {
    expectInvalidInput({}, 'task.agent must be a non-empty string (or give requires)');
    expectInvalidInput({ agent: '' }, 'task.agent must be a non-empty string');
    expectInvalidInput({ agent: 3 }, 'task.agent must be a non-empty string');
  });

  it('takes requires instead of agent, routing through the given picker', () => {
    const tagged = agent('tagged', { capabilities: ['git', 'ts'] });
    const valid = validateSpec({ requires: ['ts', 'git', 'ts'] }, lookup, 'task', 0, (requires) => (requires.every((c) => tagged.capabilities.includes(c)) ? tagged : undefined));
    expect(valid).toMatchObject({ agent: tagged, agentName: 'tagged', unmatched: false, requires: ['git', 'ts'], retry: AGENT_RETRY, timeoutMs: 2_500 });
    expect(valid.instanceKey).toBe(instanceKeyOf({ ...valid, agent: tagged }));
    const none = validateSpec({ requires: ['rust'], retry: { maxAttempts: 9 }, timeoutMs: 5 }, lookup, 'task', 0, () => undefined);
    expect(none).toMatchObject({ agent: undefined, agentName: '', unmatched: true, instanceKey: '', unrouted: { retry: { maxAttempts: 9 }, timeoutMs: 5 } });
    // A named agent that does not cover requires is unmatched too, but keeps its name.
    expect(validateSpec({ agent: 'coder', requires: ['gpu'] }, lookup)).toMatchObject({ agentName: 'coder', unmatched: true });
    expect(rejects({ requires: [] }).message).toBe('task.requires must be a non-empty array of non-empty strings');
    expect(rejects({ requires: ['ok', 7] }).code).toBe('INVALID_INPUT');
  });

  it('rejects a spec that is not an object', () => {
    expectInvalidInput(null, 'task must be an object');
    expectInvalidInput([{ agent: 'coder' }], 'task must be an object');
    expectInvalidInput('coder', 'task must be an object');
  });

  it('rejects unknown fields before looking the agent up', () => {
    expectInvalidInput({ agent: 'ghost', prio: 1 }, 'task.prio is not a task field');
  });

  it('uses the given path prefix in messages', () => {
    const error = rejects({ agent: 'coder', priority: 0.5 }, 'tasks[3]');
    expect(error.message).toBe('tasks[3].priority must be an integer');
  });
});

describe('validateSpec: input must be plain data', () => {
  it('rejects a function, naming its path', () => {
    expectInvalidInput({ agent: 'coder', input: { deep: { fn: () => 1 } } }, 'task.input.deep.fn is a function; task input must be plain data');
  });

  it('rejects a symbol value, naming its array index', () => {
    expectInvalidInput({ agent: 'coder', input: { list: [1, Symbol('s')] } }, 'task.input.list[1] is a symbol; task input must be plain data');
  });

  it('rejects a Map as a class instance', () => {
    expectInvalidInput(
      { agent: 'coder', input: { m: new Map([[1, 2]]) } },
      'task.input.m is a Map instance (only plain objects, arrays, Dates and Uint8Arrays are stored); task input must be plain data',
    );
  });

  it('rejects a user class instance, naming the class', () => {
    expectInvalidInput({ agent: 'coder', input: [new Point(1, 2)] }, /^task\.input\[0\] is a Point instance/);
  });

  it('rejects a circular reference', () => {
    const loop: Record<string, unknown> = { a: 1 };
    loop.self = loop;
    expectInvalidInput({ agent: 'coder', input: loop }, 'task.input.self is a circular reference; task input must be plain data');
  });

  it('rejects a top-level function input', () => {
    expectInvalidInput({ agent: 'coder', input: () => 0 }, 'task.input is a function; task input must be plain data');
  });

  it('accepts plain data of every supported kind', () => {
    const input = {
      s: 'x',
      n: 1.5,
      b: true,
      nil: null,
      big: 10n,
      huge: 2n ** 64n - 1n,
      when: new Date(0),
      bytes: new Uint8Array([1, 2]),
      list: [1, 'two', [3]],
      nested: { a: { b: {} } },
      gone: undefined,
    };
    const valid = validateSpec({ agent: 'coder', input }, lookup);
    expect(valid.input).toBe(input);
  });
});

describe('describeUnserializable', () => {
  it('returns undefined for storable values', () => {
    for (const value of [undefined, null, 0, 'x', false, 1n, -(2n ** 63n), 2n ** 64n - 1n, new Date(), new Uint8Array(1), [], {}, Object.create(null), [undefined]]) {
      expect(describeUnserializable(value)).toBeUndefined();
    }
  });

  it('refuses what the store cannot write or would not read back unchanged, naming the path', () => {
    const getter = {};
    Object.defineProperty(getter, 'x', { enumerable: true, get: () => { throw new Error('boom'); } });
    let deep: unknown = 1;
    for (let i = 0; i < 10_000; i++) deep = { d: deep };
    // eslint-disable-next-line no-sparse-arrays
    const cases: Array<[unknown, string]> = [
      [{ n: 2n ** 64n }, 'v.n is a BigInt outside the 64-bit range'],
      [{ n: -(2n ** 63n) - 1n }, 'v.n is a BigInt outside the 64-bit range'],
      [{ list: [1, , 3] }, 'v.list[1] is a hole'],
      [{ m: new Map([['k', 'v']]) }, 'v.m is a Map instance'],
      [{ p: new Proxy({}, {}) }, 'v.p is a Proxy'],
      [new Proxy({}, { ownKeys: () => { throw new Error('trap'); } }), 'v is a Proxy'],
      [{ g: getter }, 'v.g.x could not be read (its getter threw: boom)'],
      [{ when: new Date(Number.NaN) }, 'v.when is an invalid Date'],
      [deep, 'is nested deeper than 256 levels'],
    ];
    for (const [value, problem] of cases) expect(describeUnserializable(value, 'v')).toContain(problem);
  });

  it('accepts the same object reached twice when it is not a cycle', () => {
    const shared = { v: 1 };
    expect(describeUnserializable({ a: shared, b: shared, list: [shared, shared] })).toBeUndefined();
  });

  it("uses 'value' as the default path", () => {
    expect(describeUnserializable(() => 1)).toBe('value is a function');
    expect(describeUnserializable(Symbol('s'))).toBe('value is a symbol');
  });

  it('reports nested cycles through arrays', () => {
    const list: unknown[] = [];
    list.push({ back: list });
    expect(describeUnserializable(list, 'v')).toBe('v[0].back is a circular reference');
  });

  it('rejects other class instances and boxed values', () => {
    expect(describeUnserializable(new Set([1]), 'v')).toMatch(/^v is a Set instance/);
    expect(describeUnserializable(new Float64Array(2), 'v')).toMatch(/^v is a Float64Array instance/);
    expect(describeUnserializable({ e: new Error('x') }, 'v')).toMatch(/^v\.e is a Error instance/);
    expect(describeUnserializable({ s: new String('x') }, 'v')).toMatch(/^v\.s is a String instance/);
  });

  it('rejects symbol keys', () => {
    expect(describeUnserializable({ a: 1, [Symbol('k')]: 2 }, 'v')).toBe('v has symbol keys');
  });
});

describe('validateSpec: fields', () => {
  it('fills defaults: priority 0, lane default, input null, agent timeout and retry', () => {
    const valid = validateSpec({ agent: 'coder' }, lookup);
    expect(valid.agent).toBe(AGENTS.get('coder'));
    expect(valid.priority).toBe(0);
    expect(valid.lane).toBe('default');
    expect(valid.input).toBeNull();
    expect(valid.labels).toEqual({});
    expect(valid.timeoutMs).toBe(2_500);
    expect(valid.retry).toEqual(AGENT_RETRY);
    expect(valid.workspace).toBeUndefined();
    expect(valid.idempotencyKey).toBeUndefined();
    expect(valid.parentId).toBeUndefined();
    expect(valid.instanceKey).toBe(instanceKeyOf({ ...valid, agent: valid.agent! }));
  });

  it('keeps falsy inputs other than undefined', () => {
    expect(validateSpec({ agent: 'coder', input: 0 }, lookup).input).toBe(0);
    expect(validateSpec({ agent: 'coder', input: false }, lookup).input).toBe(false);
    expect(validateSpec({ agent: 'coder', input: '' }, lookup).input).toBe('');
  });

  it('keeps given fields and copies labels', () => {
    const labels = { team: 'a' };
    const valid = validateSpec(
      { agent: 'coder', priority: -5, lane: 'tenant:42', workspace: '/w', labels, idempotencyKey: 'k', parentId: 'p', timeoutMs: 0 },
      lookup,
    );
    expect(valid).toMatchObject({ priority: -5, lane: 'tenant:42', workspace: '/w', idempotencyKey: 'k', parentId: 'p', timeoutMs: 0 });
    expect(valid.labels).toEqual({ team: 'a' });
    expect(valid.labels).not.toBe(labels);
  });

  it('merges the retry over the agent policy', () => {
    expect(validateSpec({ agent: 'coder', retry: { maxAttempts: 1 } }, lookup).retry).toEqual({ ...AGENT_RETRY, maxAttempts: 1 });
  });

  it.each([1.5, '1', Number.NaN, 2 ** 60])('rejects priority %s', (priority) => {
    expectInvalidInput({ agent: 'coder', priority }, 'task.priority must be an integer');
  });

  it.each(['', ' spaced', 'has space', '-lead', 'a/b', 'x'.repeat(65), 7])('rejects lane %j', (lane) => {
    expectInvalidInput({ agent: 'coder', lane }, /^task\.lane must match /);
  });

  it('rejects an empty or malformed workspace', () => {
    expectInvalidInput({ agent: 'coder', workspace: '' }, 'task.workspace must be a non-empty path or { path?, keep? }');
    expectInvalidInput({ agent: 'coder', workspace: 1 }, 'task.workspace must be a non-empty path or { path?, keep? }');
    expectInvalidInput({ agent: 'coder', workspace: { keep: 'maybe' } }, 'task.workspace.keep must be one of always, never, on_failure');
  });

  it('resolves a workspace path, and marks a per-task workspace with its keep policy', () => {
    expect(validateSpec({ agent: 'coder', workspace: 'rel/dir' }, lookup)).toMatchObject({ workspace: resolve('rel/dir') });
    const perTask = validateSpec({ agent: 'coder', workspace: {} }, lookup);
    expect(perTask).toMatchObject({ workspace: '(per-task)', workspaceKeep: 'on_failure' });
    expect(validateSpec({ agent: 'coder', workspace: { keep: 'never' } }, lookup).instanceKey).toBe(perTask.instanceKey);
  });

  it.each([[{ a: 1 }], [['x']], ['team=a'], [{ a: 'ok', b: null }]])('rejects labels %j', (labels) => {
    expectInvalidInput({ agent: 'coder', labels }, 'task.labels must be an object of string values');
  });

  it.each(['idempotencyKey', 'parentId'])('rejects a bad %s', (field) => {
    const message = `task.${field} must be a non-empty string of at most 512 characters`;
    expectInvalidInput({ agent: 'coder', [field]: '' }, message);
    expectInvalidInput({ agent: 'coder', [field]: 'k'.repeat(513) }, message);
    expectInvalidInput({ agent: 'coder', [field]: 12 }, message);
    expect(validateSpec({ agent: 'coder', [field]: 'k'.repeat(512) }, lookup)[field as 'parentId']).toHaveLength(512);
  });

  it.each([-1, 1.5, '100', Number.POSITIVE_INFINITY])('rejects timeoutMs %s', (timeoutMs) => {
    expectInvalidInput({ agent: 'coder', timeoutMs }, 'task.timeoutMs must be a non-negative integer');
  });

  it('rejects a bad retry as INVALID_INPUT naming the field', () => {
    expectInvalidInput({ agent: 'coder', retry: { maxAttempts: 0 } }, 'task.retry.maxAttempts must be a positive integer');
    expectInvalidInput({ agent: 'coder', retry: { backoff: 'linear' } }, "task.retry.backoff must be 'fixed' or 'exponential'");
    expectInvalidInput({ agent: 'coder', retry: { tries: 2 } }, 'task.retry.tries is not a retry option');
  });
});

describe('instanceKeyOf', () => {
  const key = (spec: Omit<TaskSpec, 'agent'> & { agent?: string } = {}) => validateSpec({ agent: 'coder', ...spec }, lookup).instanceKey;

  it('has a readable agent/lane/ prefix and a 12-character hash', () => {
    expect(key()).toMatch(/^coder\/default\/[A-Za-z0-9_-]{12}$/);
    expect(key({ agent: 'reviewer', lane: 'tenant:7' })).toMatch(/^reviewer\/tenant:7\/[A-Za-z0-9_-]{12}$/);
  });

  it('is stable for equal specs', () => {
    expect(key({ workspace: '/w', lane: 'l' })).toBe(key({ workspace: '/w', lane: 'l' }));
  });

  it('ignores fields that are not execution policy', () => {
    expect(key({ input: { a: 1 }, priority: 9, labels: { x: 'y' }, idempotencyKey: 'i', parentId: 'p' })).toBe(key());
  });

  it('differs when the workspace differs', () => {
    const keys = new Set([key(), key({ workspace: '/a' }), key({ workspace: '/b' })]);
    expect(keys.size).toBe(3);
  });

  it('differs when the lane or the agent differs', () => {
    expect(key({ lane: 'other' })).not.toBe(key());
    expect(key({ agent: 'reviewer' })).not.toBe(key());
  });

  it('differs when the timeout or any retry field differs', () => {
    const base = key();
    const variants = [
      key({ timeoutMs: 1 }),
      key({ retry: { maxAttempts: 9 } }),
      key({ retry: { backoff: 'exponential' } }),
      key({ retry: { delayMs: 1 } }),
      key({ retry: { maxDelayMs: 2 } }),
      key({ retry: { jitter: 0.9 } }),
    ];
    for (const variant of variants) expect(variant).not.toBe(base);
    expect(new Set(variants).size).toBe(variants.length);
  });

  it('matches the same policy reached through agent defaults or spelled out', () => {
    expect(key({ timeoutMs: 2_500, retry: { ...AGENT_RETRY } })).toBe(key());
  });
});

describe('toTask', () => {
  const record: TaskRecord = {
    id: 't1',
    agent: 'coder',
    state: 'queued',
    input: { a: 1 },
    priority: 2,
    lane: 'default',
    instanceKey: 'coder/default/abc',
    labels: { team: 'a' },
    timeoutMs: 10,
    retry: { ...AGENT_RETRY },
    runs: 1,
    runReason: 'submit',
    runCreatedAt: 100,
    attempts: 0,
    attemptSeq: 0,
    token: 0,
    queuedOrder: 5,
    followUp: 'secret',
    createdAt: 100,
    updatedAt: 101,
  };

  it('omits undefined optionals and internal bookkeeping', () => {
    const task = toTask(record);
    expect(task).toEqual({
      id: 't1',
      agent: 'coder',
      state: 'queued',
      input: { a: 1 },
      attempts: 0,
      runs: 1,
      priority: 2,
      lane: 'default',
      instanceKey: 'coder/default/abc',
      labels: { team: 'a' },
      timeoutMs: 10,
      retry: AGENT_RETRY,
      createdAt: 100,
      updatedAt: 101,
    });
    for (const field of ['output', 'result', 'error', 'reason', 'progress', 'workspace', 'parentId', 'idempotencyKey', 'runAt', 'startedAt', 'settledAt']) {
      expect(Object.hasOwn(task, field), field).toBe(false);
    }
    for (const field of ['runReason', 'runCreatedAt', 'attemptSeq', 'token', 'queuedOrder', 'followUp']) {
      expect(Object.hasOwn(task, field), field).toBe(false);
    }
  });

  it('copies labels, retry and nested records rather than sharing them', () => {
    const full: TaskRecord = {
      ...record,
      result: { kind: 'success', summary: 's' },
      error: { code: 'X', message: 'm', retryable: false, fault: 'agent' },
      progress: { value: 0.5, at: 3 },
    };
    const task = toTask(full);
    expect(task.labels).not.toBe(full.labels);
    expect(task.retry).not.toBe(full.retry);
    expect(task.result).not.toBe(full.result);
    expect(task.error).not.toBe(full.error);
    expect(task.progress).not.toBe(full.progress);
    task.labels.team = 'changed';
    expect(full.labels.team).toBe('a');
  });

  it('gives a task of a shared, frozen retry policy a copy of its own, every field of it', () => {
    const shared: Readonly<RetryPolicy> = Object.freeze({ ...AGENT_RETRY });
    const task = toTask({ ...record, retry: shared });
    expect(task.retry).toEqual(shared);
    expect(Object.keys(task.retry)).toEqual(Object.keys(shared));
    expect(task.retry).not.toBe(shared);
    task.retry.maxAttempts = 99;
    expect(shared.maxAttempts).toBe(AGENT_RETRY.maxAttempts);
  });

  it('includes every optional that is set, including a null output', () => {
    const full: TaskRecord = {
      ...record,
      state: 'done',
      output: null,
      result: { kind: 'fork', branch: 'b', rev: 'r' },
      error: { code: 'X', message: 'm', retryable: false, fault: 'agent' },
      reason: 'why',
      progress: { value: 1, message: 'done', at: 7 },
      workspace: '/w',
      parentId: 'p',
      idempotencyKey: 'k',
      runAt: 50,
      startedAt: 60,
      settledAt: 70,
    };
    expect(toTask(full)).toMatchObject({
      output: null,
      result: { kind: 'fork', branch: 'b', rev: 'r' },
      error: { code: 'X', message: 'm', retryable: false, fault: 'agent' },
      reason: 'why',
      progress: { value: 1, message: 'done', at: 7 },
      workspace: '/w',
      parentId: 'p',
      idempotencyKey: 'k',
      runAt: 50,
      startedAt: 60,
      settledAt: 70,
    });
    expect(Object.hasOwn(toTask(full), 'output')).toBe(true);
  });
});
