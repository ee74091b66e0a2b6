/**
 * Why a queued task is not dispatching: the first hold that keeps it back, read from the live flow
 * state at the moment of the call (`rt.get()`, `rt.list()`, `troupe show`). Nothing here is stored.
 * A task that only waits for a free slot, or for its delayed start, has no hold.
 */
import type { AgentFlowView } from '../governor/flow.js';
import type { InstanceView } from '../router/router.js';
import type { TaskRecord } from '../store/records.js';
import type { TaskHold } from './spec.js';

/** What finding a hold reads. */
export interface HoldSources {
  now(): number;
  frozen(): boolean;
  /** Whether the task waits in the governor (false: not yet due, e.g. a delayed start or retry backoff). */
  inQueue(taskId: string): boolean;
  flow(agent: string, now: number): AgentFlowView | undefined;
  instance(key: string): InstanceView | undefined;
}

/** The hold on a task, or undefined when nothing holds it back. */
export function holdOf(task: Pick<TaskRecord, 'id' | 'state' | 'agent' | 'instanceKey'>, sources: HoldSources): TaskHold | undefined {
  if (task.state !== 'queued' || !sources.inQueue(task.id)) return undefined;
  if (sources.frozen()) return { kind: 'frozen' };
  const now = sources.now();
  const flow = sources.flow(task.agent, now);
  if (flow?.heldUntil != null) {
    if (flow.pausedUntil !== null && flow.pausedUntil > now) return { kind: 'backoff', until: flow.pausedUntil };
    if (flow.today && flow.today.count >= flow.today.limit) return { kind: 'daily', until: flow.today.resetsAt };
    return { kind: 'rate', until: flow.heldUntil };
  }
  const instance = sources.instance(task.instanceKey);
  if (instance?.status === 'degraded') return { kind: 'degraded' };
  // A passivated instance has no attempts (its stored counts are stale): only a zero target holds.
  const busy = instance?.live ? instance.pending + instance.running + instance.stopping : 0;
  if (instance && instance.target !== null && busy >= instance.target) return { kind: 'target' };
  return undefined;
}
