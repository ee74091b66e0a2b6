/**
 * OpenTelemetry tracing: with a tracer provider registered in this process, each submit is a
 * `troupe.submit` span under the caller's context, each attempt a `troupe.attempt` span under its
 * task's stored context, and the agent's own spans (made by its own provider in its thread) nest
 * under the attempt's. Without one, or without the package, nothing is traced and tasks run as
 * before. The cases with and without a provider run on both stores: on PostgreSQL on one database
 * and one runtime for the file (each case waits for its own tasks), and the stored context is
 * checked across runtimes: a task submitted on one runs on another that shares the database.
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { context, SpanKind, SpanStatusCode, trace, type Tracer } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { createRuntime, type Runtime, type RuntimeOptions, type Task } from 'troupe';
import type { AgentSpan } from '../fixtures/agents/traced.agent.js';
import { fixtureAgent, runtimes, scratchDirs, scratchOnServer, startRuntime, tempDir } from '../helpers.js';

const runtime = runtimes();
const dirs = scratchDirs();
const traced = { name: 'traced', module: fixtureAgent('traced') };

/** A runtime that stops when told. */
interface Stoppable {
  rt: Runtime;
  stop(): Promise<void>;
}

/** Where the cases run. */
interface Backend {
  name: string;
  /** A runtime that runs `traced`, for one case. */
  open(): Promise<Runtime>;
  /**
   * Two runtimes on one store, running `agent` (the module of `traced`), in turn: `first` now,
   * the other from `next()` once the first has stopped; `cleanup` after both.
   */
  handOff(): Promise<{ agent: string; first: Stoppable; next(): Promise<Stoppable>; cleanup(): Promise<void> }>;
}

const lmdb: Backend = {
  name: 'LMDB',
  open: () => runtime({ agents: [traced] }),
  handOff: async () => {
    const dir = tempDir();
    const start = () => startRuntime({ dataDir: dir.path, agents: [traced] });
    return { agent: 'traced', first: await start(), next: start, cleanup: async () => dir.cleanup() };
  },
};

/** PostgreSQL: one scratch database and one runtime for the file, made on first use. */
let database: Promise<{ url: string; drop(): Promise<void> }> | undefined;
let shared: Promise<Runtime> | undefined;
const pgOpen = async (options: RuntimeOptions) => createRuntime({ threads: 1, slotsPerThread: 2, logger: false, ...options, store: { postgres: (await (database ??= scratchOnServer())).url } });
afterAll(async () => {
  await (await shared?.catch(() => undefined))?.close({ timeoutMs: 1_000, force: true });
  await (await database?.catch(() => undefined))?.drop();
});

const postgres: Backend = {
  name: 'PostgreSQL',
  open: () => (shared ??= pgOpen({ agents: [traced] })),
  handOff: async () => {
    // An agent the shared runtime does not run: only the second runtime can claim its task.
    const elsewhere = { name: 'traced-elsewhere', module: traced.module };
    const start = async () => {
      const rt = await pgOpen({ agents: [elsewhere] });
      return { rt, stop: () => rt.close({ timeoutMs: 2_000 }) };
    };
    return { agent: elsewhere.name, first: await start(), next: start, cleanup: async () => undefined };
  },
};

