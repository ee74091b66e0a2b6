/**
 * Interactive agents: inputs (`rt.sendInput` → `ctx.waitForInput`), subtasks (`ctx.spawn`) and
 * joins (`ctx.join`). An agent call comes from the attempt's thread over comlink and is answered
 * once the step it causes is durable (a wait: once the input arrives or the joined tasks settle).
 *
 * While an agent waits (for an input or for tasks to settle) its task is `waiting`, and what it
 * waits for is stored on the task. If no attempt is live any more (the process died, or shut down,
 * while it waited), the task stays `waiting`; the input or the last settling task then resumes it
 * with a new run, whose agent sees the pending inputs and whose join returns at once.
 *
 * The durable changes are the park and resume steps (src/steps/), run through the pipeline; this
 * module keeps what they leave to the caller: the parked calls and their slots, the join watches,
 * and answering the agent once the step is durable.
 */
import { types } from 'node:util';
import { describeUnserializable, INPUT_TIMED_OUT, type AgentCall, type CallAnswer } from '../../actors/wire.js';
import { isTerminal } from '../../machines/index.js';
import { TroupeError } from '../errors.js';
import { checkId } from '../ids.js';
import type { InboxRecord, TaskRecord } from '../store/records.js';
import { decidePark } from '../steps/park.js';
import { decideResume, type ResumeInput, type ResumeView } from '../steps/resume.js';
import type { StepResult } from '../steps/types.js';
import type { Dispatcher, LiveAttempt } from './dispatcher.js';
import type { EngineParts } from './parts.js';
import type { TaskSpec } from './spec.js';

/** What the interactions use: the slice of the engine's shared parts it reads. */
export const INTERACTION_PARTS = ['log', 'pipeline', 'store', 'table'] as const;
export type InteractionDeps = Pick<EngineParts, (typeof INTERACTION_PARTS)[number]>;

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
  kind: 'input' | 'join';
  /** The input wait's id (an `unwait` names it). */
  waitId: number | undefined;
  /** Answers the parked call on its thread. */
  answer(answer: CallAnswer): void;
}

/** Submits specs the way `rt.submitMany` does. */
export type SubmitFn = (specs: TaskSpec[], where: string) => Promise<Array<{ id: string; agent: string; state: string }>>;

/** See the module comment. */
export class Interactions {
  readonly #k: InteractionDeps;
  readonly #dispatcher: Dispatcher;
  readonly #submit: SubmitFn;
  readonly #parked = new Map<string, Parked>();
  /** Joined task id → the ids of tasks waiting on it. */
  readonly #joiners = new Map<string, Set<string>>();
  /** Input keys whose commit is in flight: `taskId\0key` → the item (resolved once it is durable). */
  readonly #sending = new Map<string, Promise<InboxItem>>();

  constructor(deps: InteractionDeps, dispatcher: Dispatcher, submit: SubmitFn) {
    this.#k = deps;
    this.#dispatcher = dispatcher;
    this.#submit = submit;
  }

  /**
   * An agent's call, as its thread sends it; resolves with the answer for its thread. A call from
   * an attempt that is no longer current (fenced) is answered FENCED at once, so it cannot hang its
   * thread forever.
   */
  call(attemptId: string, token: number, call: AgentCall): Promise<CallAnswer> {
    const attempt = this.#dispatcher.caller(attemptId, token);
    if (!attempt) return Promise.resolve({ ok: false, error: { code: 'FENCED', message: 'this attempt is no longer current' } });
    return this.onCall(attempt, call);
  }

  /** Handles an agent call from a live attempt (its token checked); resolves with the answer for its thread. */
  onCall(attempt: LiveAttempt, call: AgentCall): Promise<CallAnswer> {
    const task = this.#k.table.get(attempt.taskId);
    if (!task) return Promise.resolve(failure(new TroupeError('NOT_FOUND', `no task ${attempt.taskId}`)));
    // A stopping attempt (cancel, timeout, kill, shutdown) gets nothing more: no input is spent on
    // it, and no child is spawned that its cancel would miss.
    if (attempt.stop && call.method !== 'unwait') {
      return Promise.resolve({ ok: false, error: { code: 'ABORTED', message: `the attempt is stopping (${attempt.stop.reason})` } });
    }
    return new Promise<CallAnswer>((answer) => {
      let done: Promise<unknown>;
      try {
        done = this.#handle(task, attempt, call, answer);
      } catch (error) {
        return answer(failure(error));
      }
      done.then(
        (value) => value !== PARKED && answer({ ok: true, value }),
        (error: unknown) => answer(failure(error)),
      );
    });
  }

  /** The attempt ended (settled or abandoned): forget whatever it was waiting for. */
  attemptEnded(taskId: string, attemptId: string): void {
    const parked = this.#parked.get(taskId);
    if (parked?.attempt.attemptId !== attemptId) return;
    this.#parked.delete(taskId);
    // Its thread no longer waits for the answer; settle the call so nothing holds on to it.
    parked.answer({ ok: false, error: { code: 'ATTEMPT_ENDED', message: 'the attempt has ended' } });
    const task = this.#k.table.get(taskId);
    // A detached join (the task keeps waiting with no attempt) still needs its watches.
    if (parked.kind === 'join' && !(task?.state === 'waiting' && task.waitingFor?.kind === 'join')) this.#unwatch(taskId);
  }

