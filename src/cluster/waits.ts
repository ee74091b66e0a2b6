/**
 * `rt.wait()` on PostgreSQL. A wait is registered before its task's row is read, so a settle that
 * commits after the read is seen by the runtime's one event follower (feed.ts): each settling
 * event of a task with pending waits reads its row again, and the waits resolve once the row says
 * the task is settled for a wait (terminal, or needs attention). No wait polls. A task settled
 * already resolves at once. Each pending wait holds the process alive (keep-alive.ts), and has
 * the feed read the log (it reads only while someone needs it), from before its row is read.
 */
import { SETTLED_FOR_WAIT } from '../../machines/index.js';
import type { RuntimeEvent } from '../api/events.js';
import type { Task, WaitOptions } from '../api/tasks.js';
import type { Clock, ClockTimer } from '../clock.js';
import { TroupeError } from '../errors.js';
import type { KeepAlive } from '../keep-alive.js';
import type { Logger } from '../log.js';

/** Events after which a task may be settled for a wait. */
const SETTLING: ReadonlySet<string> = new Set(['task.done', 'task.failed', 'task.dropped', 'task.cancelled', 'task.needs_attention']);

/** What the waits need from their runtime. */
export interface WaitsDeps {
  /** The task now, or undefined when there is none. */
  read(id: string): Promise<Task | undefined>;
  clock: Clock;
  keepAlive: Pick<KeepAlive, 'add' | 'drop'>;
  /** Has the feed read the log until the release is called (feed.ts EventFeed.need). */
  need(): () => void;
  log: Logger;
}

interface Pending {
  id: string;
  resolve(task: Task): void;
  reject(error: unknown): void;
  timer?: ClockTimer;
  signal?: AbortSignal;
  onAbort?: () => void;
  unneed?: () => void;
}

/** See the module comment. */
export class TaskWaits {
  readonly #k: WaitsDeps;
  readonly #pending = new Map<string, Set<Pending>>();

  constructor(deps: WaitsDeps) {
    this.#k = deps;
  }

  /** Resolves with the task once it is settled for a wait; WAIT_TIMEOUT after `timeoutMs`; the signal's reason on abort. */
  wait(id: string, options: WaitOptions = {}): Promise<Task> {
    try {
      if (typeof options !== 'object' || options === null) throw new TroupeError('INVALID_OPTIONS', 'wait: options must be an object');
      const { timeoutMs, signal } = options;
      if (timeoutMs !== undefined && !(Number.isSafeInteger(timeoutMs) && timeoutMs >= 0)) throw new TroupeError('INVALID_INPUT', 'wait: timeoutMs must be a non-negative integer');
      if (signal !== undefined && !(signal instanceof AbortSignal)) throw new TroupeError('INVALID_OPTIONS', 'wait: signal must be an AbortSignal');
      signal?.throwIfAborted();
      return new Promise<Task>((resolve, reject) => {
        const pending: Pending = { id, resolve, reject };
        this.#add(pending);
        if (signal) {
          pending.signal = signal;
          pending.onAbort = () => this.#end(pending, undefined, signal.reason);
          signal.addEventListener('abort', pending.onAbort, { once: true });
        }
        // Read after registering: a settle committed after this read comes through the feed. The
        // timeout runs from the call but is armed once the read has answered, so a task settled
        // already resolves whatever the timeout (as on LMDB, where that read is synchronous).
        const calledAt = this.#k.clock.now();
        this.#check(id, pending, () => {
          if (timeoutMs === undefined || !this.#pending.get(id)?.has(pending)) return;
          const left = Math.max(0, timeoutMs - (this.#k.clock.now() - calledAt));
          pending.timer = this.#k.clock.setTimeout(() => this.#end(pending, undefined, new TroupeError('WAIT_TIMEOUT', `task ${id} did not settle within ${timeoutMs} ms`)), left);
        });
      });
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** The feed's sink: a settling event of a task with pending waits reads it again. */
  readonly onEvents = (events: readonly RuntimeEvent[]): void => {
    for (const event of events) if (event.taskId !== undefined && SETTLING.has(event.type) && this.#pending.has(event.taskId)) this.#check(event.taskId);
  };

  /** The feed's gap (feed.ts #overtaken): a settling event may have gone unread, so every pending wait reads its task again. */
  readonly recheck = (): void => {
    for (const id of this.#pending.keys()) this.#check(id);
  };

  /** Rejects every pending wait (close). */
  rejectAll(error: TroupeError): void {
    for (const set of [...this.#pending.values()]) for (const pending of [...set]) this.#end(pending, undefined, error);
  }

  /** Reads the task and ends its waits if it is settled; `first`: the wait this is the first read of (a failed read fails it). */
  #check(id: string, first?: Pending, answered?: () => void): void {
    this.#k.read(id).then(
      (task) => {
        const set = this.#pending.get(id);
        if (set) {
          if (!task) {
            for (const pending of [...set]) this.#end(pending, undefined, new TroupeError('NOT_FOUND', `no task ${id}`));
          } else if (SETTLED_FOR_WAIT.has(task.state)) {
            for (const pending of [...set]) this.#end(pending, task);
          }
        }
        answered?.();
      },
      (error: unknown) => {
        // A first read that fails fails its wait; a later one leaves the waits to the next event.
        if (first) this.#end(first, undefined, error);
        else this.#k.log.warn({ err: error, taskId: id }, 'reading a settled task for its waits failed');
      },
    );
  }

  #add(pending: Pending): void {
    let set = this.#pending.get(pending.id);
    if (!set) this.#pending.set(pending.id, (set = new Set()));
    set.add(pending);
    this.#k.keepAlive.add();
    pending.unneed = this.#k.need();
  }

  #end(pending: Pending, task: Task | undefined, error?: unknown): void {
    const set = this.#pending.get(pending.id);
    if (!set?.delete(pending)) return;
    if (set.size === 0) this.#pending.delete(pending.id);
    this.#k.keepAlive.drop();
    pending.unneed?.();
    if (pending.timer !== undefined) this.#k.clock.clearTimeout(pending.timer);
    if (pending.onAbort) pending.signal?.removeEventListener('abort', pending.onAbort);
    if (task) pending.resolve(task);
    else pending.reject(error);
  }
}
