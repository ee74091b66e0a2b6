/**
 * The client commands: each one talks to a {@link Backend} (the control socket of a running
 * runtime, or the data dir opened directly) and prints either text or, with `--json`, the
 * runtime's own objects (one JSON document, or JSON lines for streams).
 */
import { CliError, EXIT, shellWord } from './cli-error.js';
import { beforeOption, integerOption, labelPairs, parseJsonOption, stringOption, type Values } from './option-values.js';
import type { Paint } from './colour.js';
import type { Backend } from './control.js';
import { SETTLED_STATES, formatLogLine, formatOutcome, formatSchedules, formatStatus, formatTask, formatTaskList } from './format.js';
import { createProgressBar } from './progress.js';
import type { Task } from '../tasks/spec.js';
import type { TaskPage } from '../tasks/engine.js';
import type { RuntimeStats } from '../stats.js';
import type { InstanceView } from '../router/router.js';
import type { Schedule } from '../scheduler/scheduler.js';
import type { LogLine } from '../events/logs.js';
import type { BackupInfo } from '../store/port.js';
import type { PruneResult } from '../tasks/prune.js';
import { resolve } from 'node:path';

/** The data dir of a command given no `--data-dir`. */
export const DEFAULT_DATA_DIR = './.troupe';

export type { Values } from './option-values.js';

/** What a command runs with. */
export interface CommandContext {
  /** Absolute data dir. */
  dataDir: string;
  json: boolean;
  values: Values;
  /** Arguments after the command (and subcommand) name. */
  args: string[];
  stdout: NodeJS.WriteStream;
  stderr: NodeJS.WriteStream;
  /** Paints task states in text output: in colour on a terminal (see colour.ts), else as they are. */
  paint: Paint;
  /** Aborts on Ctrl-C. */
  signal: AbortSignal;
}

/** A client command. */
export interface ClientCommand {
  /** Whether only a running runtime can serve it (it needs agents or dispatch to make progress). */
  live(ctx: CommandContext): boolean;
  run(backend: Backend, ctx: CommandContext): Promise<number>;
}

/** Prints `json` as one document with `--json`, else `text`. */
function emit(ctx: CommandContext, json: unknown, text: string): void {
  ctx.stdout.write(ctx.json ? `${JSON.stringify(json, null, 2)}\n` : text);
}

/** Follows a task with a progress bar until it settles; returns the final task. */
async function follow(backend: Backend, id: string, ctx: CommandContext): Promise<Task> {
  const bar = createProgressBar(ctx.stderr, !ctx.json);
  let last: Task | undefined;
  try {
    for await (const item of backend.stream('watch', { id }, ctx.signal)) {
      last = item as Task;
      const settled = SETTLED_STATES.has(last.state);
      const value = last.state === 'done' ? 1 : (last.progress?.value ?? 0);
      bar.update(value, last.progress?.message && !settled ? `${last.state}: ${last.progress.message}` : last.state);
    }
  } catch (error) {
    throw runtimeGone(error, id);
  } finally {
    bar.done();
  }
  if (ctx.signal.aborted) throw new CliError('INTERRUPTED', `stopped waiting for ${id}; the task carries on`, EXIT.INTERRUPTED);
  if (!last || !SETTLED_STATES.has(last.state)) throw new CliError('DISCONNECTED', `the runtime stopped before ${id} settled`, EXIT.NO_RUNTIME);
  return last;
}

/**
 * A stream of task `id` that the runtime ended with CLOSED: it shut down before the task settled.
 * That is the runtime going away (exit 3), as when the connection drops, not the command failing.
 */
function runtimeGone(error: unknown, id: string): unknown {
  if (error instanceof CliError && error.code === 'CLOSED') return new CliError('DISCONNECTED', `the runtime stopped before ${id} settled`, EXIT.NO_RUNTIME);
  return error;
}

/** Prints a settled task; exit 0 only for `done`. */
function settled(ctx: CommandContext, task: Task): number {
  emit(ctx, task, formatOutcome(task, ctx.paint));
  return task.state === 'done' ? EXIT.OK : EXIT.FAILED;
}

