/**
 * Interactive agents: inputs (`rt.sendInput` → `ctx.waitForInput`), subtasks (`ctx.spawn`) and
 * joins (`ctx.join`). An agent call arrives as a channel message from the attempt's thread and is
 * answered on the same thread once the step it causes is durable.
 *
 * While an agent waits (for an input or for tasks to settle) its task is `waiting`, and what it
 * waits for is stored on the task. If no attempt is live any more (the process died, or shut down,
 * while it waited), the task stays `waiting`; the input or the last settling task then resumes it
 * with a new run, whose agent sees the pending inputs and whose join returns at once.
 */
import { describeUnserializable, type AgentCall, type HostReply, type WorkerMessage } from '../../actors/wire.js';
import { isTerminal } from '../../machines/index.js';
import { TroupeError } from '../errors.js';
import type { InboxRecord, TaskRecord } from '../store/records.js';
import type { StepWriter } from '../store/port.js';
import type { Dispatcher, LiveAttempt } from './dispatcher.js';
import { beginRun, entryOf, transition, writeQueued, type Kernel } from './kernel.js';
import type { TaskSpec } from './spec.js';

type CallMessage = Extract<WorkerMessage, { t: 'call' }>;

/** What `rt.sendInput()` takes. */
export interface InputSpec {
  /** Plain data. */
  message: unknown;
  /** A second send with the same key returns the first item and stores nothing. */
  idempotencyKey?: string;
}

/** An input as stored in the task's inbox. */
export interface InboxItem {
  taskId: string;
  seq: number;
  message: unknown;
  idempotencyKey?: string;
  at: number;
  /** Whether an attempt has received it. */
  delivered: boolean;
}

/** An agent call parked until an input arrives or joined tasks settle. */
interface Parked {
  attempt: LiveAttempt;
  threadId: number;
  callId: number;
  kind: 'input' | 'join';
}

/** Submits specs the way `rt.submitMany` does. */
export type SubmitFn = (specs: TaskSpec[], where: string) => Promise<Array<{ id: string; agent: string; state: string }>>;

const MAX_KEY = 512;

/** See the module comment. */
export class Interactions {
  readonly #k: Kernel;
  readonly #dispatcher: Dispatcher;
  readonly #submit: SubmitFn;
  readonly #parked = new Map<string, Parked>();
  /** Joined task id → the ids of tasks waiting on it. */
  readonly #joiners = new Map<string, Set<string>>();
  /** Input keys whose commit is in flight: `taskId\0key` → the item. */
  readonly #sending = new Map<string, Promise<InboxItem>>();
  /** Inbox items whose commit is in flight (`taskId\0seq`): an agent may ask for one before it lands. */
  readonly #unlanded = new Map<string, InboxRecord>();

  constructor(kernel: Kernel, dispatcher: Dispatcher, submit: SubmitFn) {
    this.#k = kernel;
    this.#dispatcher = dispatcher;
    this.#submit = submit;
  }

  /** Handles an agent call from a live attempt (the dispatcher has checked its token). */
  onCall(attempt: LiveAttempt, message: CallMessage, threadId: number): void {
    const reply = (value: unknown) => this.#k.pool.reply(threadId, { t: 'reply', callId: message.callId, ok: true, value });
    const fail = (error: unknown) => this.#k.pool.reply(threadId, { t: 'reply', callId: message.callId, ok: false, error: errorOf(error) });
    const task = this.#k.table.get(attempt.taskId);
    if (!task) return fail(new TroupeError('NOT_FOUND', `no task ${attempt.taskId}`));
    // A stopping attempt (cancel, timeout, kill, shutdown) gets nothing more: no input is spent on
    // it, and no child is spawned that its cancel would miss.
    if (attempt.stop && message.call.method !== 'unwait') {
      return this.#k.pool.reply(threadId, { t: 'reply', callId: message.callId, ok: false, error: { code: 'ABORTED', message: `the attempt is stopping (${attempt.stop.reason})` } });
    }
    let done: Promise<unknown>;
    try {
      done = this.#handle(task, attempt, message.call, { threadId, callId: message.callId });
    } catch (error) {
      return fail(error);
    }
    done.then((value) => value !== PARKED && reply(value), fail);
  }

