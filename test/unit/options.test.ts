import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { isAbsolute, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { builtinAgent, validateRegistration, type AgentRegistration, type BuiltinAgentName } from '../../src/agents/registry.js';
import { ManualClock, systemClock } from '../../src/clock.js';
import { TroupeError } from '../../src/errors.js';
import { DEFAULT_BACKOFF, DEFAULT_RETRY, resolveOptions, resolveRetry, type RuntimeOptions } from '../../src/options.js';
import type { RetryPolicy } from '../../src/store/records.js';
import { resolveAgentRetention, resolveTaskRetention } from '../../src/tasks/retention-rules.js';

/** Runs `fn` and returns the TroupeError it throws; fails the test if it throws nothing else. */
function thrown(fn: () => unknown): TroupeError {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(TroupeError);
    return error as TroupeError;
  }
  throw new Error('expected a TroupeError, nothing was thrown');
}

/** Asserts INVALID_OPTIONS with exactly this message. */
function expectInvalid(fn: () => unknown, message: string | RegExp): void {
  const error = thrown(fn);
  expect(error.code).toBe('INVALID_OPTIONS');
  if (typeof message === 'string') expect(error.message).toBe(message);
  else expect(error.message).toMatch(message);
}

const opts = (o: Record<string, unknown>) => o as RuntimeOptions;

describe('resolveOptions defaults', () => {
  it('fills every default', () => {
    const r = resolveOptions();
    const threads = Math.max(1, availableParallelism());
    expect(r.dataDir).toBe(resolve('./.troupe'));
    expect(r.threads).toBe(threads);
    expect(r.slotsPerThread).toBe(4);
    expect(r.prefetch).toBe(Math.max(1024, threads * 4));
    expect(r.maxQueued).toBe(100_000);
    expect(r.maxLiveInstances).toBe(10_000);
    expect(r.failedAttemptThreshold).toBe(0);
    expect(r.cancelGraceMs).toBe(5_000);
    expect(r.defaultTimeoutMs).toBe(0);
    expect(r.defaultRetry).toEqual({ maxAttempts: 3, backoff: 'exponential', delayMs: 1_000, maxDelayMs: 60_000, jitter: 0.2 });
    expect(r.agents).toEqual([]);
    expect(r.clock).toBe(systemClock);
    expect(r.random).toBe(Math.random);
    expect(r.logger).toBeUndefined();
    expect(r.createPool).toBeUndefined();
  });

  it('treats explicit undefined as "use the default"', () => {
    const r = resolveOptions({ threads: undefined, slotsPerThread: undefined, maxQueued: undefined });
    expect(r.slotsPerThread).toBe(4);
    expect(r.maxQueued).toBe(100_000);
  });

  it('resolves dataDir to an absolute path', () => {
    const r = resolveOptions({ dataDir: 'some/dir' });
    expect(isAbsolute(r.dataDir)).toBe(true);
    expect(r.dataDir).toBe(resolve('some/dir'));
  });

  it('defaults prefetch to max(1024, threads × slotsPerThread)', () => {
    expect(resolveOptions({ threads: 2, slotsPerThread: 4 }).prefetch).toBe(1024);
    expect(resolveOptions({ threads: 200, slotsPerThread: 8 }).prefetch).toBe(1600);
    expect(resolveOptions({ threads: 64, slotsPerThread: 16 }).prefetch).toBe(1024);
    expect(resolveOptions({ threads: 100, slotsPerThread: 11 }).prefetch).toBe(1100);
  });

  it('keeps an explicit prefetch, including 0', () => {
    expect(resolveOptions({ threads: 20, prefetch: 0 }).prefetch).toBe(0);
    expect(resolveOptions({ prefetch: 7 }).prefetch).toBe(7);
  });

  it('keeps given values, clock, random, logger and createPool', () => {
    const clock = new ManualClock(0);
    const random = () => 0.5;
    const createPool = (() => undefined) as unknown as RuntimeOptions['createPool'];
    const r = resolveOptions({ threads: 3, maxLiveInstances: 5, failedAttemptThreshold: 2, clock, random, logger: false, createPool });
    expect(r.threads).toBe(3);
    expect(r.maxLiveInstances).toBe(5);
    expect(r.failedAttemptThreshold).toBe(2);
    expect(r.clock).toBe(clock);
    expect(r.random).toBe(random);
    expect(r.logger).toBe(false);
    expect(r.createPool).toBe(createPool);
  });

  it('accepts pino options as the logger', () => {
    expect(resolveOptions({ logger: { level: 'info' } }).logger).toEqual({ level: 'info' });
  });

  it('merges defaultRetry over the default policy', () => {
    expect(resolveOptions({ defaultRetry: { maxAttempts: 7, backoff: 'fixed' } }).defaultRetry).toEqual({ ...DEFAULT_RETRY, maxAttempts: 7, backoff: 'fixed' });
  });

  it('freezes the result and its retry policy, and copies the agents array', () => {
    const agents: AgentRegistration[] = [];
    const r = resolveOptions({ agents, defaultRetry: { maxAttempts: 2 } });
    expect(Object.isFrozen(r)).toBe(true);
    expect(Object.isFrozen(r.defaultRetry)).toBe(true);
    expect(r.agents).not.toBe(agents);
    expect(() => {
      (r as { threads: number }).threads = 99;
    }).toThrow(TypeError);
  });
});