const submit: ClientCommand = {
  live: () => true,
  async run(backend, ctx) {
    const [agent] = ctx.args;
    const spec: Record<string, unknown> = { agent };
    const input = stringOption(ctx.values, 'input');
    if (input !== undefined) spec.input = parseJsonOption('--input', input);
    const key = stringOption(ctx.values, 'key');
    if (key !== undefined) spec.idempotencyKey = key;
    const priority = integerOption('--priority', ctx.values.priority);
    if (priority !== undefined) spec.priority = priority;
    const lane = stringOption(ctx.values, 'lane');
    if (lane !== undefined) spec.lane = lane;
    const labels = ctx.values.label;
    if (Array.isArray(labels) && labels.length > 0) spec.labels = labelPairs(labels);
    const task = (await backend.call('submit', { spec })) as Task;
    if (ctx.values.wait !== true) {
      emit(ctx, task, `${task.id}\n`);
      return EXIT.OK;
    }
    if (!ctx.json) ctx.stdout.write(`${task.id}\n`);
    return settled(ctx, await follow(backend, task.id, ctx));
  },
};

const wait: ClientCommand = {
  live: () => true,
  async run(backend, ctx) {
    return settled(ctx, await follow(backend, ctx.args[0]!, ctx));
  },
};

const status: ClientCommand = {
  live: () => false,
  async run(backend, ctx) {
    const stats = (await backend.call('stats')) as RuntimeStats;
    // Instances are read from the store: while it is down, status shows the rest (and why).
    const instances = (await backend.call('instances').catch((error: unknown) => {
      // A runtime on PostgreSQL has no instances.
      if (stats.storeFailure || (error as { code?: unknown }).code === 'UNSUPPORTED_STORE') return [];
      throw error;
    })) as InstanceView[];
    emit(ctx, { live: backend.mode === 'socket', stats, instances }, formatStatus(stats, instances, backend.mode, ctx.paint));
    return EXIT.OK;
  },
};

const list: ClientCommand = {
  live: () => false,
  async run(backend, ctx) {
    const params: Record<string, unknown> = {};
    for (const name of ['state', 'agent', 'after']) {
      const value = stringOption(ctx.values, name);
      if (value !== undefined) params[name] = value;
    }
    const limit = integerOption('--limit', ctx.values.limit, 1);
    if (limit !== undefined) params.limit = limit;
    const labels = ctx.values.label;
    if (Array.isArray(labels) && labels.length > 0) params.labels = labelPairs(labels);
    const page = (await backend.call('list', params)) as TaskPage;
    emit(ctx, page, formatTaskList(page.tasks, ctx.paint));
    if (!ctx.json && page.next !== null) ctx.stderr.write(`more: ${nextPageCommand(ctx.values, page.next)}\n`);
    return EXIT.OK;
  },
};

/** The `troupe list` line of the page after `next`: the same filters, limit and data dir. */
function nextPageCommand(values: Values, next: string): string {
  const words = ['troupe', 'list'];
  for (const name of ['state', 'agent']) {
    const value = stringOption(values, name);
    if (value !== undefined) words.push(`--${name}`, value);
  }
  for (const pair of Array.isArray(values.label) ? values.label : []) words.push('--label', pair);
  const limit = stringOption(values, 'limit');
  if (limit !== undefined) words.push('--limit', limit);
  const dataDir = stringOption(values, 'data-dir');
  if (dataDir !== undefined && dataDir !== DEFAULT_DATA_DIR) words.push('--data-dir', dataDir);
  words.push('--after', next);
  return words.map(shellWord).join(' ');
}

const show: ClientCommand = {
  live: () => false,
  async run(backend, ctx) {
    const task = (await backend.call('get', { id: ctx.args[0] })) as Task;
    emit(ctx, task, formatTask(task, ctx.paint));
    return EXIT.OK;
  },
};

const tail: ClientCommand = {
  live: (ctx) => ctx.values.follow === true,
  async run(backend, ctx) {
    const params = { id: ctx.args[0], follow: ctx.values.follow === true };
    try {
      for await (const item of backend.stream('logs', params, ctx.signal)) {
        const line = item as LogLine;
        ctx.stdout.write(ctx.json ? `${JSON.stringify(line)}\n` : formatLogLine(line));
      }
    } catch (error) {
      throw runtimeGone(error, ctx.args[0]!);
    }
    return ctx.signal.aborted ? EXIT.INTERRUPTED : EXIT.OK;
  },
};

const send: ClientCommand = {
  live: () => false,
  async run(backend, ctx) {
    const [id, text] = ctx.args as [string, string];
    let message: unknown = text;
    try {
      message = JSON.parse(text);
    } catch {
      // Not JSON: send the text as a string.
    }
    const params: Record<string, unknown> = { id, message };
    const key = stringOption(ctx.values, 'key');
    if (key !== undefined) params.idempotencyKey = key;
    const result = await backend.call('sendInput', params);
    emit(ctx, result, `sent to ${id}\n`);
    return EXIT.OK;
  },
};

