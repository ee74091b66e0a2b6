/**
 * The bad input of the contract suite (contract.ts): calls of every entry point both stores
 * support, each with the TroupeError code it must fail with on either store (and, where given, a
 * text its message holds: the field or path it names). A call may throw or reject (an `events()`
 * iteration fails at its first `next()`). `done` is a settled task's id. Bad runtime options, one
 * runtime each: {@link badOptions}.
 */
import { expect, it } from 'vitest';
import { builtinAgent, type Runtime } from 'troupe';
import { rejection } from '../helpers.js';
import type { ContractBackend } from './contract.js';

/** [what, the call, the code it fails with, a text of its message]. */
export type BadCall = [string, () => unknown, string, string?];

export function badInput(rt: Runtime, done: string): BadCall[] {
  const echo = builtinAgent('echo').module;
  const circular: Record<string, unknown> = {};
  circular.self = circular;
  const schedule = (extra: Record<string, unknown>) => ({ id: 'x', cron: '* * * * *', task: { agent: 'echo' }, ...extra }) as never;
  return [
    // submit and submitMany
    ['submit: unknown agent', () => rt.submit({ agent: 'nope' }), 'UNKNOWN_AGENT', 'no agent named "nope"'],
    ['submit: no agent', () => rt.submit({} as never), 'INVALID_INPUT'],
    ['submit: agent not a string', () => rt.submit({ agent: 5 } as never), 'INVALID_INPUT'],
    ['submit: null spec', () => rt.submit(null as never), 'INVALID_INPUT'],
    ['submit: array spec', () => rt.submit([] as never), 'INVALID_INPUT'],
    ['submit: function input', () => rt.submit({ agent: 'echo', input: () => 1 } as never), 'INVALID_INPUT'],
    ['submit: function in input', () => rt.submit({ agent: 'echo', input: { cb: () => 1 } } as never), 'INVALID_INPUT', 'task.input.cb is a function'],
    ['submit: symbol in input', () => rt.submit({ agent: 'echo', input: { s: Symbol('x') } } as never), 'INVALID_INPUT', 'task.input.s is a symbol'],
    ['submit: class instance in input', () => rt.submit({ agent: 'echo', input: { when: new (class Deadline {})() } } as never), 'INVALID_INPUT', 'task.input.when is a Deadline instance'],
    ['submit: Map in input', () => rt.submit({ agent: 'echo', input: { m: new Map() } } as never), 'INVALID_INPUT', 'task.input.m is a Map instance'],
    ['submit: circular input', () => rt.submit({ agent: 'echo', input: circular }), 'INVALID_INPUT', 'task.input.self is a circular reference'],
    ['submit: lone surrogate in input', () => rt.submit({ agent: 'echo', input: { text: 'x\uD800y' } }), 'INVALID_INPUT', 'task.input.text holds a lone UTF-16 surrogate'],
    ['submit: lone surrogate as input', () => rt.submit({ agent: 'echo', input: '\uDC00' }), 'INVALID_INPUT', 'task.input holds a lone UTF-16 surrogate'],
    ['submit: lone surrogate in a key', () => rt.submit({ agent: 'echo', input: { ['k\uD800']: 1 } }), 'INVALID_INPUT', 'task.input has a key that holds a lone UTF-16 surrogate'],
    ['submit: unknown field', () => rt.submit({ agent: 'echo', bogus: 1 } as never), 'INVALID_INPUT', 'task.bogus is not a task field'],
    ['submit: fractional priority', () => rt.submit({ agent: 'echo', priority: 1.5 }), 'INVALID_INPUT', 'task.priority must be an integer'],
    ['submit: string priority', () => rt.submit({ agent: 'echo', priority: '1' } as never), 'INVALID_INPUT'],
    ['submit: bad lane', () => rt.submit({ agent: 'echo', lane: 'no spaces' }), 'INVALID_INPUT', 'task.lane must match'],
    ['submit: numeric label', () => rt.submit({ agent: 'echo', labels: { a: 1 } } as never), 'INVALID_INPUT', 'task.labels must be an object of string values'],
    ['submit: null labels', () => rt.submit({ agent: 'echo', labels: null } as never), 'INVALID_INPUT', 'task.labels must be an object of string values'],
    ['submit: empty key', () => rt.submit({ agent: 'echo', idempotencyKey: '' }), 'INVALID_INPUT', 'task.idempotencyKey must be a non-empty string'],
    ['submit: numeric key', () => rt.submit({ agent: 'echo', idempotencyKey: 5 } as never), 'INVALID_INPUT'],
    // Stored as U+FFFD, two keys that differ only there would be one.
    ['submit: lone surrogate in the key', () => rt.submit({ agent: 'echo', idempotencyKey: 'k\uD800' }), 'INVALID_INPUT', 'task.idempotencyKey holds a lone UTF-16 surrogate'],
    ['submit: negative timeoutMs', () => rt.submit({ agent: 'echo', timeoutMs: -1 }), 'INVALID_INPUT', 'task.timeoutMs must be a non-negative integer'],
    ['submit: unknown parent', () => rt.submit({ agent: 'echo', parentId: 'does-not-exist' }), 'NOT_FOUND', 'no task does-not-exist'],
    ['submit: maxAttempts 0', () => rt.submit({ agent: 'echo', retry: { maxAttempts: 0 } }), 'INVALID_INPUT', 'task.retry.maxAttempts must be a positive integer'],
    ['submit: maxAttempts 1.5', () => rt.submit({ agent: 'echo', retry: { maxAttempts: 1.5 } }), 'INVALID_INPUT'],
    ['submit: unknown backoff', () => rt.submit({ agent: 'echo', retry: { backoff: 'linear' } } as never), 'INVALID_INPUT', "task.retry.backoff must be 'fixed' or 'exponential'"],
    ['submit: retry not an object', () => rt.submit({ agent: 'echo', retry: 3 } as never), 'INVALID_INPUT'],
    ['submit: negative delayMs', () => rt.submit({ agent: 'echo', delayMs: -1 }), 'INVALID_INPUT'],
    ['submit: string delayMs', () => rt.submit({ agent: 'echo', delayMs: '5' } as never), 'INVALID_INPUT'],
    ['submit: string runAt', () => rt.submit({ agent: 'echo', runAt: 'x' } as never), 'INVALID_INPUT'],
    ['submit: runAt and delayMs', () => rt.submit({ agent: 'echo', runAt: 1, delayMs: 5 }), 'INVALID_INPUT'],
    ['submitMany: not an array', () => rt.submitMany('x' as never), 'INVALID_INPUT'],
    ['submitMany: an object', () => rt.submitMany({} as never), 'INVALID_INPUT'],
    ['submitMany: a null spec', () => rt.submitMany([null as never]), 'INVALID_INPUT'],
    ['submitMany: a bad third spec', () => rt.submitMany([{ agent: 'echo' }, { agent: 'echo' }, { agent: 'echo', input: { f: () => 0 } } as never]), 'INVALID_INPUT', 'tasks[2].input.f is a function'],
    ['submitMany: an unknown agent', () => rt.submitMany([{ agent: 'echo' }, { agent: 'nope' }]), 'UNKNOWN_AGENT'],
    // get, list, wait, cancel, retry
    ['get: empty id', () => rt.get(''), 'INVALID_INPUT'],
    ['get: id with a NUL', () => rt.get('a\u0000b'), 'NOT_FOUND'],
    ['list: limit 0', () => rt.list({ limit: 0 }), 'INVALID_INPUT'],
    ['list: limit 1001', () => rt.list({ limit: 1001 }), 'INVALID_INPUT'],
    ['list: fractional limit', () => rt.list({ limit: 1.5 }), 'INVALID_INPUT'],
    ['list: unknown state', () => rt.list({ state: 'x' as never }), 'INVALID_INPUT'],
    ['list: numeric agent', () => rt.list({ agent: 5 as never }), 'INVALID_INPUT'],
    ['list: numeric after', () => rt.list({ after: 5 as never }), 'INVALID_INPUT'],
    ['list: unknown option', () => rt.list({ bogus: 1 } as never), 'INVALID_OPTIONS'],
    ['list: null options', () => rt.list(null as never), 'INVALID_OPTIONS'],
    ['list: string options', () => rt.list('x' as never), 'INVALID_OPTIONS'],
    ['list: string labels', () => rt.list({ labels: 'x' as never }), 'INVALID_INPUT'],
    ['list: numeric label', () => rt.list({ labels: { a: 1 } as never }), 'INVALID_INPUT'],
    ['list: no label short enough to index', () => rt.list({ labels: { a: 'x'.repeat(1_100) } }), 'INVALID_INPUT'],
    ['list: only a label with a control character', () => rt.list({ labels: { a: 'x\u0000' }, state: 'done' }), 'INVALID_INPUT'],
    ['wait: empty id', () => rt.wait(''), 'INVALID_INPUT'],
    ['wait: negative timeoutMs', () => rt.wait(done, { timeoutMs: -1 }), 'INVALID_INPUT'],
    ['wait: string timeoutMs', () => rt.wait(done, { timeoutMs: '5' } as never), 'INVALID_INPUT'],
    ['wait: id with a NUL', () => rt.wait('a\u0000b'), 'NOT_FOUND'],
    ['cancel: empty id', () => rt.cancel(''), 'INVALID_INPUT'],
    ['cancel: numeric reason', () => rt.cancel(done, 5 as never), 'INVALID_INPUT'],
    ['cancel: lone surrogate in the reason', () => rt.cancel(done, 'why\uDC00'), 'INVALID_INPUT', 'cancel: reason holds a lone UTF-16 surrogate'],
    ['cancel: unknown id', () => rt.cancel('01NOSUCHTASK'), 'NOT_FOUND'],
    ['cancel: id with a NUL', () => rt.cancel('a\u0000b'), 'NOT_FOUND'],
    ['cancel: a done task', () => rt.cancel(done), 'ILLEGAL_TRANSITION'],
    ['retry: empty id', () => rt.retry(''), 'INVALID_INPUT'],
    ['retry: unknown id', () => rt.retry('01NOSUCHTASK'), 'NOT_FOUND'],
    ['retry: id with a NUL', () => rt.retry('a\u0000b'), 'NOT_FOUND'],
    ['retry: a done task', () => rt.retry(done), 'ILLEGAL_TRANSITION'],
    // freeze, events, on
    ['freeze: numeric reason', () => rt.freeze(5 as never), 'INVALID_INPUT'],
    ['freeze: lone surrogate in the reason', () => rt.freeze('\uD83D'), 'INVALID_INPUT', 'freeze: reason holds a lone UTF-16 surrogate'],
    ['events: bad cursor', () => rt.events({ after: 'nope' }), 'INVALID_INPUT'],
    ['events: negative seq', () => rt.events({ after: -1 }), 'INVALID_INPUT'],
    ['events: fractional seq', () => rt.events({ after: 1.5 }), 'INVALID_INPUT'],
    ['events: object cursor', () => rt.events({ after: {} } as never), 'INVALID_INPUT'],
    ['events: numeric taskId', () => rt.events({ taskId: 5 } as never), 'INVALID_INPUT'],
    ['events: unknown type', () => rt.events({ types: ['x' as never] }), 'INVALID_OPTIONS'],
    ['events: types not an array', () => rt.events({ types: 'task.done' } as never), 'INVALID_OPTIONS'],
    ['events: bad signal', () => rt.events({ signal: 5 } as never), 'INVALID_OPTIONS'],
    ['events: unknown option', () => rt.events({ bogus: 1 } as never), 'INVALID_OPTIONS'],
    ['events: string options', () => rt.events('x' as never), 'INVALID_OPTIONS'],
    // logs: an id, options and a cursor are checked before anything is read
    ['logs: empty id', () => rt.logs(''), 'INVALID_INPUT'],
    ['logs: numeric id', () => rt.logs(5 as never), 'INVALID_INPUT'],
    ['logs: unknown id', () => rt.logs('01NOSUCHTASK'), 'NOT_FOUND'],
    ['logs: id with a NUL', () => rt.logs('a\u0000b'), 'NOT_FOUND'],
    ['logs: bad cursor', () => rt.logs(done, { after: 'nope' }), 'INVALID_INPUT'],
    ['logs: numeric cursor', () => rt.logs(done, { after: 5 } as never), 'INVALID_INPUT'],
    ['logs: an event cursor', () => rt.logs(done, { after: '0000000001:0000000001' }), 'INVALID_INPUT'],
    ['logs: unknown option', () => rt.logs(done, { bogus: 1 } as never), 'INVALID_OPTIONS'],
    ['logs: string options', () => rt.logs(done, 'x' as never), 'INVALID_OPTIONS'],
    ['logs: null options', () => rt.logs(done, null as never), 'INVALID_OPTIONS'],
    ['logs: string follow', () => rt.logs(done, { follow: 'yes' } as never), 'INVALID_OPTIONS'],
    ['logs: bad signal', () => rt.logs(done, { signal: 5 } as never), 'INVALID_OPTIONS'],
    ['logs: unknown id, following', () => rt.logs('01NOSUCHTASK', { follow: true }), 'NOT_FOUND'],
    ['on: unknown type', () => rt.on('x' as never, () => undefined), 'INVALID_OPTIONS'],
    ['on: listener not a function', () => rt.on('task.done', 5 as never), 'INVALID_INPUT'],
    // agents.register
    ['register: bad name', () => rt.agents.register({ name: 'bad name', module: echo }), 'INVALID_OPTIONS', 'agent.name must match'],
    ['register: relative module', () => rt.agents.register({ name: 'rel', module: './relative.js' }), 'INVALID_OPTIONS', 'module must be a file: URL or an absolute path'],
    ['register: missing module', () => rt.agents.register({ name: 'gone', module: '/not/here.agent.js' }), 'INVALID_OPTIONS', 'module not found'],
    ['register: module path through a file', () => rt.agents.register({ name: 'gone', module: '/etc/passwd/here.agent.js' }), 'INVALID_OPTIONS', 'module /etc/passwd/here.agent.js cannot be read'],
    ['register: module path too long', () => rt.agents.register({ name: 'gone', module: `/${'x'.repeat(5_000)}.agent.js` }), 'INVALID_OPTIONS', 'cannot be read'],
    ['register: concurrency 0', () => rt.agents.register({ name: 'echo', module: echo, concurrency: 0 }), 'INVALID_OPTIONS', 'agent echo: concurrency must be a positive integer'],
    ['register: negative maxAttempts', () => rt.agents.register({ name: 'echo', module: echo, retry: { maxAttempts: -1 } }), 'INVALID_OPTIONS', 'agent echo: retry.maxAttempts must be a positive integer'],
    ['register: negative timeoutMs', () => rt.agents.register({ name: 'echo', module: echo, timeoutMs: -1 }), 'INVALID_OPTIONS'],
    ['register: unknown field', () => rt.agents.register({ name: 'echo', module: echo, color: 'red' } as never), 'INVALID_OPTIONS', 'agent.color is not a known agent option'],
    ['register: null', () => rt.agents.register(null as never), 'INVALID_OPTIONS'],
    // schedules
    ['schedules.create: null', () => rt.schedules.create(null as never), 'INVALID_INPUT'],
    ['schedules.create: no id', () => rt.schedules.create({ cron: '* * * * *', task: { agent: 'echo' } } as never), 'INVALID_INPUT'],
    ['schedules.create: bad id', () => rt.schedules.create(schedule({ id: 'bad id!' })), 'INVALID_INPUT'],
    ['schedules.create: bad cron', () => rt.schedules.create(schedule({ cron: 'not cron' })), 'INVALID_CRON'],
    ['schedules.create: @ alias', () => rt.schedules.create(schedule({ cron: '@daily' })), 'INVALID_CRON'],
    ['schedules.create: 4 fields', () => rt.schedules.create(schedule({ cron: '* * * *' })), 'INVALID_CRON'],
    ['schedules.create: numeric cron', () => rt.schedules.create(schedule({ cron: 5 })), 'INVALID_CRON'],
    ['schedules.create: unknown zone', () => rt.schedules.create(schedule({ tz: 'Mars/Base' })), 'INVALID_TIMEZONE'],
    ['schedules.create: unknown zone and bad cron', () => rt.schedules.create(schedule({ tz: 'Mars/Base', cron: 'nope' })), 'INVALID_TIMEZONE'],
    ['schedules.create: unknown agent', () => rt.schedules.create(schedule({ task: { agent: 'nope' } })), 'UNKNOWN_AGENT'],
    ['schedules.create: function input', () => rt.schedules.create(schedule({ task: { agent: 'echo', input: () => 1 } })), 'INVALID_INPUT'],
    ['schedules.create: task key', () => rt.schedules.create(schedule({ task: { agent: 'echo', idempotencyKey: 'k' } })), 'INVALID_INPUT'],
    ['schedules.create: task delay', () => rt.schedules.create(schedule({ task: { agent: 'echo', delayMs: 5 } })), 'INVALID_INPUT'],
    ['schedules.create: no task', () => rt.schedules.create({ id: 'x', cron: '* * * * *' } as never), 'INVALID_INPUT'],
    ['schedules.create: unknown field', () => rt.schedules.create(schedule({ bogus: 1 })), 'INVALID_INPUT'],
    ['schedules.create: bad overlap', () => rt.schedules.create(schedule({ overlap: 'x' })), 'INVALID_INPUT'],
    ['schedules.create: bad paused', () => rt.schedules.create(schedule({ paused: 'x' })), 'INVALID_INPUT'],
    ['schedules.create: bad catchUp', () => rt.schedules.create(schedule({ catchUp: 'x' })), 'INVALID_INPUT'],
    ['schedules.create: negative catchUpWindowMs', () => rt.schedules.create(schedule({ catchUpWindowMs: -1 })), 'INVALID_INPUT'],
    ['schedules.update: unknown', () => rt.schedules.update('nope', { paused: true }), 'NOT_FOUND'],
    ['schedules.update: numeric id', () => rt.schedules.update(5 as never, { paused: true }), 'INVALID_INPUT'],
    ['schedules.update: null patch', () => rt.schedules.update('nope', null as never), 'INVALID_INPUT'],
    ['schedules.get: unknown', () => rt.schedules.get('nope'), 'NOT_FOUND'],
    ['schedules.get: numeric id', () => rt.schedules.get(5 as never), 'INVALID_INPUT'],
    ['schedules.pause: numeric id', () => rt.schedules.pause(5 as never), 'INVALID_INPUT'],
    ['schedules.resume: numeric id', () => rt.schedules.resume(5 as never), 'INVALID_INPUT'],
    ['schedules.delete: numeric id', () => rt.schedules.delete(5 as never), 'INVALID_INPUT'],
    // close: its options are checked before anything closes
    ['close: unknown option', () => rt.close({ bogus: 1 } as never), 'INVALID_OPTIONS'],
    ['close: negative timeoutMs', () => rt.close({ timeoutMs: -1 }), 'INVALID_OPTIONS'],
    ['close: string force', () => rt.close({ force: 'x' } as never), 'INVALID_OPTIONS'],
  ];
}