  /** The attempt ended (settled or abandoned): forget whatever it was waiting for. */
  attemptEnded(taskId: string, attemptId: string): void {
    const parked = this.#parked.get(taskId);
    if (parked?.attempt.attemptId !== attemptId) return;
    this.#parked.delete(taskId);
    const task = this.#k.table.get(taskId);
    // A detached join (the task keeps waiting with no attempt) still needs its watches.
    if (parked.kind === 'join' && !(task?.state === 'waiting' && task.waitingFor?.kind === 'join')) this.#unwatch(taskId);
  }

  /** Stores an input durably and delivers it to a waiting agent, or resumes a task whose agent is gone. */
  async sendInput(taskId: string, input: InputSpec): Promise<InboxItem> {
    if (typeof input !== 'object' || input === null) throw new TroupeError('INVALID_INPUT', 'sendInput expects { message, idempotencyKey? }');
    for (const key of Object.keys(input)) if (key !== 'message' && key !== 'idempotencyKey') throw new TroupeError('INVALID_INPUT', `sendInput: ${key} is not an input field`);
    const problem = describeUnserializable(input.message, 'input.message');
    if (problem) throw new TroupeError('INVALID_INPUT', `${problem}; an input must be plain data`);
    const { idempotencyKey } = input;
    if (idempotencyKey !== undefined && (typeof idempotencyKey !== 'string' || idempotencyKey.length === 0 || idempotencyKey.length > MAX_KEY)) {
      throw new TroupeError('INVALID_INPUT', `sendInput: idempotencyKey must be a non-empty string of at most ${MAX_KEY} characters`);
    }
    const { table, store } = this.#k;
    const task = table.get(taskId);
    const current = task ?? store.read.tasks.get(taskId);
    if (!current) throw new TroupeError('NOT_FOUND', `no task ${taskId}`);
    // A repeated key returns its item even after the task settled: the send already happened.
    if (idempotencyKey !== undefined) {
      const sending = this.#sending.get(`${taskId}\u0000${idempotencyKey}`);
      if (sending) return sending;
      const seq = store.read.idempotency.get(inputKeyOf(taskId, idempotencyKey));
      const item = seq === undefined ? undefined : store.read.inbox.get([taskId, Number(seq)]);
      if (item) return viewOf(taskId, item);
    }
    if (!task || isTerminal(task.state)) throw new TroupeError('ILLEGAL_TRANSITION', `task ${taskId} is ${current.state}; it takes no more input`);
    const sending = this.#store(task, input.message, idempotencyKey);
    if (idempotencyKey === undefined) return sending;
    const key = `${taskId}\u0000${idempotencyKey}`;
    this.#sending.set(key, sending);
    return sending.finally(() => this.#sending.delete(key));
  }

  /** A task reached a terminal state: resume the tasks joined on it once all they wait for is done. */
  onSettled(taskId: string): void {
    const joiners = this.#joiners.get(taskId);
    if (!joiners) return;
    this.#joiners.delete(taskId);
    for (const id of joiners) {
      const task = this.#k.table.get(id);
      if (task?.state !== 'waiting' || task.waitingFor?.kind !== 'join') continue;
      if (!this.#allSettled(task.waitingFor.ids)) continue;
      void this.#resumeJoin(task).catch((error: unknown) => this.#k.log.error({ err: error, taskId: id }, 'resuming a joined task failed'));
    }
  }

  /**
   * At open: a waiting task has no live attempt. It resumes now if what it waits for is there
   * (pending inputs, settled tasks); else it keeps waiting and is resumed by the input or the join.
   */
  rebuild(waiting: readonly TaskRecord[], w: StepWriter, now: number): TaskRecord[] {
    const resumed: TaskRecord[] = [];
    for (const task of waiting) {
      const wanted = task.waitingFor;
      const ready = wanted?.kind === 'join' ? this.#allSettled(wanted.ids) : (task.delivered ?? 0) < (task.inbox ?? 0) || wanted === undefined;
      if (ready) {
        this.#newRun(w, task, now);
        resumed.push(task);
      } else if (wanted?.kind === 'join') {
        this.#watch(task.id, wanted.ids);
      }
    }
    return resumed;
  }

  async #handle(task: TaskRecord, attempt: LiveAttempt, call: AgentCall, reply: { threadId: number; callId: number }): Promise<unknown> {
    switch (call.method) {
      case 'input':
        return this.#input(task, attempt, call.prompt, reply);
      case 'unwait':
        return this.#unwait(task, attempt, call.inputCallId);
      case 'spawn':
        return this.#spawn(task, attempt, call.spec, call.key);
      case 'join':
        return this.#join(task, attempt, call.ids, reply);
    }
  }

  async #input(task: TaskRecord, attempt: LiveAttempt, prompt: unknown, reply: { threadId: number; callId: number }): Promise<unknown> {
    if (this.#parked.has(task.id)) throw new TroupeError('ILLEGAL_TRANSITION', 'the agent is already waiting');
    const delivered = task.delivered ?? 0;
    const { store, clock } = this.#k;
    const now = clock.now();
    if (delivered < (task.inbox ?? 0)) {
      // An input is pending: hand it over now, recording the delivery first.
      const item = this.#unlanded.get(`${task.id}\u0000${delivered + 1}`) ?? store.read.inbox.get([task.id, delivered + 1]);
      if (!item) throw new TroupeError('STORE_FAILED', `inbox item ${delivered + 1} of task ${task.id} is missing`);
      await store.commit((w) => this.#deliver(w, task, item, attempt, now));
      return item.message;
    }
    this.#park(task, attempt, { kind: 'input', ...(prompt === undefined ? {} : { prompt }) }, 'input', reply);
    await store.commit((w) => {
      w.putTask(task);
      w.event('task.waiting', { at: now, taskId: task.id, attemptId: attempt.attemptId, data: { for: 'input', prompt } });
    });
    return PARKED;
  }

  async #unwait(task: TaskRecord, attempt: LiveAttempt, inputCallId: number): Promise<unknown> {
    const parked = this.#parked.get(task.id);
    if (!parked || parked.attempt !== attempt || parked.callId !== inputCallId) return 'delivered';
    this.#parked.delete(task.id);
    await this.#resume(task, attempt);
    return 'unwaited';
  }

  async #spawn(task: TaskRecord, attempt: LiveAttempt, spec: Record<string, unknown>, key: string): Promise<unknown> {
    if (typeof spec !== 'object' || spec === null || Array.isArray(spec)) throw new TroupeError('INVALID_INPUT', 'spawn expects a task spec object');
    if ('parentId' in spec) throw new TroupeError('INVALID_INPUT', 'spawn: parentId is set for you');
    const idempotencyKey = key.startsWith('#') ? `spawn:${attempt.attemptId}:${key}` : `spawn:${task.id}:${key}`;
    const [child] = await this.#submit([{ ...(spec as unknown as TaskSpec), parentId: task.id, idempotencyKey }], 'spawn');
    return { id: child!.id, agent: child!.agent, state: child!.state };
  }

