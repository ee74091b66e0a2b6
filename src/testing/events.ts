/**
 * Awaiting committed events in tests: the next one of a type, the first `count` of a type, or every
 * one as it comes. Each listens through `rt.on`, so it sees events after their commit, in order.
 */
import type { EventType, RuntimeEvent } from '../api/events.js';
import { TroupeError } from '../errors.js';

/** The longest wait a timer takes (2^31 - 1 ms, about 24.8 days). */
const MAX_TIMEOUT_MS = 2_147_483_647;

/** What the helpers need of a runtime. */
type Listenable = { on<K extends EventType>(type: K, listener: (event: RuntimeEvent<K>) => void): () => void };

/** Options of {@link nextEvent} and {@link collectEvents}. */
export interface NextEventOptions<K extends EventType> {
  /** Only events this returns true for. */
  match?: ((event: RuntimeEvent<K>) => boolean) | undefined;
  /** Only events of this task. */
  taskId?: string | undefined;
  /** Rejects with WAIT_TIMEOUT after this many real milliseconds. @default 10_000 */
  timeoutMs?: number | undefined;
}

/** The next committed event of `type` (that matches), or WAIT_TIMEOUT. */
export async function nextEvent<K extends EventType>(rt: Listenable, type: K, options: NextEventOptions<K> = {}): Promise<RuntimeEvent<K>> {
  const [event] = await collectEvents(rt, type, 1, options);
  return event!;
}

/** The next `count` committed events of `type` (that match), in commit order, or WAIT_TIMEOUT. */
export function collectEvents<K extends EventType>(rt: Listenable, type: K, count: number, options: NextEventOptions<K> = {}): Promise<Array<RuntimeEvent<K>>> {
  if (!(Number.isSafeInteger(count) && count >= 1)) return Promise.reject(new TroupeError('INVALID_INPUT', `collectEvents: count must be a positive integer (got ${String(count)})`));
  const { match, taskId, timeoutMs = 10_000 } = options;
  if (!(typeof timeoutMs === 'number' && timeoutMs >= 0 && timeoutMs <= MAX_TIMEOUT_MS)) {
    return Promise.reject(new TroupeError('INVALID_INPUT', `timeoutMs must be a number of ms in 0..${MAX_TIMEOUT_MS} (got ${String(timeoutMs)})`));
  }
  const seen: Array<RuntimeEvent<K>> = [];
  return new Promise((resolve, reject) => {
    // Subscribed first: a type rt.on refuses rejects here, with no timer left behind.
    let timer: ReturnType<typeof setTimeout> | undefined;
    const off = rt.on(type, (event) => {
      if (taskId !== undefined && event.taskId !== taskId) return;
      let matched = true;
      try {
        matched = match === undefined || match(event);
      } catch (error) {
        // A match that throws is the test's error, not a timeout.
        off();
        clearTimeout(timer);
        return reject(error);
      }
      if (!matched) return;
      seen.push(event);
      if (seen.length < count) return;
      off();
      clearTimeout(timer);
      resolve(seen);
    });
    timer = setTimeout(() => {
      off();
      reject(new TroupeError('WAIT_TIMEOUT', `no ${count === 1 ? '' : `${count} `}${type} event${taskId ? ` of task ${taskId}` : ''} within ${timeoutMs} ms (saw ${seen.length})`));
    }, timeoutMs);
  });
}

/** Every committed event of `type` from now on, as they come; `stop()` ends the recording. */
export type EventRecorder<K extends EventType> = Array<RuntimeEvent<K>> & { stop(): void };

/** Starts recording the committed events of `type` into an array that grows as they come. */
export function recordEvents<K extends EventType>(rt: Listenable, type: K): EventRecorder<K> {
  const events = [] as unknown as EventRecorder<K>;
  const off = rt.on(type, (event) => events.push(event));
  Object.defineProperty(events, 'stop', { value: off, enumerable: false });
  return events;
}