for (const backend of [lmdb, postgres]) {
  describe(`tracing without a tracer provider (${backend.name})`, () => {
    it('makes no span and hands agents no trace context; tasks run as before', async () => {
      const getTracer = vi.spyOn(trace, 'getTracer');
      try {
        const rt = await backend.open();
        const [one, two] = await rt.submitMany([{ agent: 'traced', input: { mode: 'probe' } }, { agent: 'traced', input: { mode: 'probe' } }]);
        const three = await rt.submit({ agent: 'traced', input: { mode: 'probe' } });
        for (const task of [one!, two!, three]) {
          expect(await rt.wait(task.id)).toMatchObject({ state: 'done', output: { traceparent: null, activeSpan: false } });
        }
        // No tracer was even asked for: no span object was made, on submit or on attempt.
        expect(getTracer).not.toHaveBeenCalled();
      } finally {
        getTracer.mockRestore();
      }
    });
  });

  describe(`tracing with a tracer provider (${backend.name})`, () => {
    const exporter = new InMemorySpanExporter();
    const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
    /** Asked for once this block's provider is registered (a tracer asked for before sticks to the provider of then). */
    let tracer: Tracer;
    /** Spans the agents reported from their threads, for the printed tree. */
    const agentSpans: AgentSpan[] = [];

    beforeAll(() => {
      context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
      trace.setGlobalTracerProvider(provider);
      tracer = trace.getTracer('tracing-test');
    });
    afterAll(async () => {
      console.log(`trace tree:\n${printTree(exporter.getFinishedSpans(), agentSpans)}`);
      trace.disable();
      context.disable();
      await provider.shutdown();
    });

    /** Submits inside an active span `outer`; returns the task and the outer span's id. */
    async function submitUnder(rt: Runtime, input: unknown, extra: Record<string, unknown> = {}): Promise<{ task: Task; outer: string }> {
      const { value, outer } = await under(() => rt.submit({ agent: 'traced', input, ...extra }));
      return { task: value, outer };
    }

    /** Runs `fn` inside an active span `outer`; returns what it resolved with and the outer span's id. */
    function under<T>(fn: () => Promise<T>): Promise<{ value: T; outer: string }> {
      return tracer.startActiveSpan('outer', async (span) => {
        try {
          return { value: await fn(), outer: span.spanContext().spanId };
        } finally {
          span.end();
        }
      });
    }

    const spansOf = (name: string, taskId: string) => exporter.getFinishedSpans().filter((s) => s.name === name && s.attributes['troupe.task.id'] === taskId);
    const parentOf = (span: ReadableSpan) => span.parentSpanContext?.spanId;

    it('nests outer → troupe.submit → troupe.attempt → the agent’s own span, in one trace, with their attributes', async () => {
      const rt = await backend.open();
      const { task, outer } = await submitUnder(rt, { mode: 'span' });
      const done = await rt.wait(task.id);
      expect(done.state).toBe('done');
      const [submit] = spansOf('troupe.submit', task.id);
      const [attempt] = spansOf('troupe.attempt', task.id);
      expect(submit).toBeDefined();
      expect(attempt).toBeDefined();
      const traceId = submit!.spanContext().traceId;
      expect(parentOf(submit!)).toBe(outer);
      expect(submit!.kind).toBe(SpanKind.PRODUCER);
      expect(submit!.attributes).toEqual({ 'troupe.task.id': task.id, 'troupe.agent': 'traced' });
      expect(attempt!.spanContext().traceId).toBe(traceId);
      expect(parentOf(attempt!)).toBe(submit!.spanContext().spanId);
      expect(attempt!.kind).toBe(SpanKind.CONSUMER);
      expect(attempt!.attributes).toEqual({ 'troupe.task.id': task.id, 'troupe.agent': 'traced', 'troupe.run': 1, 'troupe.attempt': 1, 'troupe.attempt.id': `${task.id}:1:1`, 'troupe.exit': 'success' });
      expect(attempt!.status.code).toBe(SpanStatusCode.UNSET);
      const agent = done.output as AgentSpan;
      agentSpans.push(agent);
      expect(agent.traceId).toBe(traceId);
      expect(agent.parentSpanId).toBe(attempt!.spanContext().spanId);
      expect(agent.traceparent).toBe(`00-${traceId}-${attempt!.spanContext().spanId}-01`);
    });

    it('marks a failed attempt ERROR with its exit and message', async () => {
      const rt = await backend.open();
      const { task } = await submitUnder(rt, { mode: 'fail' });
      expect((await rt.wait(task.id)).state).toBe('failed');
      const [attempt] = spansOf('troupe.attempt', task.id);
      expect(attempt!.attributes).toMatchObject({ 'troupe.exit': 'error', 'troupe.error.code': 'AGENT_ERROR' });
      expect(attempt!.status).toEqual({ code: SpanStatusCode.ERROR, message: 'the agent said no' });
      expect(parentOf(attempt!)).toBe(spansOf('troupe.submit', task.id)[0]!.spanContext().spanId);
    });

    it('makes no submit span for a task not stored: a submit whose idempotency key is taken, a key repeated in one submitMany', async () => {
      const rt = await backend.open();
      const spec = (key: string) => ({ agent: 'traced', input: { mode: 'probe' }, idempotencyKey: `${key}-${backend.name}` });
      const first = await under(() => rt.submit(spec('once')));
      const again = await under(() => rt.submit(spec('once')));
      expect(again.value.id).toBe(first.value.id);
      const batch = await under(() => rt.submitMany([spec('twice'), spec('twice')]));
      expect(batch.value.map((t) => t.id)).toEqual([batch.value[0]!.id, batch.value[0]!.id]);
      for (const task of [first.value, batch.value[0]!]) expect((await rt.wait(task.id)).state).toBe('done');
      const outers = [first.outer, again.outer, batch.outer];
      const submits = exporter.getFinishedSpans().filter((s) => s.name === 'troupe.submit' && outers.includes(parentOf(s)!));
      expect(submits.map((s) => [parentOf(s), s.attributes['troupe.task.id']])).toEqual([
        [first.outer, first.value.id],
        [batch.outer, batch.value[0]!.id],
      ]);
    });

    it('ends the last attempt of a task that spent its budget with the task’s RETRY_EXHAUSTED', async () => {
      const rt = await backend.open();
      const { task } = await submitUnder(rt, { mode: 'flaky' }, { retry: { maxAttempts: 1 } });
      expect((await rt.wait(task.id)).state).toBe('dropped');
      const [attempt] = spansOf('troupe.attempt', task.id);
      expect(attempt!.attributes).toMatchObject({ 'troupe.exit': 'error', 'troupe.error.code': 'RETRY_EXHAUSTED' });
      expect(attempt!.status).toEqual({ code: SpanStatusCode.ERROR, message: 'gave up after 1 attempt; last error AGENT_ERROR: try again' });
    });

    it('puts every attempt of a retried task under its one submit span', async () => {
      const rt = await backend.open();
      const { task } = await submitUnder(rt, { mode: 'flaky' }, { retry: { maxAttempts: 2, delayMs: 0, jitter: 0 } });
      const done = await rt.wait(task.id);
      expect(done).toMatchObject({ state: 'done', attempts: 2 });
      const submits = spansOf('troupe.submit', task.id);
      expect(submits).toHaveLength(1);
      const attempts = spansOf('troupe.attempt', task.id).sort((a, b) => (a.attributes['troupe.attempt'] as number) - (b.attributes['troupe.attempt'] as number));
      expect(attempts.map((a) => [a.attributes['troupe.attempt'], a.attributes['troupe.exit'], a.status.code])).toEqual([
        [1, 'error', SpanStatusCode.ERROR],
        [2, 'success', SpanStatusCode.UNSET],
      ]);
      for (const attempt of attempts) expect(parentOf(attempt)).toBe(submits[0]!.spanContext().spanId);
      const agent = done.output as AgentSpan;
      agentSpans.push(agent);
      expect(agent.parentSpanId).toBe(attempts[1]!.spanContext().spanId);
    });

    it('nests a spawned child’s submit span under its parent’s attempt span', async () => {
      const rt = await backend.open();
      const { task } = await submitUnder(rt, { mode: 'spawn' });
      const done = await rt.wait(task.id);
      expect(done.state).toBe('done');
      const { child, output } = done.output as { child: string; output: AgentSpan };
      agentSpans.push(output);
      const [parentAttempt] = spansOf('troupe.attempt', task.id);
      const [childSubmit] = spansOf('troupe.submit', child);
      const [childAttempt] = spansOf('troupe.attempt', child);
      expect(parentOf(childSubmit!)).toBe(parentAttempt!.spanContext().spanId);
      expect(parentOf(childAttempt!)).toBe(childSubmit!.spanContext().spanId);
      expect(output.parentSpanId).toBe(childAttempt!.spanContext().spanId);
      expect(new Set([parentAttempt, childSubmit, childAttempt].map((s) => s!.spanContext().traceId)).size).toBe(1);
    });

    it('gives each task of a submitMany its own submit span under the caller’s', async () => {
      const rt = await backend.open();
      const { value: tasks, outer } = await under(() => rt.submitMany([{ agent: 'traced', input: { mode: 'span' } }, { agent: 'traced', input: { mode: 'span' } }]));
      for (const task of tasks) {
        const done = await rt.wait(task.id);
        const [submit] = spansOf('troupe.submit', task.id);
        const [attempt] = spansOf('troupe.attempt', task.id);
        expect(parentOf(submit!)).toBe(outer);
        expect(parentOf(attempt!)).toBe(submit!.spanContext().spanId);
        agentSpans.push(done.output as AgentSpan);
        expect((done.output as AgentSpan).parentSpanId).toBe(attempt!.spanContext().spanId);
      }
    });

    it('keeps the submit’s trace context with the task: an attempt on another runtime of the store (LMDB: after a restart) still nests under it', async () => {
      const { agent, first, next, cleanup } = await backend.handOff();
      try {
        await first.rt.freeze();
        const { task } = await submitUnder(first.rt, { mode: 'span' }, { agent });
        await first.stop();
        const second = await next();
        try {
          await second.rt.unfreeze();
          const done = await second.rt.wait(task.id);
          expect(done.state).toBe('done');
          const [submit] = spansOf('troupe.submit', task.id);
          const [attempt] = spansOf('troupe.attempt', task.id);
          expect(submit!.attributes).toEqual({ 'troupe.task.id': task.id, 'troupe.agent': agent });
          expect(parentOf(attempt!)).toBe(submit!.spanContext().spanId);
          expect(attempt!.spanContext().traceId).toBe(submit!.spanContext().traceId);
          agentSpans.push(done.output as AgentSpan);
          expect((done.output as AgentSpan).parentSpanId).toBe(attempt!.spanContext().spanId);
        } finally {
          await second.stop();
        }
      } finally {
        await cleanup();
      }
    });
  });
}

