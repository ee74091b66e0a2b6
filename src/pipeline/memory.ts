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
    this.#table.add(task);
    if (task.state === 'queued' && task.runAt === undefined) {
      if (this.#governor.has(task.id)) return;
      this.#governor.enqueue(entryOf(task));
      this.#queued();
    } else {
      this.#governor.remove(task.id);
    }
  }
}
