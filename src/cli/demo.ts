/**
 * `troupe demo` (what `npm start` runs): a few thousand tasks on the built-in agents, on the
 * embedded LMDB default data dir, with a live progress bar and a final summary. Every task has an
 * idempotency key, so running it again resumes the same tasks instead of duplicating them.
 */
import { createLmdbRuntime } from '../create-runtime.js';
import { builtinAgent } from '../agents/registry.js';
import type { Task, TaskSpec } from '../tasks/spec.js';
import type { TaskState } from '../../machines/index.js';
import type { RuntimeEvent } from '../events/event-bus.js';

/** Options of {@link runDemo}. */
export interface DemoOptions {
  dataDir: string;
  tasks: number;
  threads?: number;
  out?: NodeJS.WriteStream;
}

const SETTLED: ReadonlySet<TaskState> = new Set(['done', 'failed', 'dropped', 'cancelled']);
const BAR = 30;

/** The demo's task mix, deterministic per index so every run submits the same specs. */
function specOf(i: number): TaskSpec {
  const base = { idempotencyKey: `demo:${i}`, labels: { demo: 'true' } };
  if (i % 20 === 7) return { ...base, agent: 'fail', input: { mode: i % 40 === 7 ? 'fatal' : 'throw', succeedOnAttempt: i % 60 === 27 ? 2 : undefined } };
  if (i % 4 === 3) return { ...base, agent: 'sleep', input: { ms: 20 + (i % 7) * 10, steps: 2 }, priority: 1 };
  return { ...base, agent: 'echo', input: { i } };
}

/** Runs the demo; resolves with the final counts. */
export async function runDemo(options: DemoOptions): Promise<Record<'done' | 'failed' | 'dropped' | 'cancelled' | 'pending', number>> {
  const out = options.out ?? process.stderr;
  // LMDB's whatever TROUPE_STORE says: a demo writes its thousands of tasks to its own data dir,
  // never to the database an app's environment names.
  const rt = await createLmdbRuntime({
    dataDir: options.dataDir,
    threads: options.threads,
    logger: false,
    agents: [builtinAgent('echo'), builtinAgent('sleep'), builtinAgent('fail', { retry: { maxAttempts: 3, backoff: 'fixed', delayMs: 20 }, backoff: false })],
  });
  const state = new Map<string, TaskState>();
  const counts = { done: 0, failed: 0, dropped: 0, cancelled: 0, pending: 0 };
  const count = (s: TaskState, delta: number) => {
    if (SETTLED.has(s)) counts[s as keyof typeof counts] += delta;
    else counts.pending += delta;
  };
  let settledHere = 0;
  let finished: () => void = () => undefined;
  const allSettled = new Promise<void>((resolve) => (finished = resolve));
  const track = (id: string, next: TaskState) => {
    const previous = state.get(id);
    if (previous === undefined || previous === next) return;
    count(previous, -1);
    count(next, 1);
    state.set(id, next);
    if (SETTLED.has(next)) settledHere++;
    if (counts.pending === 0) finished();
  };
  for (const type of ['task.done', 'task.failed', 'task.dropped', 'task.cancelled'] as const) {
    rt.on(type, (e: RuntimeEvent) => track(e.taskId!, type.slice(5) as TaskState));
  }
  const started = performance.now();
  let resumed = 0;
  const interrupt = () => void rt.close({ timeoutMs: 5_000 }).then(() => {
    out.write(`\ninterrupted: ${counts.pending} tasks still pending in ${options.dataDir}; run again to resume\n`);
    process.exit(130);
  });
  process.once('SIGINT', interrupt);
  try {
    for (let from = 0; from < options.tasks; from += 500) {
      const specs = Array.from({ length: Math.min(500, options.tasks - from) }, (_, k) => specOf(from + k));
      const tasks: Task[] = await rt.submitMany(specs);
      for (const task of tasks) {
        if (state.has(task.id)) continue;
        // An event may already have settled it between the commit and here: read the latest state.
        const latest = SETTLED.has(task.state) ? task : await rt.get(task.id);
        if (latest.createdAt < started - 1) resumed++;
        state.set(task.id, latest.state);
        count(latest.state, 1);
      }
    }
    if (resumed > 0) out.write(`resuming: ${resumed} of ${options.tasks} tasks were already submitted by an earlier run\n`);
    const timer = setInterval(() => draw(), out.isTTY ? 100 : 1_000);
    const draw = () => {
      const total = options.tasks;
      const settled = total - counts.pending;
      const filled = Math.round((settled / total) * BAR);
      const rate = settledHere / ((performance.now() - started) / 1000);
      const line = `[${'#'.repeat(filled)}${'.'.repeat(BAR - filled)}] ${settled}/${total} done ${counts.done} failed ${counts.failed} dropped ${counts.dropped} | running ${rt.stats().attempts.executing} | ${Math.round(rate)} tasks/s`;
      out.write(out.isTTY ? `\r${line}` : `${line}\n`);
    };
    if (counts.pending > 0) await allSettled;
    clearInterval(timer);
    draw();
    const seconds = (performance.now() - started) / 1000;
    out.write(`\n\nsummary: ${counts.done} done, ${counts.failed} failed, ${counts.dropped} dropped (retries exhausted), ${counts.cancelled} cancelled\n`);
    out.write(`settled in this run: ${settledHere} in ${seconds.toFixed(2)} s = ${Math.round(settledHere / seconds)} tasks/s on ${rt.stats().slots.total} slots\n`);
    out.write(`data: ${options.dataDir} (run again to see it resume, delete it to start over)\n`);
    return counts;
  } finally {
    process.off('SIGINT', interrupt);
    await rt.close();
  }
}