  /** Stores an input durably and delivers it to a waiting agent, or resumes a task whose agent is gone. */
  async sendInput(taskId: string, input: InputSpec): Promise<InboxItem> {
    const { idempotencyKey } = checkInputSpec(input);
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
    const sending = this.#send(task, input.message, idempotencyKey);
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
      this.#resumeJoin(task);
    }
  }

  /**
   * At open: each waiting task (by id) has no live attempt. It resumes now, with a new run, if what
   * it waits for is there (pending inputs, settled tasks); else it keeps waiting and is resumed by
   * the input or the join. Returns the promises of the steps it ran.
   */
  rebuild(ids: readonly string[]): Array<Promise<void>> {
    const resumed: Array<Promise<void>> = [];
    for (const id of ids) {
      const task = this.#k.table.get(id);
      if (task?.state !== 'waiting') continue;
      const wanted = task.waitingFor;
      const ready = wanted?.kind === 'join' ? this.#allSettled(wanted.ids) : (task.delivered ?? 0) < (task.inbox ?? 0) || wanted === undefined;
      if (ready) resumed.push(this.#k.pipeline.run(decideResume, { task, live: undefined }, { kind: 'ready' }));
      else if (wanted?.kind === 'join') this.#watch(task.id, wanted.ids);
    }
    return resumed;
  }

  async #handle(task: TaskRecord, attempt: LiveAttempt, call: AgentCall, answer: Parked['answer']): Promise<unknown> {
    switch (call.method) {
      case 'input':
        return this.#input(task, attempt, call.prompt, { waitId: call.waitId, answer });
      case 'unwait':
        return this.#unwait(task, attempt, call.waitId);
      case 'spawn':
        return this.#spawn(task, attempt, call.spec, call.key);
      case 'join':
        return this.#join(task, attempt, call.ids, { waitId: undefined, answer });
    }
  }

  async #input(task: TaskRecord, attempt: LiveAttempt, prompt: unknown, reply: Pick<Parked, 'waitId' | 'answer'>): Promise<unknown> {
    if (this.#parked.has(task.id)) throw new TroupeError('ILLEGAL_TRANSITION', 'the agent is already waiting');
    const { pipeline, store } = this.#k;
    const next = (task.delivered ?? 0) + 1;
    // A pending input is handed over at once (reads see it even while its own commit is in flight).
    const pending = next <= (task.inbox ?? 0) ? store.read.inbox.get([task.id, next]) : undefined;
    const result = pipeline.decide(decidePark, { task, attemptId: attempt.attemptId }, pending === undefined ? { kind: 'input', prompt } : { kind: 'input', prompt, pending });
    if (pending !== undefined) {
      await pipeline.apply(result);
      return pending.message;
    }
    this.#park(task, attempt, 'input', reply);
    await pipeline.apply(result);
    return PARKED;
  }

  async #unwait(task: TaskRecord, attempt: LiveAttempt, waitId: number): Promise<unknown> {
    const parked = this.#parked.get(task.id);
    if (!parked || parked.attempt !== attempt || parked.waitId !== waitId) return 'delivered';
    try {
      await this.#resume(task, parked, { kind: 'unwait' });
    } finally {
      // The input call is over too: its thread counts it as waiting, slot given back, until answered.
      parked.answer(INPUT_TIMED_OUT);
    }
    return 'unwaited';
  }

  async #spawn(task: TaskRecord, attempt: LiveAttempt, spec: Record<string, unknown>, key: string): Promise<unknown> {
    if (typeof spec !== 'object' || spec === null || Array.isArray(spec)) throw new TroupeError('INVALID_INPUT', 'spawn expects a task spec object');
    if ('parentId' in spec) throw new TroupeError('INVALID_INPUT', 'spawn: parentId is set for you');
    const idempotencyKey = key.startsWith('#') ? `spawn:${attempt.attemptId}:${key}` : `spawn:${task.id}:${key}`;
    const submit = () => this.#submit([{ ...(spec as unknown as TaskSpec), parentId: task.id, idempotencyKey }], 'spawn');
    // The child's submit span nests under this attempt's span.
    const [child] = await (attempt.trace === undefined ? submit() : attempt.trace.within(submit));
    return { id: child!.id, agent: child!.agent, state: child!.state };
  }

  async #join(task: TaskRecord, attempt: LiveAttempt, ids: unknown, reply: Pick<Parked, 'waitId' | 'answer'>): Promise<unknown> {
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
    const { pipeline, table } = this.#k;
    const result = pipeline.decide(decidePark, { task, attemptId: attempt.attemptId }, { kind: 'join', ids: list });
    this.#park(task, attempt, 'join', reply);
    this.#watch(task.id, list);
    await pipeline.apply(result);
    // A joined task may have settled while the waiting step committed.
    const current = table.get(task.id);
    if (current?.state === 'waiting' && current.waitingFor?.kind === 'join' && this.#allSettled(list)) this.#resumeJoin(current);
    return PARKED;
  }

  /** The agent waits on the host: its call is answered later, and its attempt gives its slot back. */
  #park(task: TaskRecord, attempt: LiveAttempt, kind: Parked['kind'], reply: Pick<Parked, 'waitId' | 'answer'>): void {
    this.#parked.set(task.id, { attempt, kind, ...reply });
    this.#dispatcher.park(attempt);
  }

  /** A parked agent runs again (`unwait`, or its joined tasks settled): the resume step, and its slot back. */
  #resume(task: TaskRecord, parked: Parked, input: ResumeInput): Promise<void> {
    const live = this.#liveOf(task);
    this.#parked.delete(task.id);
    const durable = this.#k.pipeline.run(decideResume, { task, live }, input);
    this.#dispatcher.unpark(parked.attempt);
    return durable;
  }

  /** The task's live attempt as the resume step sees it. */
  #liveOf(task: TaskRecord): ResumeView['live'] {
    const attempt = this.#dispatcher.attemptOf(task);
    if (attempt === undefined) return undefined;
    return { attemptId: attempt.attemptId, parked: this.#parked.get(task.id)?.attempt === attempt, stopping: attempt.stop !== undefined };
  }

  /** Stores an input (the resume step): delivered to an agent parked on it, or it resumes a task whose agent is gone. */
  async #send(task: TaskRecord, message: unknown, idempotencyKey: string | undefined): Promise<InboxItem> {
    const { pipeline } = this.#k;
    const parked = this.#parked.get(task.id);
    const result = pipeline.decide(decideResume, { task, live: this.#liveOf(task) }, idempotencyKey === undefined ? { kind: 'input', message } : { kind: 'input', message, idempotencyKey });
    const item = inboxOf(result);
    const delivered = item.deliveredAt !== undefined;
    if (delivered) {
      this.#parked.delete(task.id);
      this.#dispatcher.unpark(parked!.attempt);
    }
    await pipeline.apply(result);
    if (delivered) parked!.answer({ ok: true, value: message });
    return viewOf(task.id, item);
  }

  /** The tasks a waiting task joined have all settled: its parked agent gets their outcomes, or (with no attempt) it resumes with a new run. */
  #resumeJoin(task: TaskRecord): void {
    const ids = (task.waitingFor as { ids: string[] }).ids;
    const parked = this.#parked.get(task.id);
    this.#unwatch(task.id);
    const failed = (error: unknown) => this.#k.log.error({ err: error, taskId: task.id }, 'resuming a joined task failed');
    try {
      if (parked) {
        this.#resume(task, parked, { kind: 'ready' }).then(() => parked.answer({ ok: true, value: this.#outcomes(ids) }), failed);
      } else if (!this.#dispatcher.attemptOf(task)) {
        // (A live attempt that is not parked is ending: its settle decides the task.)
        this.#k.pipeline.run(decideResume, { task, live: undefined }, { kind: 'ready' }).catch(failed);
      }
    } catch (error) {
      failed(error);
    }
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

/** Checks what `rt.sendInput()` was given (INVALID_INPUT otherwise), on either store. */
export function checkInputSpec(input: InputSpec): InputSpec {
  if (typeof input !== 'object' || input === null || types.isProxy(input)) throw new TroupeError('INVALID_INPUT', 'sendInput expects { message, idempotencyKey? }');
  // Read once, as plain data: a getter that throws is bad input, not a crash.
  const problem = describeUnserializable(input, 'input');
  if (problem) throw new TroupeError('INVALID_INPUT', `${problem}; an input must be plain data`);
  for (const key of Object.keys(input)) if (key !== 'message' && key !== 'idempotencyKey') throw new TroupeError('INVALID_INPUT', `sendInput: ${key} is not an input field`);
  if (input.idempotencyKey !== undefined) checkId(input.idempotencyKey, 'sendInput: idempotencyKey');
  return input;
}

/** Marks a call the host answers later (an input or a join that has to wait). */
const PARKED = Symbol('parked');

function inputKeyOf(taskId: string, key: string): string {
  return `input:${taskId}:${key}`;
}

/** The inbox item a resume step stored. */
function inboxOf(result: StepResult): InboxRecord {
  for (const change of result.changes) if (change.kind === 'inbox') return change.item;
  throw new TroupeError('STORE_FAILED', 'the input step stored no inbox item');
}

function viewOf(taskId: string, item: InboxRecord): InboxItem {
  const view: InboxItem = { taskId, seq: item.seq, message: item.message, at: item.at, delivered: item.deliveredAt !== undefined };
  if (item.idempotencyKey !== undefined) view.idempotencyKey = item.idempotencyKey;
  return view;
}

function failure(error: unknown): CallAnswer {
  if (error instanceof TroupeError) return { ok: false, error: { code: error.code, message: error.message } };
  return { ok: false, error: { code: 'AGENT_CALL_FAILED', message: error instanceof Error ? error.message : String(error) } };
}
