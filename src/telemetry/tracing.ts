/**
 * OpenTelemetry tracing, host side: a `troupe.submit` span (kind PRODUCER) per submitted task, a
 * child of the caller's active context, whose W3C trace context is stored with the task; and a
 * `troupe.attempt` span (kind CONSUMER) per attempt, a child of that stored context (so attempts
 * after a restart nest too), from the attempt's start until it settles. The attempt's span travels
 * to its thread as a `traceparent` (actors/trace-context.ts). Both runtimes use it: the LMDB
 * runtime's submit and dispatcher, and on PostgreSQL the runtime's submit, a node's spawns and its
 * attempts (src/cluster/submit-spans.ts, node-attempts.ts), the context stored on the task's row.
 *
 * `@opentelemetry/api` is an optional peer dependency, loaded once when the runtime is created;
 * without it {@link Tracing.load} gives undefined and nothing here runs. With it, each submit and
 * each attempt first asks {@link Tracing.active} whether a tracer provider is registered (one read
 * of the API's global provider, ~12 ns measured): when none is, no span, no context and no header
 * string is made. No type of the API appears in what this module exports, so the public types
 * compile for a user who does not have it.
 */
import type { Context, Span } from '@opentelemetry/api';
import { formatTraceparent, parseTraceparent } from '../../actors/traceparent.js';
import type { AttemptRequest, WireError } from '../../actors/wire.js';
import type { AttemptRecord, TaskRecord, TraceCarrier } from '../store/records.js';

type Api = typeof import('@opentelemetry/api');

/** The tracer's name: the instrumentation scope of every span Troupe starts. */
export const TRACER_NAME = 'troupe';

/** See the module comment. */
export class Tracing {
  readonly #api: Api;
  /** What the API's global provider delegates to while no provider is registered. */
  readonly #noop: unknown;

  private constructor(api: Api) {
    this.#api = api;
    this.#noop = new api.ProxyTracerProvider().getDelegate();
  }

  /** `@opentelemetry/api` as this process has it, or undefined when it is not installed (tracing off). */
  static async load(): Promise<Tracing | undefined> {
    let namespace: Record<string, unknown>;
    try {
      namespace = (await import('@opentelemetry/api')) as unknown as Record<string, unknown>;
    } catch {
      return undefined;
    }
    const api = (typeof namespace.trace === 'object' ? namespace : namespace.default) as Api | undefined;
    return api && typeof api.trace?.getTracerProvider === 'function' && typeof api.context?.active === 'function' ? new Tracing(api) : undefined;
  }

  /** Whether a tracer provider is registered now: spans are made only then. */
  active(): boolean {
    const provider = this.#api.trace.getTracerProvider() as { getDelegate?(): unknown };
    return (typeof provider.getDelegate === 'function' ? provider.getDelegate() : provider) !== this.#noop;
  }

  /** The spans of one submit call (one per task it stores), children of the caller's active context. */
  submits(): SubmitSpans {
    return new OtelSubmitSpans(this.#api);
  }

  /** Starts the span of an attempt that starts now: a child of its task's stored trace context (a root when it has none). */
  startAttempt(task: Pick<TaskRecord, 'id' | 'agent' | 'trace'>, attempt: Pick<AttemptRecord, 'run' | 'attempt' | 'attemptId'>): AttemptSpan {
    const api = this.#api;
    const parent = task.trace === undefined ? api.ROOT_CONTEXT : contextOf(api, task.trace);
    const span = api.trace.getTracer(TRACER_NAME).startSpan(
      'troupe.attempt',
      {
        kind: api.SpanKind.CONSUMER,
        attributes: { 'troupe.task.id': task.id, 'troupe.agent': task.agent, 'troupe.run': attempt.run, 'troupe.attempt': attempt.attempt, 'troupe.attempt.id': attempt.attemptId },
      },
      parent,
    );
    return new OtelAttemptSpan(api, span);
  }
}

/** The `troupe.submit` spans of one submit call. */
export interface SubmitSpans {
  /** Starts the span of the next task to store; what its record keeps (undefined if the span has no valid context). */
  start(): TraceCarrier | undefined;
  /** The task the span started `at`-th (0-based; the last started by default) stored. */
  decided(task: Pick<TaskRecord, 'id' | 'agent'>, at?: number): void;
  /**
   * Drops the span started `at`-th without ending it, so it is never exported: its task was not
   * stored (on PostgreSQL, where the spans start before the transaction that finds an idempotency
   * key taken; the LMDB runtime starts none for such a task).
   */
  discard(at: number): void;
  /** Ends every span: the tasks are durable, or (`error`) the submit failed. */
  end(error?: unknown): void;
}

/** The `troupe.attempt` span of a live attempt (host side). */
export interface AttemptSpan {
  /** What its thread is handed: the agent runs inside this span's context. Undefined if the span has no valid context. */
  readonly carrier: TraceCarrier | undefined;
  /** Runs `fn` inside this span's context (an agent's spawn submits its child under it). */
  within<T>(fn: () => T): T;
  /** Ends it with the attempt's exit; `error` (how it failed) makes its status ERROR. Once. */
  end(exit: string, error?: Pick<WireError, 'code' | 'message'>): void;
}

class OtelSubmitSpans implements SubmitSpans {
  readonly #api: Api;
  readonly #spans: Array<Span | undefined> = [];

