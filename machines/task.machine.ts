import { setup } from 'xstate';

import { TASK_STATES } from './states.js';
export { TASK_STATES } from './states.js';
export type { TaskState } from './states.js';
import type { TaskState } from './states.js';

/** Every event that can move a task; which ones are legal depends on the state. */
export const TASK_EVENT_TYPES = [
  'START',
  'WAIT',
  'RESUME',
  'SLEEP',
  'WAKE',
  'REQUEUE',
  'SUCCEED',
  'FAIL',
  'DROP',
  'CANCEL',
  'ATTENTION',
  'RETRY',
] as const;

/** The name of an event that can move a task. */
export type TaskEventType = (typeof TASK_EVENT_TYPES)[number];

/** A task event as the XState machine receives it. */
export interface TaskEvent {
  type: TaskEventType;
}

/** The task machine keeps no context: the store owns the task record, the machine owns only legality. */
export type TaskContext = Record<string, never>;

/**
 * States where no more work happens. `failed`, `dropped` and `cancelled` still accept a user RETRY,
 * which starts a new run rather than resuming the old one.
 */
export const TERMINAL_STATES: ReadonlySet<TaskState> = new Set<TaskState>([
  'done',
  'failed',
  'dropped',
  'cancelled',
]);

/**
 * States where `wait()` resolves: the terminal ones plus `needs_attention`, because a task there
 * makes no progress until an operator acts, and a caller should not block on that.
 */
export const SETTLED_FOR_WAIT: ReadonlySet<TaskState> = new Set<TaskState>([
  ...TERMINAL_STATES,
  'needs_attention',
]);

/**
 * The one table of allowed transitions: the only authority. The XState machine below is generated
 * from it, and the hot path reads it directly through {@link nextTaskState}.
 */
export const TASK_TRANSITIONS: Readonly<
  Record<TaskState, Readonly<Partial<Record<TaskEventType, TaskState>>>>
> = Object.freeze({
  queued: Object.freeze({
    START: 'running',
    CANCEL: 'cancelled',
    DROP: 'dropped',
    ATTENTION: 'needs_attention',
  }),
  running: Object.freeze({
    WAIT: 'waiting',
    SLEEP: 'sleeping',
    REQUEUE: 'queued',
    SUCCEED: 'done',
    FAIL: 'failed',
    DROP: 'dropped',
    CANCEL: 'cancelled',
  }),
  waiting: Object.freeze({
    RESUME: 'running',
    REQUEUE: 'queued',
    CANCEL: 'cancelled',
    DROP: 'dropped',
  }),
  sleeping: Object.freeze({ WAKE: 'queued', CANCEL: 'cancelled', DROP: 'dropped' }),
  needs_attention: Object.freeze({ REQUEUE: 'queued', CANCEL: 'cancelled', DROP: 'dropped' }),
  done: Object.freeze({}),
  failed: Object.freeze({ RETRY: 'queued' }),
  dropped: Object.freeze({ RETRY: 'queued' }),
  cancelled: Object.freeze({ RETRY: 'queued' }),
});

/** Returns the next state, or undefined when the transition is illegal. */
export function nextTaskState(state: TaskState, event: TaskEventType): TaskState | undefined {
  // Object.hasOwn keeps inherited names such as 'constructor' from reading as legal transitions
  // when a caller passes an unchecked string.
  const row = TASK_TRANSITIONS[state];
  return row !== undefined && Object.hasOwn(row, event) ? row[event] : undefined;
}

/** True for states where no more work happens (see {@link TERMINAL_STATES}). */
export function isTerminal(state: TaskState): boolean {
  return TERMINAL_STATES.has(state);
}

type TaskStateNodeConfig = {
  type?: 'final';
  on: Partial<Record<TaskEventType, TaskState>>;
};

// Built by iterating the table so the machine cannot drift from it; only `done` is final because
// the other terminal states still accept RETRY.
const taskStateNodes = Object.fromEntries(
  TASK_STATES.map((state): [TaskState, TaskStateNodeConfig] => [
    state,
    state === 'done' ? { type: 'final', on: {} } : { on: { ...TASK_TRANSITIONS[state] } },
  ]),
) as Record<TaskState, TaskStateNodeConfig>;

/**
 * The task lifecycle as an XState v5 machine, generated from {@link TASK_TRANSITIONS}. The runtime
 * does not run an actor per task (too slow); this exists for visualisation, inspection and the
 * test that proves machine and table agree.
 */
export const taskMachine = setup({
  types: {
    context: {} as TaskContext,
    events: {} as TaskEvent,
  },
}).createMachine({
  id: 'task',
  initial: 'queued',
  context: {},
  states: taskStateNodes,
});