describe('resolveOptions validation names the option', () => {
  it('rejects a non-object', () => {
    expectInvalid(() => resolveOptions(null as unknown as RuntimeOptions), 'options must be an object');
    expectInvalid(() => resolveOptions(5 as unknown as RuntimeOptions), 'options must be an object');
  });

  it('rejects an unknown option', () => {
    expectInvalid(() => resolveOptions(opts({ thread: 2 })), 'options.thread is not a known option');
  });

  it.each([
    ['threads', 0],
    ['threads', -1],
    ['threads', 1.5],
    ['threads', '4'],
    ['threads', Number.NaN],
    ['slotsPerThread', 0],
    ['maxQueued', 0],
    ['maxLiveInstances', 0],
    ['maxLiveInstances', 2.5],
  ])('rejects %s = %s as not a positive integer', (name, value) => {
    expectInvalid(() => resolveOptions(opts({ [name]: value })), `options.${name} must be a positive integer`);
  });

  it.each([
    ['prefetch', -1],
    ['prefetch', 0.5],
    ['failedAttemptThreshold', -1],
    ['cancelGraceMs', -5],
    ['cancelGraceMs', Infinity],
    ['defaultTimeoutMs', -1],
    ['defaultTimeoutMs', '10'],
  ])('rejects %s = %s as not a non-negative integer', (name, value) => {
    expectInvalid(() => resolveOptions(opts({ [name]: value })), `options.${name} must be a non-negative integer`);
  });

  it('accepts 0 where a non-negative integer is asked', () => {
    const r = resolveOptions({ failedAttemptThreshold: 0, cancelGraceMs: 0, defaultTimeoutMs: 0 });
    expect([r.failedAttemptThreshold, r.cancelGraceMs, r.defaultTimeoutMs]).toEqual([0, 0, 0]);
  });

  it('rejects an empty or non-string dataDir', () => {
    expectInvalid(() => resolveOptions({ dataDir: '' }), 'options.dataDir must be a non-empty string');
    expectInvalid(() => resolveOptions(opts({ dataDir: 42 })), 'options.dataDir must be a non-empty string');
  });

  it('rejects agents that are not an array', () => {
    expectInvalid(() => resolveOptions(opts({ agents: {} })), 'options.agents must be an array of agent registrations');
  });

  it.each([
    ['an empty object', {}],
    ['null', null],
    ['a clock without clearTimeout', { now: () => 0, setTimeout: () => 0 }],
    ['a number', 5],
  ])('rejects %s as the clock', (_label, clock) => {
    expectInvalid(() => resolveOptions(opts({ clock })), 'options.clock must implement now(), setTimeout() and clearTimeout()');
  });

  it('rejects a random that is not a function', () => {
    expectInvalid(() => resolveOptions(opts({ random: 0.5 })), 'options.random must be a function returning [0, 1)');
  });

  it('rejects a createPool that is not a function', () => {
    expectInvalid(() => resolveOptions(opts({ createPool: {} })), 'options.createPool must be a function');
  });

  it.each([
    ['a string', 'info'],
    ['true', true],
    ['null', null],
    ['a number', 1],
  ])('rejects %s as the logger', (_label, logger) => {
    expectInvalid(() => resolveOptions(opts({ logger })), 'options.logger must be a pino logger, pino options, or false');
  });

  it('names the bad defaultRetry field', () => {
    expectInvalid(() => resolveOptions(opts({ defaultRetry: { maxAttempts: 0 } })), 'options.defaultRetry.maxAttempts must be a positive integer');
    expectInvalid(() => resolveOptions(opts({ defaultRetry: { tries: 3 } })), 'options.defaultRetry.tries is not a retry option');
  });
});

