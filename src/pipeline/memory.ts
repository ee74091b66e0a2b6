/**
 * What a step's task change does to memory: the table's record (and its counts by state), and the
 * task's governor membership, derived in this one place from the record: a queued task with no
 * `runAt` waits in the governor; anything else does not.
 */
import type { Governor } from '../governor/governor.js';
import type { TaskRecord } from '../store/records.js';
import type { TaskTable } from '../tasks/task-table.js';
import { entryOf } from '../tasks/parts.js';
import type { Memory } from './pipeline.js';

/** See the module comment. */
export class TaskMemory implements Memory {
  readonly #table: TaskTable;
  readonly #governor: Governor;
  /** Called when a task entered the governor: free slots may take it. */
  readonly #queued: () => void;

  constructor(table: TaskTable, governor: Governor, queued: () => void) {
    this.#table = table;
    this.#governor = governor;
    this.#queued = queued;
  }

  putTask(task: TaskRecord): void {
    // Only a task whose version before this one waited can be in the governor: membership changes
    // nowhere else (a rebuild enqueues only tasks whose records in the table wait). So a new task,
    // or one that did not wait, costs no lookup there (a submit and a settle each skip one).
    const previous = this.#table.add(task);
    const waited = previous !== undefined && waits(previous);
    if (waits(task)) {
      if (waited && this.#governor.has(task.id)) return;
      this.#governor.enqueue(entryOf(task));
      this.#queued();
    } else if (waited) {
      this.#governor.remove(task.id);
    }
  }
}

/** Whether a task with this record waits in the governor: queued, with no delayed start or backoff. */
function waits(task: TaskRecord): boolean {
  return task.state === 'queued' && task.runAt === undefined;
}
