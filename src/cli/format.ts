/**
 * Human-readable output of the commands: aligned tables and task details, with task states painted
 * in their colours when colour is on (colour.ts). `--json` output skips all of this and prints the
 * runtime's own objects.
 */
import { plain, visibleLength, type Paint } from './colour.js';
import type { Task } from '../tasks/spec.js';
import type { RuntimeStats } from '../stats.js';
import type { InstanceView } from '../router/router.js';
import type { Schedule } from '../scheduler/scheduler.js';
import type { LogLine } from '../events/logs.js';

/** Task states in lifecycle order (kept here so the client does not load the machines). */
export const STATE_ORDER = ['queued', 'running', 'waiting', 'sleeping', 'needs_attention', 'done', 'failed', 'dropped', 'cancelled'] as const;

/** States in which `wait()` resolves: terminal, or needing an operator. */
export const SETTLED_STATES: ReadonlySet<string> = new Set(['done', 'failed', 'dropped', 'cancelled', 'needs_attention']);

/**
 * Columns padded to their widest cell; the last column is not padded. Widths count what shows on
 * screen, so a coloured cell lines up with a plain one.
 */
export function table(headers: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = headers.map((h, i) => Math.max(visibleLength(h), ...rows.map((r) => visibleLength(r[i] ?? ''))));
  const line = (cells: readonly string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c + ' '.repeat(widths[i]! - visibleLength(c))))
      .join('  ')
      .trimEnd();
  return [line(headers), ...rows.map(line)].join('\n') + '\n';
}

/** An epoch-ms time as ISO 8601, or `-`. */
export function time(at: number | undefined | null): string {
  return typeof at === 'number' && Number.isFinite(at) ? new Date(at).toISOString() : '-';
}

/** Compact JSON for a value shown inline. */
export function inline(value: unknown): string {
  if (value === undefined) return '-';
  return typeof value === 'string' ? value : JSON.stringify(value);
}

/** `show <id>`: one field per line. */
export function formatTask(task: Task, paint: Paint = plain): string {
  const rows: Array<[string, string | undefined]> = [
    ['id', task.id],
    ['agent', task.agent],
    ['state', task.reason ? `${paint(task.state)} (${task.reason})` : paint(task.state)],
    ['attempts', `${task.attempts} (run ${task.runs})`],
    ['priority', String(task.priority)],
    ['lane', task.lane],
    ['workspace', task.workspace],
    ['instance', task.instanceKey],
    ['parent', task.parentId],
    ['key', task.idempotencyKey],
    ['labels', Object.keys(task.labels ?? {}).length > 0 ? inline(task.labels) : undefined],
    ['progress', task.progress ? `${Math.round(task.progress.value * 100)}%${task.progress.message ? ` ${task.progress.message}` : ''}` : undefined],
    ['input', inline(task.input)],
    ['output', task.output === undefined ? undefined : inline(task.output)],
    ['result', task.result ? `${task.result.kind}${task.result.summary ? `: ${task.result.summary}` : ''}` : undefined],
    ['error', task.error ? `${task.error.code}: ${task.error.message} (${task.error.fault} fault${task.error.retryable ? ', retryable' : ''})` : undefined],
    ['created', time(task.createdAt)],
    ['started', task.startedAt === undefined ? undefined : time(task.startedAt)],
    ['settled', task.settledAt === undefined ? undefined : time(task.settledAt)],
    ['run at', task.runAt === undefined ? undefined : time(task.runAt)],
    ['held by', task.heldBy ? `${task.heldBy.kind}${task.heldBy.until === undefined ? '' : ` until ${time(task.heldBy.until)}`}` : undefined],
  ];
  const shown = rows.filter((r): r is [string, string] => r[1] !== undefined);
  return shown.map(([name, value]) => `${name.padEnd(10)} ${value}`).join('\n') + '\n';
}

/** `list`: one task per row. */
export function formatTaskList(tasks: readonly Task[], paint: Paint = plain): string {
  if (tasks.length === 0) return 'no tasks\n';
  return table(
    ['ID', 'STATE', 'AGENT', 'ATTEMPTS', 'CREATED'],
    tasks.map((t) => [t.id, paint(t.state), t.agent || '-', String(t.attempts), time(t.createdAt)]),
  );
}

/** The one-line outcome of a settled task, as `submit --wait` and `wait` print it. */
export function formatOutcome(task: Task, paint: Paint = plain): string {
  const detail = task.error ? `: ${task.error.code}: ${task.error.message}` : task.reason ? `: ${task.reason}` : '';
  return `${task.id} ${paint(task.state)}${detail}\n`;
}

/** `status`: counts, agents and instances. */
export function formatStatus(stats: RuntimeStats, instances: readonly InstanceView[], mode: 'socket' | 'direct', paint: Paint = plain): string {
  const counts = STATE_ORDER.map((s) => (stats.tasks[s] ? paint(s, `${s} ${stats.tasks[s]}`) : `${s} 0`)).join(', ');
  const runtime = mode === 'socket' ? `${stats.state}` : 'not running (data dir opened directly)';
  const frozen = stats.freeze ? `yes${stats.freeze.reason ? ` (${stats.freeze.reason})` : ''}${stats.freeze.killed ? ', killed' : ''}` : 'no';
  let out = `runtime   ${runtime}\nfrozen    ${frozen}\n`;
  const failure = stats.storeFailure;
  if (failure) out += `store     stopped since ${new Date(failure.since).toISOString()}, ${failure.retries} tries to open it again: ${failure.message}\n`;
  out += `tasks     ${counts}\n`;
  if (mode === 'socket') out += `slots     ${stats.slots.busy}/${stats.slots.total} busy, ${stats.queued} queued for a slot\n`;
  const agents = Object.entries(stats.agents);
  out += '\n';
  out += agents.length === 0
    ? 'no agents\n'
    : table(
        ['AGENT', 'QUEUED', 'RESERVED', 'LIMIT', 'TASKS'],
        agents.map(([name, a]) => [name, String(a.queued), String(a.reserved), a.limit === null ? '-' : String(a.limit), STATE_ORDER.filter((s) => a.tasks[s]).map((s) => paint(s, `${s} ${a.tasks[s]}`)).join(', ') || '-']),
      );
  out += '\n';
  out += instances.length === 0
    ? 'no instances\n'
    : table(
        ['INSTANCE', 'STATUS', 'RUNNING', 'PENDING', 'TARGET'],
        instances.map((i) => [i.key, i.status, String(i.running), String(i.pending), i.target === null ? '-' : String(i.target)]),
      );
  return out;
}

/** `schedules ls`. */
export function formatSchedules(schedules: readonly Schedule[]): string {
  if (schedules.length === 0) return 'no schedules\n';
  return table(
    ['ID', 'CRON', 'TZ', 'AGENT', 'NEXT', 'OVERLAP', 'FIRED', 'PAUSED'],
    schedules.map((s) => [s.id, s.cron, s.tz, s.task.agent ?? '-', time(s.nextRunAt), s.overlap, String(s.fired), s.paused ? 'yes' : 'no']),
  );
}

/** `tail`: `time level message`, plus the structured fields if any. */
export function formatLogLine(line: LogLine): string {
  const fields = line.fields && Object.keys(line.fields).length > 0 ? ` ${JSON.stringify(line.fields)}` : '';
  return `${time(line.at)} ${line.level.padEnd(5)} ${line.message}${fields}\n`;
}