describe('without @opentelemetry/api', () => {
  const scripts = fileURLToPath(new URL('../fixtures/scripts/', import.meta.url));
  const root = fileURLToPath(new URL('../..', import.meta.url));

  /** Runs tracing-absent.mjs with the package made unresolvable `where`; resolves with the line it printed. */
  function runWithout(where: 'everywhere' | 'workers'): Promise<{ stderr: string; result: unknown }> {
    const args = ['--import', join(scripts, 'no-otel.mjs'), join(scripts, 'tracing-absent.mjs'), where, dirs()];
    return new Promise((resolve, reject) => {
      execFile(process.execPath, args, { cwd: root, timeout: 20_000, env: { ...process.env, TROUPE_TEST_NO_OTEL: where } }, (error, stdout, stderr) => {
        if (error) return reject(new Error(`${error.message}\n${stderr}`));
        resolve({ stderr, result: JSON.parse(stdout.trim().split('\n').pop()!) as unknown });
      });
    });
  }

  it('runs tasks untraced, without an error, when the package is not installed', async () => {
    expect(await runWithout('everywhere')).toEqual({ stderr: '', result: { hostApi: false, state: 'done', output: { traceparent: null, api: false }, spans: null } });
  });

  it('still runs an attempt whose thread cannot load it: the agent gets its traceparent, outside any context', async () => {
    const { stderr, result } = await runWithout('workers');
    expect(stderr).toBe('');
    expect(result).toEqual({ hostApi: true, state: 'done', output: { traceparent: expect.stringMatching(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/), api: false }, spans: ['troupe.attempt', 'troupe.submit'] });
  });
});