describe('resolveRetry', () => {
  const base: RetryPolicy = { maxAttempts: 2, backoff: 'fixed', delayMs: 10, maxDelayMs: 100, jitter: 0 };

  it('returns the base itself when nothing is given', () => {
    expect(resolveRetry(undefined, base, 'r')).toBe(base);
  });

  it('merges over the base, ignoring undefined fields, and freezes', () => {
    const r = resolveRetry({ delayMs: 50, jitter: undefined }, base, 'r');
    expect(r).toEqual({ ...base, delayMs: 50 });
    expect(Object.isFrozen(r)).toBe(true);
  });

  it('accepts jitter at both ends of [0, 1]', () => {
    expect(resolveRetry({ jitter: 0 }, base, 'r').jitter).toBe(0);
    expect(resolveRetry({ jitter: 1 }, base, 'r').jitter).toBe(1);
  });

  it.each<[Record<string, unknown>, string]>([
    [{ maxAttempts: 0 }, 'where.maxAttempts must be a positive integer'],
    [{ maxAttempts: 1.5 }, 'where.maxAttempts must be a positive integer'],
    [{ backoff: 'linear' }, "where.backoff must be 'fixed' or 'exponential'"],
    [{ delayMs: -1 }, 'where.delayMs must be a non-negative integer'],
    [{ maxDelayMs: 0.5 }, 'where.maxDelayMs must be a non-negative integer'],
    [{ jitter: 1.5 }, 'where.jitter must be a number in [0, 1]'],
    [{ jitter: -0.1 }, 'where.jitter must be a number in [0, 1]'],
    [{ jitter: Number.NaN }, 'where.jitter must be a number in [0, 1]'],
    [{ jitter: '0.1' }, 'where.jitter must be a number in [0, 1]'],
    [{ attempts: 3 }, 'where.attempts is not a retry option'],
  ])('rejects %o naming the field', (partial, message) => {
    expectInvalid(() => resolveRetry(partial as Partial<RetryPolicy>, base, 'where'), message);
  });

  it('rejects a non-object', () => {
    expectInvalid(() => resolveRetry(3 as unknown as Partial<RetryPolicy>, base, 'where'), 'where must be an object');
    expectInvalid(() => resolveRetry(null as unknown as Partial<RetryPolicy>, base, 'where'), 'where must be an object');
  });
});

