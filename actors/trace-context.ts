/**
 * The attempt's trace context inside its thread: an agent function runs inside the context of its
 * attempt's span, so spans the agent starts with its own tracer nest under it. That needs
 * `@opentelemetry/api` in the thread (an optional peer dependency): it is loaded the first time an
 * attempt carries a `traceparent`, never for attempts that carry none, and when it cannot be loaded
 * agents still run, just outside any context (`ctx.traceparent` still names the span).
 *
 * The context only reaches the agent's asynchronous code if the thread has a context manager
 * registered (the agent module sets up its own tracer provider and context manager, as any
 * OpenTelemetry program does): the API's own default passes no context anywhere.
 */
import { parseTraceparent } from './traceparent.js';

/** The part of `@opentelemetry/api` used here. */
interface ContextApi {
  ROOT_CONTEXT: unknown;
  context: { with<T>(context: unknown, fn: () => T): T };
  trace: { setSpanContext(context: unknown, span: { traceId: string; spanId: string; traceFlags: number; isRemote?: boolean; traceState?: unknown }): unknown };
  createTraceState?: (raw?: string) => unknown;
}

/** undefined: not tried yet; null: not installed (or unusable) here. */
let api: ContextApi | null | undefined;
let loading: Promise<void> | undefined;

/** Whether the API is loaded, or known to be missing: {@link inTraceContext} can run at once. */
export function traceContextSettled(): boolean {
  return api !== undefined;
}

/** Loads the API once per thread; resolves either way (never rejects). */
export function settleTraceContext(): Promise<void> {
  return (loading ??= import('@opentelemetry/api').then(
    (namespace: Record<string, unknown>) => {
      const candidate = (typeof namespace.context === 'object' ? namespace : namespace.default) as Partial<ContextApi> | undefined;
      api = candidate && typeof candidate.context?.with === 'function' && typeof candidate.trace?.setSpanContext === 'function' ? (candidate as ContextApi) : null;
    },
    () => {
      api = null;
    },
  ));
}

/**
 * Runs `fn` inside the context of the span `traceparent` names (with `tracestate`, if any), or
 * plainly when the API is missing or the header is not valid.
 */
export function inTraceContext<T>(traceparent: string, tracestate: string | undefined, fn: () => T): T {
  const parent = api ? parseTraceparent(traceparent) : undefined;
  if (!api || !parent) return fn();
  const traceState = tracestate !== undefined && api.createTraceState ? api.createTraceState(tracestate) : undefined;
  const spanContext = traceState === undefined ? { ...parent, isRemote: true } : { ...parent, isRemote: true, traceState };
  return api.context.with(api.trace.setSpanContext(api.ROOT_CONTEXT, spanContext), fn);
}
