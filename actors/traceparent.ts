/**
 * The W3C `traceparent` header (https://www.w3.org/TR/trace-context/#traceparent-header), parsed
 * and formatted by hand: both sides of the thread boundary read it, and neither may need
 * `@opentelemetry/api` to do so. `00-<trace id: 32 hex>-<parent id: 16 hex>-<flags: 2 hex>`,
 * lowercase; all-zero ids are invalid, and so is version `ff`.
 */

/** A parsed `traceparent`: the ids and flags of the span it names. */
export interface TraceParent {
  traceId: string;
  spanId: string;
  /** Bit 0: sampled. */
  traceFlags: number;
}

const VERSION_00 = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;
/** A later version: the same first four fields; anything after them starts with a dash (the spec says to read what it knows). */
const LATER_VERSION = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(?:-.*)?$/;
const ZERO_TRACE = '0'.repeat(32);
const ZERO_SPAN = '0'.repeat(16);

/** The span a `traceparent` names, or undefined when it is not a valid one. */
export function parseTraceparent(value: unknown): TraceParent | undefined {
  if (typeof value !== 'string' || value.length > 512) return undefined;
  let traceId: string, spanId: string, flags: string;
  const v00 = VERSION_00.exec(value);
  if (v00) [, traceId, spanId, flags] = v00 as unknown as [string, string, string, string];
  else {
    const later = LATER_VERSION.exec(value);
    if (!later || later[1] === '00' || later[1] === 'ff') return undefined;
    [, , traceId, spanId, flags] = later as unknown as [string, string, string, string, string];
  }
  if (traceId === ZERO_TRACE || spanId === ZERO_SPAN) return undefined;
  return { traceId, spanId, traceFlags: parseInt(flags, 16) };
}

/** The `traceparent` (version 00) of a span; undefined when its ids are not valid ones. */
export function formatTraceparent(span: TraceParent): string | undefined {
  const flags = span.traceFlags & 0xff;
  const value = `00-${span.traceId}-${span.spanId}-${flags < 16 ? '0' : ''}${flags.toString(16)}`;
  return parseTraceparent(value) === undefined ? undefined : value;
}