describe('agent registrations', () => {
  let dir: string;
  let modulePath: string;
  const defaults = { timeoutMs: 1_234, retry: DEFAULT_RETRY, backoff: DEFAULT_BACKOFF };
  const reg = (r: Partial<AgentRegistration> & Record<string, unknown> = {}) => ({ name: 'coder', module: modulePath, ...r }) as AgentRegistration;

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'troupe-registry-'));
    modulePath = join(dir, 'coder.agent.js');
    writeFileSync(modulePath, 'export default {};\n');
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('validates an absolute path into a file: URL with defaults filled', () => {
    const agent = validateRegistration(reg(), defaults);
    expect(agent).toEqual({
      name: 'coder',
      module: pathToFileURL(modulePath).href,
      concurrency: null,
      models: {},
      capabilities: [],
      timeoutMs: 1_234,
      retry: DEFAULT_RETRY,
      rate: null,
      dailyLimit: null,
      backoff: DEFAULT_BACKOFF,
      retention: null,
    });
    expect(Object.isFrozen(agent)).toBe(true);
    expect(Object.isFrozen(agent.capabilities)).toBe(true);
  });

  it('accepts a URL object and a file: URL string', () => {
    const href = pathToFileURL(modulePath).href;
    expect(validateRegistration(reg({ module: new URL(href) }), defaults).module).toBe(href);
    expect(validateRegistration(reg({ module: href }), defaults).module).toBe(href);
  });

  it('keeps concurrency, capabilities and timeoutMs, and copies capabilities', () => {
    const capabilities = ['git', 'node'];
    const agent = validateRegistration(reg({ concurrency: 3, capabilities, timeoutMs: 0 }), defaults);
    expect(agent.concurrency).toBe(3);
    expect(agent.timeoutMs).toBe(0);
    expect(agent.capabilities).toEqual(['git', 'node']);
    capabilities.push('later');
    expect(agent.capabilities).toEqual(['git', 'node']);
  });

  it('merges retry over the defaults', () => {
    const agent = validateRegistration(reg({ retry: { maxAttempts: 9 } }), defaults);
    expect(agent.retry).toEqual({ ...DEFAULT_RETRY, maxAttempts: 9 });
  });

  it.each(['a', 'A1', 'my.agent_1-x', 'x'.repeat(64)])('accepts the name %s', (name) => {
    expect(validateRegistration(reg({ name }), defaults).name).toBe(name);
  });

  it.each(['', '-lead', '.hidden', 'has space', 'slash/name', 'x'.repeat(65)])('rejects the name %j', (name) => {
    expectInvalid(() => validateRegistration(reg({ name }), defaults), /^agent\.name must match .* \(got ".*"\)$/);
  });

  it('rejects a non-string name', () => {
    expectInvalid(() => validateRegistration(reg({ name: 7 as unknown as string }), defaults), /^agent\.name must match .*\(got 7\)$/);
  });

  it('rejects a relative module path', () => {
    expectInvalid(
      () => validateRegistration(reg({ module: './coder.agent.js' }), defaults),
      'agent coder: module must be a file: URL or an absolute path (got "./coder.agent.js")',
    );
  });

  it('rejects a non-file URL', () => {
    expectInvalid(() => validateRegistration(reg({ module: new URL('https://example.com/a.js') }), defaults), 'agent coder: module must be a file: URL');
  });

  it('rejects a module that does not exist, naming the path', () => {
    const missing = join(dir, 'missing.agent.js');
    expectInvalid(() => validateRegistration(reg({ module: missing }), defaults), `agent coder: module not found at ${missing}`);
  });

  it.each([0, -1, 1.5])('rejects concurrency %s', (concurrency) => {
    expectInvalid(() => validateRegistration(reg({ concurrency }), defaults), 'agent coder: concurrency must be a positive integer');
  });

  it.each([-1, 0.5, Number.POSITIVE_INFINITY])('rejects timeoutMs %s', (timeoutMs) => {
    expectInvalid(() => validateRegistration(reg({ timeoutMs }), defaults), 'agent coder: timeoutMs must be a non-negative integer');
  });

  it.each([[['']], [[1]], ['git']])('rejects capabilities %j', (capabilities) => {
    expectInvalid(
      () => validateRegistration(reg({ capabilities: capabilities as string[] }), defaults),
      'agent coder: capabilities must be an array of non-empty strings',
    );
  });

  it('names the bad retry field', () => {
    expectInvalid(() => validateRegistration(reg({ retry: { jitter: 2 } }), defaults), 'agent coder: retry.jitter must be a number in [0, 1]');
  });

  it('rejects unknown fields', () => {
    expectInvalid(() => validateRegistration(reg({ threads: 2 }), defaults), 'agent.threads is not a known agent option');
  });

  it('rejects a non-object registration', () => {
    expectInvalid(() => validateRegistration(null as unknown as AgentRegistration, defaults), 'agents.register expects an object');
  });
});