describe('the public types', () => {
  it('name no @opentelemetry type: they compile for a user without the package', () => {
    const root = fileURLToPath(new URL('../../dist/', import.meta.url));
    const seen = new Set<string>();
    const outside = new Set<string>();
    const visit = (file: string) => {
      if (seen.has(file)) return;
      seen.add(file);
      // Comments hold examples (`typeof import('./coder.agent.js')`), not imports.
      const text = readFileSync(file, 'utf8').replace(/\/\*[\s\S]*?\*\//g, '').replace(/^\s*\/\/.*$/gm, '');
      for (const [, specifier] of text.matchAll(/(?:from\s+|import\(\s*)['"]([^'"]+)['"]/g)) {
        if (specifier!.startsWith('.')) visit(join(dirname(file), specifier!.replace(/\.js$/, '.d.ts')));
        else outside.add(specifier!);
      }
    };
    // The declarations the package's exports name (bundled by rollup.dts.config.mjs).
    for (const entry of ['index', 'agent', 'testing']) visit(join(root, `types/${entry}.d.ts`));
    expect(seen.size).toBeGreaterThan(3);
    // Only pino (the logger option's type) and Node's own: no OpenTelemetry, lmdb, Piscina or XState.
    expect([...outside].filter((specifier) => specifier !== 'pino' && !specifier.startsWith('node:'))).toEqual([]);
  });
});

/** The spans as an indented tree: name, trace id, span id, parent id. */
function printTree(spans: readonly ReadableSpan[], agents: readonly AgentSpan[]): string {
  const nodes = [
    ...spans.map((s) => ({ name: s.name, traceId: s.spanContext().traceId, spanId: s.spanContext().spanId, parentSpanId: s.parentSpanContext?.spanId, attributes: s.attributes, status: s.status.code })),
    ...agents.map((a) => ({ ...a, name: `${a.name} (agent's thread)`, attributes: {} as ReadableSpan['attributes'], status: SpanStatusCode.UNSET })),
  ];
  const ids = new Set(nodes.map((n) => n.spanId));
  const lines: string[] = [];
  const walk = (parent: string | undefined, depth: number) => {
    for (const node of nodes.filter((n) => (parent === undefined ? n.parentSpanId === undefined || !ids.has(n.parentSpanId) : n.parentSpanId === parent))) {
      const a = node.attributes;
      const detail = a['troupe.task.id'] === undefined ? '' : ` task=${String(a['troupe.task.id'])}${a['troupe.attempt'] === undefined ? '' : ` attempt=${String(a['troupe.attempt'])} exit=${String(a['troupe.exit'])}`}`;
      lines.push(`${'  '.repeat(depth)}${node.name} trace=${node.traceId} span=${node.spanId} parent=${node.parentSpanId ?? '-'}${detail}${node.status === SpanStatusCode.ERROR ? ' ERROR' : ''}`);
      walk(node.spanId, depth + 1);
    }
  };
  walk(undefined, 0);
  return lines.join('\n');
}
