/**
 * `troupe.submit` spans on PostgreSQL (src/telemetry/tracing.ts), for a runtime's submit and
 * submitMany and an agent's spawn on a node. A submit's tasks are stored in one transaction, so
 * each task's span starts before it (once the tasks are checked: bad input makes no span), and its
 * trace context goes into the task's row (troupe_tasks.trace, schema version 21) for the node
 * that claims it; the spans end once the transaction is over. As on LMDB: one span per task
 * stored, a child of the caller's active context (a spawn's: its attempt's span), with the task's
 * id and agent (the agent routing picked, for a task routed by `requires`), status ERROR when the
 * transaction failed. A task whose idempotency key was taken is not stored: its span is dropped
 * unended (never exported), as LMDB starts none for it. Without a registered tracer provider,
 * nothing here runs but the check and the store.
 */
import { traceOf, type TaskRow } from '../store/postgres/checks.js';
import { checkTasks, type NewTask } from '../store/postgres/queue.js';
import type { AttemptSpan, Tracing } from '../telemetry/tracing.js';

/** What a submit's transaction did with one task: the row it answers with (the task, or the holder of its key), and whether it stored the task. */
export interface Stored<R> {
  row: R;
  created: boolean;
}

/**
 * Checks `tasks` (INVALID_INPUT, nothing stored) and stores them with `store` (one transaction),
 * inside their spans when tracing is on (see the module comment); `parent`, a spawning attempt's
 * span, parents the spans. Resolves with the rows `store` answered with.
 */
export async function submitTraced<R extends { id: string; agent: string }>(
  tracing: Tracing | undefined,
  tasks: readonly NewTask[],
  store: (rows: readonly TaskRow[]) => Promise<Array<Stored<R>>>,
  parent?: Pick<AttemptSpan, 'within'>,
): Promise<R[]> {
  const rows = checkTasks(tasks);
  if (tracing === undefined || !tracing.active()) return (await store(rows)).map((s) => s.row);
  const spans = tracing.submits();
  let stored: Array<Stored<R>>;
  try {
    for (const [i, row] of rows.entries()) {
      const trace = parent === undefined ? spans.start() : parent.within(() => spans.start());
      if (trace !== undefined) row.trace = traceOf(trace, `tasks[${i}].trace`);
    }
    stored = await store(rows);
  } catch (error) {
    spans.end(error);
    throw error;
  }
  stored.forEach(({ row, created }, i) => (created ? spans.decided(row, i) : spans.discard(i)));
  spans.end();
  return stored.map((s) => s.row);
}
