/**
 * An attempt inside a worker thread, and the context its agent receives. Both are built once per
 * attempt, so they stay cheap: the abort signal, the logger and each method are made only when the
 * agent first touches them (most agents never use most of the context). A method is handed out as
 * a function bound to its attempt, so an agent may destructure the context
 * (`const { log, signal, progress } = ctx`).
 */
import { AgentError, type AgentContext, type AgentLogger, type JoinedTask, type SpawnedTask, type WaitForInputOptions } from './agent.js';
import { clearLongTimeout, setLongTimeout, type LongTimeout } from './long-timeout.js';
import { messageOf, Report, type AgentCall, type LogLevel, type WireLogLine } from './wire.js';
import { safeFields } from './results.js';

const PROGRESS_INTERVAL_MS = 100;
const HEARTBEAT_INTERVAL_MS = 1_000;

/** What an attempt needs from its thread. */
export interface ThreadSide {
  /** Queues a report for the host (sent with the turn's batch). */
  report(attempt: WorkerAttempt, kind: number, payload: unknown): void;
  /** Sends the attempt's pending lines and the turn's reports now, then the call; resolves with the host's answer. */
  call(attempt: WorkerAttempt, call: AgentCall): Promise<unknown>;
  /** Flushes this attempt's lines and progress at the end of the turn. */
  flushSoon(attempt: WorkerAttempt): void;
  /** How often this thread heartbeats (the host's lease / 3). */
  readonly heartbeatMs: number;
}

/** See the module comment. */
export class WorkerAttempt {
  readonly attemptId: string;
  /** Log lines and progress not yet reported. */
  lines: WireLogLine[] = [];
  pendingProgress: { value: number; message: string | undefined } | undefined = undefined;
  lastProgressAt = 0;
  progressTimer: NodeJS.Timeout | undefined = undefined;
  lastHeartbeatAt = 0;
  /** Its BEGIN report is not sent yet: it is left out if the attempt ends in the same turn. */
  beginPending = true;
  /** Queued in its thread's flush set. */
  flushQueued = false;
  ended = false;
  /** Calls in flight that wait on the host (input, join): while any is, the attempt holds no slot. */
  waiting = 0;
  /** W3C trace context of its attempt's span, when the host traces it. */
  traceparent: string | undefined = undefined;
  tracestate: string | undefined = undefined;
  #controller: AbortController | undefined;
  #abortedWith: Error | undefined;

  constructor(
    readonly agent: number,
    readonly taskId: string,
    readonly run: number,
    readonly attempt: number,
    readonly token: number,
    readonly input: unknown,
    readonly workspace: string | undefined,
    readonly followUp: unknown,
  ) {
    this.attemptId = `${taskId}:${run}:${attempt}`;
  }

