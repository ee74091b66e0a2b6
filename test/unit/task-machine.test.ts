import { describe, it, expect } from 'vitest';
import { initialTransition, transition } from 'xstate';
import {
  SETTLED_FOR_WAIT,
  TASK_EVENT_TYPES,
  TASK_STATES,
  TASK_TRANSITIONS,
  TERMINAL_STATES,
  isTerminal,
  nextTaskState,
  taskMachine,
  type TaskEventType,
  type TaskState,
} from '../../machines/task.machine.js';

// Written out independently of TASK_TRANSITIONS so a mistaken edit to the table fails here.
const ALLOWED: ReadonlyArray<[TaskState, TaskEventType, TaskState]> = [
  ['queued', 'START', 'running'],
  ['queued', 'CANCEL', 'cancelled'],
  ['queued', 'DROP', 'dropped'],
  ['queued', 'ATTENTION', 'needs_attention'],
  ['running', 'WAIT', 'waiting'],
  ['running', 'SLEEP', 'sleeping'],
  ['running', 'REQUEUE', 'queued'],
  ['running', 'SUCCEED', 'done'],
  ['running', 'FAIL', 'failed'],
  ['running', 'DROP', 'dropped'],
  ['running', 'CANCEL', 'cancelled'],
  ['waiting', 'RESUME', 'running'],
  ['waiting', 'REQUEUE', 'queued'],
  ['waiting', 'CANCEL', 'cancelled'],
  ['waiting', 'DROP', 'dropped'],
  ['sleeping', 'WAKE', 'queued'],
  ['sleeping', 'CANCEL', 'cancelled'],
  ['sleeping', 'DROP', 'dropped'],
  ['needs_attention', 'REQUEUE', 'queued'],
  ['needs_attention', 'CANCEL', 'cancelled'],
  ['needs_attention', 'DROP', 'dropped'],
  ['failed', 'RETRY', 'queued'],
  ['dropped', 'RETRY', 'queued'],
  ['cancelled', 'RETRY', 'queued'],
];

const ALL_PAIRS = TASK_STATES.flatMap((state) =>
  TASK_EVENT_TYPES.map((event): [TaskState, TaskEventType] => [state, event]),
);

function machineNext(state: TaskState, event: TaskEventType): unknown {
  const from = taskMachine.resolveState({ value: state, context: {} });
  const [next] = transition(taskMachine, from, { type: event });
  return next.value;
}

describe('task transition table', () => {
  it.each(ALLOWED)('%s + %s → %s', (state, event, expected) => {
    expect(nextTaskState(state, event)).toBe(expected);
  });

  it('allows exactly the listed transitions and nothing else', () => {
    const allowed = new Set(ALLOWED.map(([s, e]) => `${s}:${e}`));
    const illegal = ALL_PAIRS.filter(([s, e]) => !allowed.has(`${s}:${e}`));
    expect(illegal.length).toBe(TASK_STATES.length * TASK_EVENT_TYPES.length - ALLOWED.length);
    for (const [state, event] of illegal) {
      expect(nextTaskState(state, event), `${state} + ${event}`).toBeUndefined();
    }
  });

  it.each<[TaskState, TaskEventType]>([
    ['done', 'RETRY'],
    ['done', 'CANCEL'],
    ['queued', 'SUCCEED'],
    ['queued', 'RESUME'],
    ['waiting', 'SUCCEED'],
    ['waiting', 'SLEEP'],
    ['sleeping', 'START'],
    ['cancelled', 'START'],
    ['failed', 'CANCEL'],
    ['needs_attention', 'START'],
  ])('rejects %s + %s', (state, event) => {
    expect(nextTaskState(state, event)).toBeUndefined();
  });

  it('does not treat inherited object keys as events', () => {
    expect(nextTaskState('queued', 'constructor' as TaskEventType)).toBeUndefined();
    expect(nextTaskState('queued', 'toString' as TaskEventType)).toBeUndefined();
  });

  it('is frozen', () => {
    expect(Object.isFrozen(TASK_TRANSITIONS)).toBe(true);
    expect(Object.isFrozen(TASK_TRANSITIONS.running)).toBe(true);
  });
});

describe('terminal and settled states', () => {
  it('terminal states are done, failed, dropped and cancelled', () => {
    expect([...TERMINAL_STATES].sort()).toEqual(['cancelled', 'done', 'dropped', 'failed']);
    for (const state of TASK_STATES) {
      expect(isTerminal(state), state).toBe(TERMINAL_STATES.has(state));
    }
    expect(isTerminal('running')).toBe(false);
    expect(isTerminal('needs_attention')).toBe(false);
  });

  it('wait() settles on terminal states and needs_attention only', () => {
    expect([...SETTLED_FOR_WAIT].sort()).toEqual([
      'cancelled',
      'done',
      'dropped',
      'failed',
      'needs_attention',
    ]);
  });

  it('only RETRY leaves a terminal state, and only back to queued', () => {
    for (const state of TERMINAL_STATES) {
      for (const event of TASK_EVENT_TYPES) {
        const next = nextTaskState(state, event);
        if (event === 'RETRY' && state !== 'done') expect(next).toBe('queued');
        else expect(next, `${state} + ${event}`).toBeUndefined();
      }
    }
  });
});

describe('taskMachine', () => {
  it('is an XState machine with id task, starting queued', () => {
    expect(taskMachine.id).toBe('task');
    expect(Object.keys(taskMachine.states).sort()).toEqual([...TASK_STATES].sort());
    expect(taskMachine.states.done?.type).toBe('final');
    expect(taskMachine.states.failed?.type).toBe('atomic');
    const [initial] = initialTransition(taskMachine);
    expect(initial.value).toBe('queued');
  });

  it.each(ALL_PAIRS)('agrees with the table for %s + %s', (state, event) => {
    expect(machineNext(state, event)).toBe(nextTaskState(state, event) ?? state);
  });
});