describe('builtinAgent', () => {
  it.each(['echo', 'sleep', 'fail'] as const)('points %s at its module under actors/agents', (name) => {
    const r = builtinAgent(name);
    expect(r.name).toBe(name);
    expect(r.module).toBeInstanceOf(URL);
    expect((r.module as URL).protocol).toBe('file:');
    expect((r.module as URL).href.endsWith(`/actors/agents/${name}.agent.js`)).toBe(true);
  });

  it('applies overrides but never the module', () => {
    const r = builtinAgent('echo', { concurrency: 2, name: 'echo2', ...({ module: '/elsewhere.js' } as object) });
    expect(r.concurrency).toBe(2);
    expect(r.name).toBe('echo2');
    expect(String(r.module)).toMatch(/\/actors\/agents\/echo\.agent\.js$/);
  });

  it('rejects an unknown built-in name', () => {
    expectInvalid(() => builtinAgent('nope' as BuiltinAgentName), 'unknown built-in agent "nope"');
  });
});

describe('retention rules', () => {
  const DAY = 86_400_000;
  it('defaults to done for 7 days and the other settled states for 30, events for 30, swept every minute', () => {
    expect(resolveOptions({}).retention).toEqual({
      rules: { done: { ageMs: 7 * DAY, count: Infinity }, failed: { ageMs: 30 * DAY, count: Infinity }, dropped: { ageMs: 30 * DAY, count: Infinity }, cancelled: { ageMs: 30 * DAY, count: Infinity } },
      sweepMs: 60_000,
      eventsMs: 30 * DAY,
    });
    expect(resolveOptions({ retention: false }).retention).toBeNull();
    expect(resolveOptions({ retention: { eventsMs: Infinity } }).retention!.eventsMs).toBe(Infinity);
    expect(() => resolveOptions({ retention: { eventsMs: -1 } })).toThrow(/options.retention.eventsMs must be a non-negative integer/);
  });

  it('replaces the rule of each state given, an age or { ageMs, count } with the side left out unlimited', () => {
    const { rules, sweepMs } = resolveOptions({ retention: { done: { count: 10 }, failed: 5_000, cancelled: { ageMs: Infinity, count: 0 }, sweepMs: 250 } }).retention!;
    expect(rules).toEqual({ done: { ageMs: Infinity, count: 10 }, failed: { ageMs: 5_000, count: Infinity }, dropped: { ageMs: 30 * DAY, count: Infinity }, cancelled: { ageMs: Infinity, count: 0 } });
    expect(sweepMs).toBe(250);
  });

  it('gives an agent only the states it names, and a task ages only', () => {
    expect(resolveAgentRetention({ failed: { count: 3 } }, 'agent a')).toEqual({ failed: { ageMs: Infinity, count: 3 } });
    expect(resolveAgentRetention(undefined, 'agent a')).toBeUndefined();
    expect(resolveTaskRetention({ done: 1, failed: Infinity }, 'spec.retention')).toEqual({ done: 1, failed: Infinity });
    expect(resolveTaskRetention({}, 'spec.retention')).toBeUndefined();
    expect(() => resolveTaskRetention({ done: { ageMs: 1 } }, 'spec.retention')).toThrow(/spec.retention.done must be an age in ms/);
  });
});