  async #join(task: TaskRecord, attempt: LiveAttempt, ids: unknown, reply: { threadId: number; callId: number }): Promise<unknown> {
    if (!Array.isArray(ids) || ids.some((id) => typeof id !== 'string' || id.length === 0)) throw new TroupeError('INVALID_INPUT', 'join expects an array of task ids');
    if (this.#parked.has(task.id)) throw new TroupeError('ILLEGAL_TRANSITION', 'the agent is already waiting');
    for (const id of ids as string[]) {
      const joined = this.#record(id);
      if (!joined) throw new TroupeError('NOT_FOUND', `join: no task ${id}`);
      // Only children: joining any task could close a cycle (a child joining its parent) that waits forever.
      if (joined.parentId !== task.id) throw new TroupeError('INVALID_INPUT', `join: task ${id} is not a child of ${task.id}`);
    }
    const list = [...(ids as string[])];
    if (this.#allSettled(list)) return this.#outcomes(list);
    const now = this.#k.clock.now();
    this.#park(task, attempt, { kind: 'join', ids: list }, 'join', reply);
    this.#watch(task.id, list);
    await this.#k.store.commit((w) => {
      w.putTask(task);
      w.event('task.waiting', { at: now, taskId: task.id, attemptId: attempt.attemptId, data: { for: 'join', ids: list } });
    });
    // A joined task may have settled while the waiting step committed.
    if (this.#allSettled(list) && task.state === 'waiting' && task.waitingFor?.kind === 'join') {
      void this.#resumeJoin(task).catch((error: unknown) => this.#k.log.error({ err: error, taskId: task.id }, 'resuming a joined task failed'));
    }
    return PARKED;
  }

  #park(task: TaskRecord, attempt: LiveAttempt, waitingFor: NonNullable<TaskRecord['waitingFor']>, kind: Parked['kind'], reply: { threadId: number; callId: number }): void {
    const { table, clock } = this.#k;
    transition(task, 'WAIT', clock.now());
    table.moved(task, 'running');
    task.waitingFor = waitingFor;
    this.#parked.set(task.id, { attempt, kind, ...reply });
    this.#dispatcher.park(attempt);
  }

  /** Moves a task with a live attempt back to running, durably. */
  async #resume(task: TaskRecord, attempt: LiveAttempt): Promise<void> {
    const { table, clock, store } = this.#k;
    transition(task, 'RESUME', clock.now());
    table.moved(task, 'waiting');
    delete task.waitingFor;
    this.#dispatcher.unpark(attempt);
    await store.commit((w) => w.putTask(task));
  }

  #deliver(w: StepWriter, task: TaskRecord, item: InboxRecord, attempt: LiveAttempt, now: number): void {
    task.delivered = item.seq;
    w.putInbox(task.id, { ...item, deliveredAt: now, deliveredTo: attempt.attemptId });
    w.putTask(task);
  }

  async #store(task: TaskRecord, message: unknown, idempotencyKey: string | undefined): Promise<InboxItem> {
    const { store, clock, table, governor } = this.#k;
    const now = clock.now();
    const seq = (task.inbox ?? 0) + 1;
    task.inbox = seq;
    const item: InboxRecord = { seq, message, at: now, ...(idempotencyKey === undefined ? {} : { idempotencyKey }) };
    const parked = this.#parked.get(task.id);
    // Never to an attempt that is stopping: its wait has been (or is being) aborted.
    const deliverNow = parked?.kind === 'input' && !parked.attempt.stop && (task.delivered ?? 0) + 1 === seq;
    // No live attempt waits for it: the input itself resumes the task with a new run.
    const resumeRun = task.state === 'waiting' && task.waitingFor?.kind === 'input' && !parked && !this.#dispatcher.attemptOf(task);
    if (deliverNow) {
      this.#parked.delete(task.id);
      transition(task, 'RESUME', now);
      table.moved(task, 'waiting');
      delete task.waitingFor;
      this.#dispatcher.unpark(parked.attempt);
    }
    const unlanded = `${task.id}\u0000${seq}`;
    this.#unlanded.set(unlanded, item);
    await store.commit((w) => {
      if (deliverNow) this.#deliver(w, task, item, parked.attempt, now);
      else w.putInbox(task.id, item);
      if (idempotencyKey !== undefined) w.putIdempotency(inputKeyOf(task.id, idempotencyKey), String(seq));
      w.event('task.input', { at: now, taskId: task.id, data: { seq, idempotencyKey, delivered: deliverNow } });
      if (resumeRun) this.#newRun(w, task, now);
      else w.putTask(task);
    }).finally(() => this.#unlanded.delete(unlanded));
    if (deliverNow) this.#k.pool.reply(parked.threadId, { t: 'reply', callId: parked.callId, ok: true, value: message } satisfies HostReply);
    if (resumeRun && task.state === 'queued' && !governor.has(task.id)) {
      governor.enqueue(entryOf(task));
      this.#k.pump();
    }
    return viewOf(task.id, deliverNow ? { ...item, deliveredAt: now } : item);
  }

  async #resumeJoin(task: TaskRecord): Promise<void> {
    const ids = (task.waitingFor as { ids: string[] }).ids;
    const parked = this.#parked.get(task.id);
    this.#unwatch(task.id);
    if (parked) {
      this.#parked.delete(task.id);
      await this.#resume(task, parked.attempt);
      this.#k.pool.reply(parked.threadId, { t: 'reply', callId: parked.callId, ok: true, value: this.#outcomes(ids) });
      return;
    }
    if (this.#dispatcher.attemptOf(task)) return;
    await this.#k.store.commit((w) => this.#newRun(w, task, this.#k.clock.now()));
    if (task.state === 'queued' && !this.#k.governor.has(task.id)) {
      this.#k.governor.enqueue(entryOf(task));
      this.#k.pump();
    }
  }

  /** waiting → queued as a new run (reason `resume`), written into `w`. */
  #newRun(w: StepWriter, task: TaskRecord, now: number): void {
    transition(task, 'REQUEUE', now);
    this.#k.table.moved(task, 'waiting');
    delete task.waitingFor;
    beginRun(task, 'resume', now);
    writeQueued(w, task, { run: task.runs, reason: 'resume' }, now);
  }

  #watch(taskId: string, ids: readonly string[]): void {
    for (const id of ids) {
      const joined = this.#record(id);
      if (!joined || isTerminal(joined.state)) continue;
      let set = this.#joiners.get(id);
      if (!set) this.#joiners.set(id, (set = new Set()));
      set.add(taskId);
    }
  }

  /** Forgets a task's join watches (it resumed, settled, or stopped waiting). */
  #unwatch(taskId: string): void {
    for (const [id, set] of this.#joiners) {
      if (set.delete(taskId) && set.size === 0) this.#joiners.delete(id);
    }
  }

  #record(id: string): TaskRecord | undefined {
    return this.#k.table.get(id) ?? this.#k.store.read.tasks.get(id);
  }

  /** Whether every task is terminal (a settled task still in the table counts once its commit is in flight). */
  #allSettled(ids: readonly string[]): boolean {
    return ids.every((id) => {
      const task = this.#record(id);
      return task === undefined || isTerminal(task.state);
    });
  }

  #outcomes(ids: readonly string[]): unknown[] {
    return ids.map((id) => {
      const task = this.#record(id);
      if (!task) return { id, state: 'unknown' };
      const out: Record<string, unknown> = { id, state: task.state };
      if (task.output !== undefined) out.output = task.output;
      if (task.result !== undefined) out.result = task.result;
      if (task.error !== undefined) out.error = { code: task.error.code, message: task.error.message };
      return out;
    });
  }
}

/** Marks a call the host answers later (an input or a join that has to wait). */
const PARKED = Symbol('parked');

function inputKeyOf(taskId: string, key: string): string {
  return `input:${taskId}:${key}`;
}

function viewOf(taskId: string, item: InboxRecord): InboxItem {
  const view: InboxItem = { taskId, seq: item.seq, message: item.message, at: item.at, delivered: item.deliveredAt !== undefined };
  if (item.idempotencyKey !== undefined) view.idempotencyKey = item.idempotencyKey;
  return view;
}

function errorOf(error: unknown): { code: string; message: string } {
  if (error instanceof TroupeError) return { code: error.code, message: error.message };
  return { code: 'AGENT_CALL_FAILED', message: error instanceof Error ? error.message : String(error) };
}