/** Runtime options both stores refuse with INVALID_OPTIONS, and the message naming the option. */
const BAD_OPTIONS: Array<[Record<string, unknown>, string]> = [
  [{ threads: 0 }, 'options.threads must be a positive integer'],
  [{ slotsPerThread: 1.5 }, 'options.slotsPerThread must be a positive integer'],
  [{ maxQueued: -1 }, 'options.maxQueued must be a positive integer'],
  [{ cancelGraceMs: -5 }, 'options.cancelGraceMs must be a non-negative integer'],
  [{ dataDir: '' }, 'options.dataDir must be a non-empty string'],
  [{ dataDir: '/etc/passwd/troupe' }, "options.dataDir /etc/passwd/troupe cannot be used (ENOTDIR: not a directory, stat '/etc/passwd/troupe')"],
  [{ logger: 'loud' }, 'options.logger must be a pino logger, pino options, or false'],
  [{ defaultRetry: { delayMs: -1 } }, 'options.defaultRetry.delayMs must be a non-negative integer'],
  [{ thread: 2 }, 'options.thread is not a known option'],
];

/** The test of {@link BAD_OPTIONS}: call in the contract suite's `describe` block. */
export function badOptions(backend: ContractBackend): void {
  it('refuses bad runtime options with INVALID_OPTIONS, naming the option as on the other store', async () => {
    for (const [options, message] of BAD_OPTIONS) expect(await rejection(backend.open(options as never)), message).toMatchObject({ code: 'INVALID_OPTIONS', message });
  });
}
