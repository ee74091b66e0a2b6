/**
 * `troupe/testing`: a runtime for an app's own tests, on a fresh temp data dir and a manual clock.
 * `advance(ms)` moves the clock and fires every durable timer that falls due on the way at once
 * (retry backoff, delayed starts, sleeps, input timeouts, schedules: Temporal's time skipping),
 * and resolves once what they decided is committed. Agents run on real threads, as in production,
 * or, given as functions in `inThread`, in the test's own thread (no module file, breakpoints and
 * mocks work, nothing crosses a thread).
 *
 *   const t = await createTestRuntime({ agents: [{ name: 'coder', module: new URL('./coder.agent.ts', import.meta.url) }] });
 *   const task = await t.rt.submit({ agent: 'coder', input: { prompt: 'hi' }, delayMs: 60_000 });
 *   await t.advance(60_000);
 *   const done = await t.rt.wait(task.id);
 *   await t.close();
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { EventType, RuntimeEvent } from '../api/events.js';
import { ManualClock } from '../clock.js';
import { createLmdbRuntime } from '../create-runtime.js';
import { TroupeError } from '../errors.js';
import type { RuntimeOptions } from '../options.js';
import type { Runtime } from '../api/runtime.js';
import type { LmdbRuntime } from '../runtime.js';
import { agentFunctionOf, type Agent, type AgentFunction } from '../../actors/agent.js';
import { createInThreadPool } from '../pool/in-thread.js';
import type { AgentRegistration } from '../agents/registry.js';
import { nextEvent, type NextEventOptions } from './events.js';

export { nextEvent, collectEvents, recordEvents } from './events.js';
export type { NextEventOptions, EventRecorder } from './events.js';
export { ManualClock } from '../clock.js';

/** Options of {@link createTestRuntime}: a runtime's, with test defaults. */
export interface TestRuntimeOptions extends Omit<RuntimeOptions, 'clock' | 'dataDir'> {
  /** Where the manual clock starts (epoch ms). @default Date.UTC(2026, 0, 1) */
  startAt?: number | undefined;
  /** A data dir to use and keep (a reopen test); by default a fresh temp dir, removed on close. */
  dataDir?: string | undefined;
  /**
   * Agents by name, as functions (or `defineAgent` results), run in the test's own thread. With
   * any, every agent of this runtime runs there, modules from `agents` included (imported in this
   * thread), in one "thread" of `slotsPerThread` slots. A stuck in-thread agent cannot be
   * preempted, and an error it leaves uncaught is the test process's.
   */
  inThread?: Record<string, Agent<any, any> | AgentFunction<any, any>> | undefined;
}

/** A runtime under test with its clock (see the module comment). */
export interface TestRuntime extends AsyncDisposable {
  readonly rt: Runtime;
  readonly clock: ManualClock;
  readonly dataDir: string;
  /**
   * Moves the clock forward by `ms`, firing each durable timer due on the way, in order; resolves
   * once what they decided (a retry queued, a sleeping task woken, a schedule fired) is committed.
   */
  advance(ms: number): Promise<void>;
  /** The next committed event of `type` (see {@link nextEvent}). */
  nextEvent<K extends EventType>(type: K, options?: NextEventOptions<K>): Promise<RuntimeEvent<K>>;
  /** Closes the runtime and removes its temp data dir (not one given in the options). */
  close(): Promise<void>;
}

/** Test defaults: silent, one thread of four slots, leases of a day (a paused debugger holds no lease). */
const TEST_DEFAULTS = { logger: false, threads: 1, slotsPerThread: 4, leaseMs: 86_400_000 } as const satisfies RuntimeOptions;

/** A runtime on a fresh temp data dir and a {@link ManualClock} (see the module comment). */
export async function createTestRuntime(options: TestRuntimeOptions = {}): Promise<TestRuntime> {
  if (typeof options !== 'object' || options === null) throw new TroupeError('INVALID_OPTIONS', 'createTestRuntime: options must be an object');
  const { startAt, dataDir: given, inThread, ...rest } = options;
  if (startAt !== undefined && !Number.isFinite(startAt)) throw new TroupeError('INVALID_OPTIONS', 'createTestRuntime: startAt must be a finite epoch ms');
  const local = inThread === undefined ? undefined : inThreadAgents(inThread);
  const clock = new ManualClock(startAt);
  const dataDir = given ?? mkdtempSync(join(tmpdir(), 'troupe-test-'));
  const cleanup = () => {
    if (given === undefined) rmSync(dataDir, { recursive: true, force: true });
  };
  let rt: LmdbRuntime;
  try {
    rt = await createLmdbRuntime(
      local === undefined
        ? { ...TEST_DEFAULTS, ...rest, dataDir, clock }
        : { ...TEST_DEFAULTS, ...rest, threads: 1, agents: [...(rest.agents ?? []), ...local.registrations], dataDir, clock, createPool: (pool) => createInThreadPool(pool, local.functions) },
    );
  } catch (error) {
    cleanup();
    throw error;
  }
  let closing: Promise<void> | undefined;
  const close = () =>
    (closing ??= (async () => {
      try {
        await rt.close();
      } finally {
        cleanup();
      }
    })());
  return {
    rt,
    clock,
    dataDir,
    async advance(ms) {
      if (!(typeof ms === 'number' && ms >= 0 && Number.isFinite(ms))) throw new TroupeError('INVALID_INPUT', `advance: ms must be a finite number >= 0 (got ${String(ms)})`);
      // What is already decided commits first, so that timers it arms are on the clock.
      await rt.quiesce();
      clock.advance(ms);
      await rt.quiesce();
    },
    nextEvent: (type, eventOptions) => nextEvent(rt, type, eventOptions),
    close,
    [Symbol.asyncDispose]: close,
  };
}

/** Where in-thread agents' registrations point: a file that exists (registration checks it), told apart by the fragment. */
const IN_THREAD = new URL(import.meta.url);

/** Registrations for in-thread agents, and the function each module string stands for. */
function inThreadAgents(given: Record<string, Agent<any, any> | AgentFunction<any, any>>): { registrations: AgentRegistration[]; functions: Map<string, AgentFunction> } {
  if (typeof given !== 'object' || given === null) throw new TroupeError('INVALID_OPTIONS', 'createTestRuntime: inThread must be an object of agents by name');
  const registrations: AgentRegistration[] = [];
  const functions = new Map<string, AgentFunction>();
  for (const [name, agent] of Object.entries(given)) {
    const fn = agentFunctionOf(agent);
    if (!fn) throw new TroupeError('INVALID_OPTIONS', `createTestRuntime: inThread.${name} must be a function (input, ctx) => result or a defineAgent() result`);
    const module = new URL(`#in-thread:${encodeURIComponent(name)}`, IN_THREAD);
    registrations.push({ name, module });
    functions.set(module.href, fn);
  }
  return { registrations, functions };
}