  constructor(api: Api) {
    this.#api = api;
  }

  start(): TraceCarrier | undefined {
    const api = this.#api;
    const span = api.trace.getTracer(TRACER_NAME).startSpan('troupe.submit', { kind: api.SpanKind.PRODUCER }, api.context.active());
    this.#spans.push(span);
    return carrierOf(span);
  }

  decided(task: Pick<TaskRecord, 'id' | 'agent'>, at = this.#spans.length - 1): void {
    this.#spans[at]?.setAttributes({ 'troupe.task.id': task.id, 'troupe.agent': task.agent });
  }

  discard(at: number): void {
    this.#spans[at] = undefined;
  }

  end(error?: unknown): void {
    for (const span of this.#spans) {
      if (span === undefined) continue;
      if (error !== undefined) span.setStatus({ code: this.#api.SpanStatusCode.ERROR, message: error instanceof Error ? error.message : String(error) });
      span.end();
    }
    this.#spans.length = 0;
  }
}

class OtelAttemptSpan implements AttemptSpan {
  readonly #api: Api;
  readonly #span: Span;
  readonly carrier: TraceCarrier | undefined;
  #ended = false;

  constructor(api: Api, span: Span) {
    this.#api = api;
    this.#span = span;
    this.carrier = carrierOf(span);
  }

  within<T>(fn: () => T): T {
    const api = this.#api;
    // Not the host's active context: whatever the turn that answers the call runs in is no parent of this.
    return api.context.with(api.trace.setSpan(api.ROOT_CONTEXT, this.#span), fn);
  }

  end(exit: string, error?: Pick<WireError, 'code' | 'message'>): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#span.setAttribute('troupe.exit', exit);
    if (error !== undefined) {
      this.#span.setAttribute('troupe.error.code', error.code);
      this.#span.setStatus({ code: this.#api.SpanStatusCode.ERROR, message: error.message });
    }
    this.#span.end();
  }
}

/** Puts the trace context of an attempt's span on the request its thread is handed (nothing without a span, or for one with no valid context). */
export function carryTrace(request: AttemptRequest, span: AttemptSpan | undefined): void {
  const carrier = span?.carrier;
  if (carrier === undefined) return;
  request.traceparent = carrier.traceparent;
  if (carrier.tracestate !== undefined) request.tracestate = carrier.tracestate;
}

/** The stored trace context of a span, or undefined when its ids are not valid (a no-op span). */
function carrierOf(span: Span): TraceCarrier | undefined {
  const context = span.spanContext();
  const traceparent = formatTraceparent(context);
  if (traceparent === undefined) return undefined;
  const tracestate = context.traceState?.serialize();
  return tracestate ? { traceparent, tracestate } : { traceparent };
}

/** The context of a stored trace context, as a remote parent; the root context when it is not valid. */
function contextOf(api: Api, carrier: TraceCarrier): Context {
  const parent = parseTraceparent(carrier.traceparent);
  if (parent === undefined) return api.ROOT_CONTEXT;
  const traceState = typeof carrier.tracestate === 'string' ? api.createTraceState(carrier.tracestate) : undefined;
  return api.trace.setSpanContext(api.ROOT_CONTEXT, traceState === undefined ? { ...parent, isRemote: true } : { ...parent, isRemote: true, traceState });
}
