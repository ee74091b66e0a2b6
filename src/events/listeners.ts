/**
 * The `rt.on` / `rt.off` listeners of a runtime, by event type ('*': every event), as both
 * runtimes keep them: the LMDB runtime's event bus (event-bus.ts) and the PostgreSQL runtime's
 * feed (src/cluster/feed.ts). A listener is checked on the way in, and each call runs in a try: a
 * listener that throws, or an async one whose promise rejects, reaches `failed`, never the
 * publisher or the other listeners. A type's list is replaced, never changed, so a listener may
 * unsubscribe while it is being called.
 */
import type { EventType, RuntimeEvent } from '../api/events.js';
import { TroupeError } from '../errors.js';
import { checkType } from './event-bus.js';

type Listener = (event: RuntimeEvent) => void;

/** See the module comment. */
export class EventListeners {
  readonly #byType = new Map<string, Listener[]>();
  #count = 0;
  readonly #failed: (error: unknown, type: string) => void;

  /** `failed` hears what a listener threw or rejected with, and the event's type. */
  constructor(failed: (error: unknown, type: string) => void) {
    this.#failed = failed;
  }

  /** Listeners registered (one registered twice counts twice). */
  get size(): number {
    return this.#count;
  }

  /** Adds a listener; returns its unsubscribe. INVALID_INPUT for an unknown type or a listener that is not a function. */
  on(type: EventType | '*', listener: Listener): () => void {
    checkType(type, 'on', true);
    if (typeof listener !== 'function') throw new TroupeError('INVALID_INPUT', `on(${JSON.stringify(type)}): the listener must be a function`);
    this.#byType.set(type, [...(this.#byType.get(type) ?? []), listener]);
    this.#count++;
    return () => this.off(type, listener);
  }

  /** Removes one registration of the listener; whether there was one. */
  off(type: EventType | '*', listener: Listener): boolean {
    const listeners = this.#byType.get(type);
    const at = listeners?.indexOf(listener) ?? -1;
    if (at < 0) return false;
    const rest = listeners!.filter((_, i) => i !== at);
    if (rest.length > 0) this.#byType.set(type, rest);
    else this.#byType.delete(type);
    this.#count--;
    return true;
  }

  /**
   * Calls the event's type's listeners, then the '*' ones: those registered when it was
   * published (both lists are read first, so a listener added by one of them hears the next event).
   */
  deliver(event: RuntimeEvent): void {
    const typed = this.#byType.get(event.type);
    const all = this.#byType.get('*');
    if (typed) this.#call(typed, event);
    if (all) this.#call(all, event);
  }

  #call(listeners: readonly Listener[], event: RuntimeEvent): void {
    for (const listener of listeners) {
      try {
        const returned: unknown = listener(event);
        // An async listener's rejection is its error too: caught here, not left unhandled.
        if (typeof (returned as PromiseLike<unknown> | undefined)?.then === 'function') {
          (returned as PromiseLike<unknown>).then(undefined, (error: unknown) => this.#failed(error, event.type));
        }
      } catch (error) {
        this.#failed(error, event.type);
      }
    }
  }
}
