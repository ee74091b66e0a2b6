/**
 * The PostgreSQL runtime's submits (runtime.ts `submit`, `submitMany`, and the task templates its
 * schedules check): each spec checked as the LMDB runtime checks it and given its id, then all of
 * them inserted in one transaction, in their `troupe.submit` spans (submit-spans.ts) and admitted
 * against `maxQueued` (admission.ts), and read back as that transaction stored them.
 */
import type pg from 'pg';
import type { RegisteredAgent } from '../agents/registry.js';
import type { TaskSpec } from '../api/tasks.js';
import { createIdGenerator } from '../ids.js';
import type { ResolvedOptions } from '../options.js';
import type { NewTask } from '../store/postgres/queue.js';
import { submitAndRead, type TaskRow } from '../store/postgres/tasks.js';
import type { Tracing } from '../telemetry/tracing.js';
import { admissionLimit } from './runtime-node.js';
import { submitTraced } from './submit-spans.js';
import { newTaskOf } from './task-view.js';

/** What {@link ClusterSubmits} works with. */
export interface SubmitsDeps {
  db: pg.Pool;
  options: ResolvedOptions;
  tracing: Tracing | undefined;
  /** This runtime's registration of an agent. */
  agent: (name: string) => RegisteredAgent | undefined;
  /** Counts an AT_CAPACITY refusal (metrics.ts) and rethrows the error. */
  counted: (error: unknown) => never;
}

/** See the module comment. */
export class ClusterSubmits {
  readonly #k: SubmitsDeps;
  readonly #nextId = createIdGenerator(() => Date.now());

  constructor(deps: SubmitsDeps) {
    this.#k = deps;
  }

  /**
   * Checks every spec (nothing is written if one is bad), inserts them in one transaction, and
   * resolves with their rows as that transaction stored them (`queued`, as on LMDB), not as a read
   * after the commit would find them (already started, maybe).
   */
  async submit(specs: ReadonlyArray<TaskSpec>, where: (i: number) => string): Promise<TaskRow[]> {
    const { db, options, tracing, counted } = this.#k;
    const tasks = specs.map((spec, i) => this.newTask(spec, where(i)));
    return submitTraced(tracing, tasks, (checked) => submitAndRead(db, checked, where, admissionLimit(options))).catch(counted);
  }

  /** A spec checked (INVALID_INPUT, UNKNOWN_AGENT, UNSUPPORTED_STORE: nothing written) and given its id. */
  newTask(spec: TaskSpec, where: string): NewTask {
    return newTaskOf(spec, this.#k.agent, where, this.#k.options.clock.now(), this.#nextId());
  }
}