function taskControl(method: 'cancel' | 'retry'): ClientCommand {
  return {
    live: () => false,
    async run(backend, ctx) {
      const params: Record<string, unknown> = { id: ctx.args[0] };
      const reason = stringOption(ctx.values, 'reason');
      if (reason !== undefined) params.reason = reason;
      const task = (await backend.call(method, params)) as Task;
      emit(ctx, task, `${task.id} ${ctx.paint(task.state)}\n`);
      return EXIT.OK;
    },
  };
}

type FreezeView = RuntimeStats['freeze'];

const freeze: ClientCommand = {
  live: () => false,
  async run(backend, ctx) {
    const reason = stringOption(ctx.values, 'reason');
    const view = (await backend.call('freeze', reason === undefined ? {} : { reason })) as FreezeView;
    emit(ctx, { frozen: view !== null, ...view }, `frozen${view?.reason ? `: ${view.reason}` : ''}\n`);
    return EXIT.OK;
  },
};

const unfreeze: ClientCommand = {
  live: () => false,
  async run(backend, ctx) {
    const view = (await backend.call('unfreeze')) as FreezeView;
    emit(ctx, { frozen: view !== null, ...view }, 'unfrozen\n');
    return EXIT.OK;
  },
};

const backup: ClientCommand = {
  live: () => false,
  async run(backend, ctx) {
    const info = (await backend.call('backup', { path: resolve(ctx.args[0]!), compact: ctx.values.compact === true })) as BackupInfo;
    emit(ctx, info, `backed up to ${info.path} (${info.bytes} bytes${info.compact ? ', compacted' : ''})\n`);
    return EXIT.OK;
  },
};

const prune: ClientCommand = {
  live: () => false,
  async run(backend, ctx) {
    const params: Record<string, unknown> = {};
    const before = stringOption(ctx.values, 'before');
    if (before !== undefined) params.before = beforeOption(before);
    const states = stringOption(ctx.values, 'state');
    if (states !== undefined) params.states = states.split(',');
    const result = (await backend.call('prune', params)) as PruneResult;
    emit(ctx, result, `pruned ${result.tasks} tasks (${result.runs} runs, ${result.attempts} attempts, ${result.logLines} log lines, ${result.inputs} inputs)\n`);
    return EXIT.OK;
  },
};

const schedulesLs: ClientCommand = {
  live: () => false,
  async run(backend, ctx) {
    const schedules = (await backend.call('schedules.list')) as Schedule[];
    emit(ctx, schedules, formatSchedules(schedules));
    return EXIT.OK;
  },
};

const schedulesAdd: ClientCommand = {
  live: () => true,
  async run(backend, ctx) {
    // Both given: checkOptionValues saw to it.
    const cron = stringOption(ctx.values, 'cron')!;
    const agent = stringOption(ctx.values, 'agent')!;
    const task: Record<string, unknown> = { agent };
    const input = stringOption(ctx.values, 'input');
    if (input !== undefined) task.input = parseJsonOption('--input', input);
    const spec: Record<string, unknown> = { id: ctx.args[0], cron, task };
    const tz = stringOption(ctx.values, 'tz');
    if (tz !== undefined) spec.tz = tz;
    const overlap = stringOption(ctx.values, 'overlap');
    if (overlap !== undefined) spec.overlap = overlap;
    const schedule = (await backend.call('schedules.create', { spec })) as Schedule;
    emit(ctx, schedule, `${schedule.id} next ${new Date(schedule.nextRunAt).toISOString()}\n`);
    return EXIT.OK;
  },
};

const schedulesRm: ClientCommand = {
  live: () => false,
  async run(backend, ctx) {
    const result = await backend.call('schedules.delete', { id: ctx.args[0] });
    emit(ctx, result, `removed ${ctx.args[0]}\n`);
    return EXIT.OK;
  },
};

/** Client commands by name (`schedules <sub>` as `schedules ls` etc.). */
export const CLIENT_COMMANDS: Readonly<Record<string, ClientCommand>> = {
  submit,
  wait,
  status,
  list,
  show,
  tail,
  send,
  cancel: taskControl('cancel'),
  retry: taskControl('retry'),
  freeze,
  unfreeze,
  backup,
  prune,
  'schedules ls': schedulesLs,
  'schedules add': schedulesAdd,
  'schedules rm': schedulesRm,
};