  /** `ctx.signal`, made on first use: an AbortController is the costliest part of an attempt. */
  get signal(): AbortSignal {
    if (!this.#controller) {
      this.#controller = new AbortController();
      if (this.#abortedWith) this.#controller.abort(this.#abortedWith);
    }
    return this.#controller.signal;
  }

  get aborted(): boolean {
    return this.#abortedWith !== undefined;
  }

  abort(reason: string): void {
    if (this.#abortedWith) return;
    this.#abortedWith = new Error(`attempt ${reason}`, { cause: reason });
    this.#controller?.abort(this.#abortedWith);
  }
}

/** The context an agent receives: see the module comment. */
export class AttemptContext implements AgentContext {
  readonly #a: WorkerAttempt;
  readonly #thread: ThreadSide;
  #log: AgentLogger | undefined;
  #spawned = 0;
  #nextWait = 1;

  constructor(attempt: WorkerAttempt, thread: ThreadSide) {
    this.#a = attempt;
    this.#thread = thread;
  }

  get taskId(): string {
    return this.#a.taskId;
  }
  get runId(): string {
    return `${this.#a.taskId}:${this.#a.run}`;
  }
  get attemptId(): string {
    return this.#a.attemptId;
  }
  get attempt(): number {
    return this.#a.attempt;
  }
  get workspace(): string | undefined {
    return this.#a.workspace;
  }
  get followUp(): unknown {
    return this.#a.followUp;
  }
  get signal(): AbortSignal {
    return this.#a.signal;
  }
  get traceparent(): string | undefined {
    return this.#a.traceparent;
  }
  get tracestate(): string | undefined {
    return this.#a.tracestate;
  }

  get log(): AgentLogger {
    return (this.#log ??= { debug: this.#writer('debug'), info: this.#writer('info'), warn: this.#writer('warn'), error: this.#writer('error') });
  }

  /** Functions handed out, made on first use. */
  #fns: Partial<Pick<AgentContext, 'progress' | 'heartbeat' | 'waitForInput' | 'inputs' | 'spawn' | 'join'>> | undefined;

  get progress(): AgentContext['progress'] {
    const fns = (this.#fns ??= {});
    return (fns.progress ??= (value, message) => this.#progressImpl(value, message));
  }
  get heartbeat(): AgentContext['heartbeat'] {
    const fns = (this.#fns ??= {});
    return (fns.heartbeat ??= () => this.#heartbeatImpl());
  }
  get waitForInput(): AgentContext['waitForInput'] {
    const fns = (this.#fns ??= {});
    return (fns.waitForInput ??= (options) => this.#waitForInputImpl(options));
  }
  get inputs(): AgentContext['inputs'] {
    const fns = (this.#fns ??= {});
    return (fns.inputs ??= () => this.#inputsImpl());
  }
  get spawn(): AgentContext['spawn'] {
    const fns = (this.#fns ??= {});
    return (fns.spawn ??= (spec) => this.#spawnImpl(spec));
  }
  get join(): AgentContext['join'] {
    const fns = (this.#fns ??= {});
    // One outcome per id, in order: a tuple of the ids' length (see AgentContext.join).
    return (fns.join ??= ((ids: readonly string[]) => this.#joinImpl(ids)) as AgentContext['join']);
  }

  #writer(level: LogLevel): (message: string, fields?: Record<string, unknown>) => void {
    const a = this.#a;
    return (message, fields) => {
      if (a.ended) return;
      const text = typeof message === 'string' ? message : messageOf(message);
      a.lines.push(fields === undefined ? [level, text, Date.now()] : [level, text, Date.now(), safeFields(fields)]);
      this.#thread.flushSoon(a);
    };
  }

  #progressImpl(value: number, message?: string): void {
    const a = this.#a;
    if (a.ended || typeof value !== 'number' || !Number.isFinite(value)) return;
    // A message is a string: anything else is stored as its text (a value the store could not hold must not reach it).
    a.pendingProgress = { value: Math.min(1, Math.max(0, value)), message: message === undefined || typeof message === 'string' ? message : messageOf(message) };
    const wait = a.lastProgressAt + PROGRESS_INTERVAL_MS - Date.now();
    if (wait <= 0) this.#thread.flushSoon(a);
    else
      a.progressTimer ??= setTimeout(() => {
        a.progressTimer = undefined;
        this.#thread.flushSoon(a);
      }, wait);
  }

  #heartbeatImpl(): void {
    const a = this.#a;
    const now = Date.now();
    if (a.ended || now - a.lastHeartbeatAt < Math.min(HEARTBEAT_INTERVAL_MS, this.#thread.heartbeatMs)) return;
    a.lastHeartbeatAt = now;
    this.#thread.report(a, Report.HEARTBEAT, now);
  }

  async #waitForInputImpl(options: WaitForInputOptions = {}): Promise<unknown> {
    const waitId = this.#nextWait++;
    const reply = this.#thread.call(this.#a, options.prompt === undefined ? { method: 'input', waitId } : { method: 'input', waitId, prompt: options.prompt });
    const { timeoutMs } = options;
    if (timeoutMs === undefined) return this.#abortable(reply);
    const timeout = () => new AgentError(`no input within ${timeoutMs} ms`, { code: 'INPUT_TIMEOUT' });
    let timer: LongTimeout | undefined;
    const timedOut = new Promise<never>((_, reject) => {
      timer = setLongTimeout(() => {
        // Ask the host to stop waiting; if an input was already on its way, it still wins.
        this.#thread.call(this.#a, { method: 'unwait', waitId }).then(
          (value) => value === 'unwaited' && reject(timeout()),
          () => undefined,
        );
      }, timeoutMs);
    });
    // Once it stopped waiting, the host answers the input call too, maybe before the unwait: the same error.
    const answered = reply.catch((error: unknown) => {
      throw (error as AgentError | undefined)?.code === 'INPUT_TIMEOUT' ? timeout() : error;
    });
    try {
      return await this.#abortable(Promise.race([answered, timedOut]));
    } finally {
      clearLongTimeout(timer);
    }
  }

  #inputsImpl(): AsyncIterable<unknown> {
    const { signal } = this.#a;
    const waitForInput = this.waitForInput;
    return (async function* () {
      while (!signal.aborted) {
        try {
          yield await waitForInput();
        } catch (error) {
          if (signal.aborted) return;
          throw error;
        }
      }
    })();
  }

  async #spawnImpl(spec: Parameters<AgentContext['spawn']>[0]): Promise<SpawnedTask> {
    this.#spawned++;
    const key = typeof spec?.idempotencyKey === 'string' ? spec.idempotencyKey : `#${this.#spawned}`;
    return this.#abortable(this.#thread.call(this.#a, { method: 'spawn', spec: spec as Record<string, unknown>, key })) as Promise<SpawnedTask>;
  }

  async #joinImpl(ids: readonly string[]): Promise<JoinedTask[]> {
    return this.#abortable(this.#thread.call(this.#a, { method: 'join', ids: [...ids] })) as Promise<JoinedTask[]>;
  }

  /** Rejects when the attempt is aborted, so an agent blocked on the host still sees cancellation. */
  #abortable<T>(promise: Promise<T>): Promise<T> {
    const { signal } = this.#a;
    const aborted = () => new AgentError(`aborted: ${String((signal.reason as Error)?.message ?? signal.reason)}`, { code: 'ABORTED' });
    if (signal.aborted) return Promise.reject(aborted());
    return new Promise<T>((resolve, reject) => {
      const onAbort = () => reject(aborted());
      signal.addEventListener('abort', onAbort, { once: true });
      promise.then(
        (value) => {
          signal.removeEventListener('abort', onAbort);
          resolve(value);
        },
        (error: unknown) => {
          signal.removeEventListener('abort', onAbort);
          reject(error as Error);
        },
      );
    });
  }
}
