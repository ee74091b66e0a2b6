/**
 * An event stream whose client stops reading: the dashboard waits for it a while, then cuts it
 * off, and the runtime's iteration behind it ends, so nothing piles up for it. Before, the stream
 * waited for 'drain' without end while the events it had not sent waited in memory.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Writable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { dashboardApi, STALL_MS, type DashboardRuntime } from '../../src/dashboard/api.js';
import type { RuntimeEvent } from '../../src/events/event-bus.js';

/** A response whose client never reads: the first chunk is never acknowledged, the rest queue up. */
class StalledResponse extends Writable {
  headersSent = false;
  constructor() {
    super({ highWaterMark: 1_024, write: () => undefined });
  }
  writeHead(): this {
    this.headersSent = true;
    return this;
  }
}

/** A runtime whose events() yields events for as long as it is read; `pulled` counts them. */
function endlessEvents() {
  const seen = { pulled: 0, signal: undefined as AbortSignal | undefined };
  const rt = {
    metrics: async () => ({ attemptsByExit: {}, latency: { submitToStart: { count: 0, sum: 0 } }, at: 0 }),
    events: ({ signal }: { signal: AbortSignal }) => {
      seen.signal = signal;
      return (async function* () {
        for (let seq = 1; !signal.aborted; seq++) {
          seen.pulled++;
          yield { seq, cursor: String(seq).padStart(16, '0'), at: 0, type: 'task.queued', taskId: 'T1', data: { run: 1, text: 'x'.repeat(200) } } as unknown as RuntimeEvent;
        }
      })();
    },
  } as unknown as DashboardRuntime;
  return { rt, seen };
}

beforeEach(() => {
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval'] });
});
afterEach(() => {
  vi.useRealTimers();
});

describe('an event stream whose client stops reading', () => {
  it('is cut off once it has waited out the stall limit, and its iteration ends', async () => {
    const { rt, seen } = endlessEvents();
    const api = dashboardApi(rt);
    const res = new StalledResponse();
    const req = { headers: {}, destroyed: false } as unknown as IncomingMessage;
    const streaming = api.events(req, res as unknown as ServerResponse, new URL('http://dashboard.invalid/api/events'));
    await vi.advanceTimersByTimeAsync(STALL_MS - 1);
    // Waiting for the client: only what fills its buffer was taken from the runtime.
    expect(res.destroyed).toBe(false);
    const pulledWhileWaiting = seen.pulled;
    expect(pulledWhileWaiting).toBeLessThan(20);
    await vi.advanceTimersByTimeAsync(1);
    expect(res.destroyed).toBe(true);
    await streaming;
    expect(seen.signal?.aborted).toBe(true);
    expect(seen.pulled).toBeLessThanOrEqual(pulledWhileWaiting + 1);
    api.close();
  });
});
