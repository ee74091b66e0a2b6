import { describe, expect, it } from 'vitest';
import { formatTraceparent, parseTraceparent } from '../../actors/traceparent.js';

const TRACE = '0af7651916cd43dd8448eb211c80319c';
const SPAN = 'b7ad6b7169203331';

describe('traceparent', () => {
  it('parses a version 00 header into its ids and flags', () => {
    expect(parseTraceparent(`00-${TRACE}-${SPAN}-01`)).toEqual({ traceId: TRACE, spanId: SPAN, traceFlags: 1 });
    expect(parseTraceparent(`00-${TRACE}-${SPAN}-00`)).toEqual({ traceId: TRACE, spanId: SPAN, traceFlags: 0 });
  });

  it('reads the known fields of a later version and ignores what follows them', () => {
    expect(parseTraceparent(`01-${TRACE}-${SPAN}-03-more`)).toEqual({ traceId: TRACE, spanId: SPAN, traceFlags: 3 });
    expect(parseTraceparent(`01-${TRACE}-${SPAN}-03`)).toEqual({ traceId: TRACE, spanId: SPAN, traceFlags: 3 });
  });

  it('refuses anything else', () => {
    for (const bad of [
      undefined,
      42,
      '',
      `00-${TRACE}-${SPAN}`,
      `00-${TRACE}-${SPAN}-01-extra`, // version 00 has exactly four fields
      `ff-${TRACE}-${SPAN}-01`, // version ff is invalid
      `00-${TRACE.toUpperCase()}-${SPAN}-01`, // lowercase only
      `00-${'0'.repeat(32)}-${SPAN}-01`, // all-zero trace id
      `00-${TRACE}-${'0'.repeat(16)}-01`, // all-zero span id
      `00-${TRACE.slice(1)}-${SPAN}-01`,
      `00-${TRACE}-${SPAN}-1`,
      `01-${TRACE}-${SPAN}-01x`,
      ` 00-${TRACE}-${SPAN}-01`,
    ]) {
      expect(parseTraceparent(bad), String(bad)).toBeUndefined();
    }
  });

  it('formats a span as version 00, two hex digits of flags, and refuses invalid ids', () => {
    expect(formatTraceparent({ traceId: TRACE, spanId: SPAN, traceFlags: 1 })).toBe(`00-${TRACE}-${SPAN}-01`);
    expect(formatTraceparent({ traceId: TRACE, spanId: SPAN, traceFlags: 0xab })).toBe(`00-${TRACE}-${SPAN}-ab`);
    expect(formatTraceparent({ traceId: '0'.repeat(32), spanId: SPAN, traceFlags: 1 })).toBeUndefined();
    expect(formatTraceparent({ traceId: TRACE, spanId: 'xyz', traceFlags: 1 })).toBeUndefined();
  });
});
