/**
 * The task states and attempt exits as plain values and types, with no XState: what the public
 * types refer to (a user's program compiles against these without XState's declarations).
 */

/** Every state a task can be in, in lifecycle order. */
export const TASK_STATES = [
  'queued',
  'running',
  'waiting',
  'sleeping',
  'needs_attention',
  'done',
  'failed',
  'dropped',
  'cancelled',
] as const;

/** A task's lifecycle state. */
export type TaskState = (typeof TASK_STATES)[number];

/** How an attempt ended, as reported by the host when it settles the attempt. */
export type AttemptExit =
  | 'success'
  | 'fork'
  | 'fail'
  | 'error'
  | 'timeout'
  | 'lease_expired'
  | 'cancelled'
  | 'crashed'
  | 'interrupted';
