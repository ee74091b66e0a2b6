/**
 * What a schedule's fire step reads about tasks: its task template validated and routed the way
 * submit does it (submit.ts), or the reason submit would refuse it; and the task that already holds
 * an idempotency key, so a tick's task is never submitted twice.
 */
import { TroupeError } from '../errors.js';
import type { TaskRecord } from '../store/records.js';
import type { FireTemplate } from '../steps/fire.js';
import type { EngineParts } from './parts.js';
import { validateSpec, type TaskSpec } from './spec.js';

/** What a schedule's template reads: the slice of the engine's shared parts it reads. */
export const TEMPLATE_PARTS = ['agents', 'clock', 'governor', 'store', 'table'] as const;
export type TemplateDeps = Pick<EngineParts, (typeof TEMPLATE_PARTS)[number]>;

/** Where validation errors of a template point. */
const WHERE = 'schedule.task';

/** The template as the fire step takes it. */
export function fireTemplate(k: TemplateDeps, task: TaskSpec): FireTemplate {
  const { agents, governor, table, store } = k;
  const route = (requires: readonly string[]) => {
    const name = governor.pickAgent(agents.covering(requires).map((a) => a.name));
    return name === undefined ? undefined : agents.get(name);
  };
  try {
    const spec = validateSpec(task, (name) => agents.get(name), WHERE, k.clock.now(), route);
    if (spec.parentId !== undefined && !table.get(spec.parentId) && !store.read.tasks.has(spec.parentId)) {
      throw new TroupeError('NOT_FOUND', `${WHERE}.parentId: no task ${spec.parentId}`);
    }
    return { spec };
  } catch (error) {
    return { error: error instanceof Error ? error.message : String(error) };
  }
}

/** The task holding an idempotency key: one in memory (its submit may be in flight), else the store's. */
export function taskOfKey(k: TemplateDeps, key: string): TaskRecord | undefined {
  const { table, store } = k;
  const id = table.idOfKey(key) ?? store.read.idempotency.get(key);
  return id === undefined ? undefined : (table.get(id) ?? store.read.tasks.get(id));
}
