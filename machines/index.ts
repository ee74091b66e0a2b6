import { instanceMachine } from './instance.machine.js';
import { taskMachine } from './task.machine.js';

/**
 * Every machine with the version of its snapshot shape. Persisted snapshots record the version so
 * the store can migrate or discard them when a machine changes incompatibly.
 */
export const MACHINES = {
  task: { machine: taskMachine, version: 1 },
  instance: { machine: instanceMachine, version: 1 },
} as const;

/** The name of a registered machine. */
export type MachineName = keyof typeof MACHINES;

export {
  TASK_STATES,
  TASK_EVENT_TYPES,
  TERMINAL_STATES,
  SETTLED_FOR_WAIT,
  TASK_TRANSITIONS,
  nextTaskState,
  isTerminal,
  taskMachine,
} from './task.machine.js';
export type { TaskState, TaskEventType, TaskEvent, TaskContext } from './task.machine.js';

export {
  AGENT_FAULT_EXITS,
  RECENT_FAILURES_LIMIT,
  instanceMachine,
  instanceStatus,
  withFailedAttemptThreshold,
  instanceAdmits,
  attemptMoves,
  durableFingerprint,
} from './instance.machine.js';
export type {
  AttemptExit,
  AttemptBucket,
  AttemptEvent,
  AttemptChange,
  AttemptsEvent,
  InstanceInput,
  InstanceContext,
  InstanceEvent,
  InstanceEmitted,
  InstanceSnapshotLike,
  InstanceStatus,
} from './instance.machine.js';
