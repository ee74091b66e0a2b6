#!/usr/bin/env node
/**
 * The `troupe` binary: parses the command line, finds the runtime (see connect.ts), runs the
 * command and maps every failure to `troupe: <CODE>: <message>` and an exit code (cli-error.ts).
 * `troupe help` prints the usage, `troupe --version` the version in the package's package.json.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { CliError, EXIT, describeError, usageError } from './cli-error.js';
import { coloured, colourEnabled, plain } from './colour.js';
import { CLIENT_COMMANDS, DEFAULT_DATA_DIR, type CommandContext } from './commands.js';
import { checkOptionValues, integerOption, type Values } from './option-values.js';
import { assertDataDir, openBackend } from './connect.js';
import { postgresUrl, resolveStore } from '../options.js';

const HELP = `troupe: a durable agent-dispatch runtime

usage: troupe <command> [options]

global options (every command):
  --data-dir DIR   the data dir (default ./.troupe)
  --json           machine-readable output: one JSON document, or JSON lines for streams;
                   errors as {"error":{"code","message"}} on stderr
  -h, --help       this text
  -v, --version    the version of this troupe

  Task states are coloured when stdout is a terminal: NO_COLOR=1 turns colour off, FORCE_COLOR=1
  turns it on for a pipe.

serve:
  troupe run --agents DIR [--store URL] [--threads N] [--slots N] [--log-level LEVEL] [--dashboard [PORT]] [--dashboard-host HOST]
      Starts a runtime, registers every <name>.agent.{js,mjs,cjs,ts,mts,cts} in DIR as agent <name>
      (TypeScript through tsx; it names each other *.agent.* file it skips, and why), and serves the
      control socket DATA_DIR/control.sock until SIGINT or SIGTERM, then closes gracefully.
      --store postgres://… runs it on that PostgreSQL database, shared with every runtime on it
      (TROUPE_STORE=postgres://… does the same); DATA_DIR then holds only the control socket.
      --dashboard serves the web dashboard (127.0.0.1, a free port unless PORT) and prints its URL;
      --dashboard-host (only with --dashboard) serves it on another host, which needs a token:
      TROUPE_DASHBOARD_TOKEN, or one generated and printed.
  troupe dashboard [--port N] [--host HOST]
      The URL of the dashboard of the runtime running in DATA_DIR, or, with none running, serves
      one on DATA_DIR (no agents: tasks can be seen and acted on) until SIGINT or SIGTERM; with
      TROUPE_STORE set, on that PostgreSQL database.

tasks (these need a running runtime, else they exit 3 with "no runtime is running":
       submit, wait, tail --follow, schedules add):
  troupe submit AGENT [--input JSON] [--key KEY] [--priority N] [--lane LANE] [--label NAME=VALUE]... [--wait]
      Prints the task id. --wait shows progress until the task settles; exit 0 only if done.
  troupe wait ID                        waits for a task to settle; exit 0 only if done
  troupe status                         counts by state, agents and instances
  troupe list [--state S] [--agent A] [--label NAME=VALUE]... [--limit N] [--after ID]
  troupe show ID
  troupe tail ID [--follow]             log lines: time level message
  troupe send ID MESSAGE [--key KEY]    MESSAGE is sent as JSON if it parses, else as a string
  troupe cancel ID [--reason R]
  troupe retry ID
  troupe freeze [--reason R]            stop dispatching (durable); unfreeze resumes
  troupe unfreeze
  troupe backup DIR [--compact]         a consistent copy of the store into a new or empty DIR
  troupe compact                        gives free pages back to the disk (no runtime may hold the dir)
  troupe prune [--before DATE|MS] [--state S,S]   removes settled tasks (default: all settled before now)
  troupe schedules ls
  troupe schedules add ID --cron EXPR --agent AGENT [--tz ZONE] [--input JSON] [--overlap skip|allow|queue_one]
  troupe schedules rm ID

  Commands reach a running \`troupe run\` through its control socket. When none runs, they open
  the data dir directly (nothing dispatches then). A runtime on PostgreSQL keeps nothing in the
  data dir: its tasks are reached only while it runs (with TROUPE_STORE set and no store in the
  data dir, commands exit 3 with NOT_RUNNING).

other:
  troupe demo [--tasks N] [--threads N]
      Submits N tasks (default 3000) to the built-in echo, sleep and fail agents on the data dir,
      shows live progress and a summary. Run it again to resume: tasks are keyed.
  troupe help
  troupe version

exit codes: 0 ok; 1 failed (or the awaited task did not end done); 2 usage or no data dir;
  3 no runtime running (or one that does not answer, or it stopped before the task waited for or
  followed settled); 130 interrupted.
`;

type Options = NonNullable<ParseArgsConfig['options']>;

const GLOBAL: Options = {
  'data-dir': { type: 'string', default: DEFAULT_DATA_DIR },
  json: { type: 'boolean', default: false },
  help: { type: 'boolean', short: 'h', default: false },
  version: { type: 'boolean', short: 'v', default: false },
};

/** Each command's own options and how many arguments it takes. */
const COMMANDS: Record<string, { options: Options; args: readonly string[] }> = {
  run: { options: { agents: { type: 'string' }, store: { type: 'string' }, threads: { type: 'string' }, slots: { type: 'string' }, 'log-level': { type: 'string' }, dashboard: { type: 'string' }, 'dashboard-host': { type: 'string' } }, args: [] },
  dashboard: { options: { port: { type: 'string' }, host: { type: 'string' } }, args: [] },
  demo: { options: { tasks: { type: 'string', default: '3000' }, threads: { type: 'string' } }, args: [] },
  submit: { options: { input: { type: 'string' }, key: { type: 'string' }, priority: { type: 'string' }, lane: { type: 'string' }, label: { type: 'string', multiple: true }, wait: { type: 'boolean' } }, args: ['AGENT'] },
  wait: { options: {}, args: ['ID'] },
  status: { options: {}, args: [] },
  list: { options: { state: { type: 'string' }, agent: { type: 'string' }, label: { type: 'string', multiple: true }, limit: { type: 'string' }, after: { type: 'string' } }, args: [] },
  show: { options: {}, args: ['ID'] },
  tail: { options: { follow: { type: 'boolean', short: 'f' } }, args: ['ID'] },
  send: { options: { key: { type: 'string' } }, args: ['ID', 'MESSAGE'] },
  cancel: { options: { reason: { type: 'string' } }, args: ['ID'] },
  retry: { options: {}, args: ['ID'] },
  freeze: { options: { reason: { type: 'string' } }, args: [] },
  unfreeze: { options: {}, args: [] },
  backup: { options: { compact: { type: 'boolean' } }, args: ['DIR'] },
  compact: { options: {}, args: [] },
  prune: { options: { before: { type: 'string' }, state: { type: 'string' } }, args: [] },
  'schedules ls': { options: {}, args: [] },
  'schedules add': { options: { cron: { type: 'string' }, agent: { type: 'string' }, tz: { type: 'string' }, input: { type: 'string' }, overlap: { type: 'string' } }, args: ['ID'] },
  'schedules rm': { options: {}, args: ['ID'] },
};

/** Every option any command knows, to find the command word before parsing strictly. */
const ALL_OPTIONS: Options = Object.assign({}, GLOBAL, ...Object.values(COMMANDS).map((c) => c.options));

interface Parsed {
  command: string;
  values: Values;
  args: string[];
}

function parse(argv: string[]): Parsed {
  argv = optionalPort(argv);
  // Lenient first pass, only to find the command word: the strict pass below names the command.
  const first = parseArgs({ args: argv, options: ALL_OPTIONS, allowPositionals: true, strict: false });
  const [word, sub] = first.positionals;
  if (word === 'help' || first.values.help === true) return { command: 'help', values: {}, args: [] };
  if (word === 'version' || first.values.version === true) return { command: 'version', values: { json: first.values.json === true }, args: [] };
  if (word === undefined) return { command: 'help', values: {}, args: [] };
  let command = word;
  if (word === 'schedules') {
    if (sub === undefined) throw usageError('schedules needs a subcommand: ls, add or rm');
    command = `schedules ${sub}`;
  }
  const spec = COMMANDS[command];
  if (!spec) throw usageError(`unknown command ${JSON.stringify(command)}`);
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: { ...GLOBAL, ...spec.options }, allowPositionals: true, strict: true });
  } catch (error) {
    // parseArgs appends a long hint about `--`; the first sentence is the problem.
    throw usageError(`${command}: ${(error as Error).message.replace(/\. To specify a positional argument[\s\S]*$/, '')}`);
  }
  const args = parsed.positionals.slice(command.split(' ').length);
  if (args.length !== spec.args.length) {
    const expected = spec.args.length === 0 ? 'no arguments' : spec.args.join(' ');
    throw usageError(`${command} takes ${expected} (got ${args.length === 0 ? 'none' : args.map((a) => JSON.stringify(a)).join(' ')})`);
  }
  const values = parsed.values as Values;
  // Check option values before anything touches the data dir.
  // A host with no dashboard to serve on it would be ignored without a word.
  if (values['dashboard-host'] !== undefined && values.dashboard === undefined) throw usageError('--dashboard-host needs --dashboard');
  checkOptionValues(command, values);
  return { command, values, args };
}

async function main(argv: string[], json: { value: boolean }, abort: AbortController): Promise<number> {
  const { command, values, args } = parse(argv);
  json.value = values.json === true;
  if (command === 'help') {
    process.stdout.write(HELP);
    return EXIT.OK;
  }
  if (command === 'version') {
    const version = packageVersion();
    process.stdout.write(json.value ? `${JSON.stringify({ version })}\n` : `${version}\n`);
    return EXIT.OK;
  }
  const dataDir = resolve(String(values['data-dir']));
  if (command === 'run') {
    if (typeof values.agents !== 'string') throw usageError('run needs --agents DIR');
    // Checked before the runtime's code loads: a bad store fails at once.
    const store = storeOf(values.store);
    const { runServe } = await import('./run.js');
    return runServe({
      dataDir,
      agentsDir: resolve(values.agents),
      store,
      dashboard: dashboardOf('--dashboard', values.dashboard, values['dashboard-host']),
      threads: integerOption('--threads', values.threads, 1),
      slotsPerThread: integerOption('--slots', values.slots, 1),
      logLevel: typeof values['log-level'] === 'string' ? values['log-level'] : 'warn',
      json: json.value,
      closeTimeoutMs: 15_000,
    });
  }
  if (command === 'dashboard') {
    const store = storeOf(undefined);
    const { serveDashboardCommand } = await import('./run.js');
    return serveDashboardCommand({ dataDir, store, json: json.value, dashboard: dashboardOf('--port', values.port ?? '0', values.host)!, given: values.port !== undefined || values.host !== undefined, closeTimeoutMs: 15_000 });
  }
  if (command === 'compact') {
    assertDataDir(dataDir);
    const { compactDataDir } = await import('../store/lmdb/compact.js');
    const info = await compactDataDir(dataDir);
    process.stdout.write(json.value ? `${JSON.stringify(info, null, 2)}\n` : `compacted ${dataDir}: ${info.before} -> ${info.after} bytes\n`);
    return EXIT.OK;
  }
  if (command === 'demo') {
    const tasks = integerOption('--tasks', values.tasks, 1)!;
    const { runDemo } = await import('./demo.js');
    const counts = await runDemo({ dataDir, tasks, threads: integerOption('--threads', values.threads, 1) });
    return counts.pending === 0 ? EXIT.OK : EXIT.FAILED;
  }
  // Ctrl-C ends a wait or a follow cleanly (they watch the signal); anything else still exits.
  process.on('SIGINT', () => {
    if (abort.signal.aborted) process.exit(EXIT.INTERRUPTED);
    abort.abort();
    setTimeout(() => process.exit(EXIT.INTERRUPTED), 1_000).unref();
  });
  const paint = !json.value && colourEnabled(process.stdout) ? coloured : plain;
  const ctx: CommandContext = { dataDir, json: json.value, values, args, stdout: process.stdout, stderr: process.stderr, paint, signal: abort.signal };
  const client = CLIENT_COMMANDS[command]!;
  const backend = await openBackend(dataDir, { live: client.live(ctx) });
  try {
    return await client.run(backend, ctx);
  } finally {
    await backend.close();
  }
}

/**
 * `--dashboard` takes an optional port: `--dashboard` alone (or before another option) is
 * `--dashboard=0` (a free port), `--dashboard 8080` is `--dashboard=8080`.
 */
function optionalPort(argv: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] !== '--dashboard') out.push(argv[i]!);
    else if (argv[i + 1] !== undefined && /^\d+$/.test(argv[i + 1]!)) out.push(`--dashboard=${argv[++i]}`);
    else out.push('--dashboard=0');
  }
  return out;
}

/**
 * The dashboard options of `--dashboard PORT` / `--port`, `--dashboard-host` / `--host`, and
 * TROUPE_DASHBOARD_TOKEN; `option` is the port's option, as errors name it.
 */
function dashboardOf(option: '--dashboard' | '--port', port: string | boolean | string[] | undefined, host: unknown): { port: number; host?: string; token?: string } | undefined {
  if (port === undefined) return undefined;
  const number = integerOption(option, port, 0)!;
  if (number > 65_535) throw usageError(`${option} takes a port number (0..65535${option === '--dashboard' ? '; 0 or none: a free one' : '; 0: a free one'})`);
  const token = process.env.TROUPE_DASHBOARD_TOKEN;
  return { port: number, ...(typeof host === 'string' ? { host } : {}), ...(token ? { token } : {}) };
}

/**
 * The PostgreSQL connection string a runtime of `run` or `dashboard` runs on: `run`'s `--store`,
 * else TROUPE_STORE when set; undefined for LMDB. A bad one is a usage error, before anything
 * starts (and never echoed: it may hold a password).
 */
function storeOf(given: unknown): string | undefined {
  try {
    if (typeof given === 'string') return postgresUrl(given, '--store');
    return resolveStore(undefined, process.env.TROUPE_STORE)?.postgres;
  } catch (error) {
    throw usageError((error as Error).message);
  }
}

/** The version in the package.json of the package this binary is in (dist/src/cli/ -> the root). */
function packageVersion(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version?: unknown };
  if (typeof pkg.version !== 'string') throw new CliError('INTERNAL', 'the package.json of troupe has no version');
  return pkg.version;
}

function report(error: unknown, json: boolean): number {
  const { code, message } = describeError(error);
  if (json) process.stderr.write(`${JSON.stringify({ error: { code, message } })}\n`);
  else {
    process.stderr.write(`troupe: ${code}: ${message}\n`);
    if (error instanceof CliError && error.code === 'USAGE') process.stderr.write('run `troupe help` for usage\n');
    if (code === 'INTERNAL' && error instanceof Error && error.stack) process.stderr.write(`${error.stack}\n`);
  }
  return error instanceof CliError ? error.exitCode : EXIT.FAILED;
}

/**
 * Exits with `code` once stdout and stderr have flushed: a pipe takes writes asynchronously, and
 * process.exit drops what it has not taken yet. It still exits then, whatever else (a worker
 * pool) holds the event loop.
 */
function exitWhenFlushed(code: number): void {
  process.exitCode = code;
  process.stdout.write('', () => process.stderr.write('', () => process.exit(code)));
}

const json = { value: process.argv.includes('--json') };
// Aborted by Ctrl-C, or when stdout or stderr closes: a wait or a follow then ends cleanly.
const abort = new AbortController();
// Set once stdout or stderr fails, mostly EPIPE: whoever read it has gone (`troupe list | head -1`).
let outputClosed = false;
const onOutputError = () => {
  outputClosed = true;
  abort.abort();
};
process.stdout.on('error', onOutputError);
process.stderr.on('error', onOutputError);

main(process.argv.slice(2), json, abort).then(
  // A follow that a closed stdout stopped ends as Ctrl-C ends it, but nobody interrupted it.
  (code) => exitWhenFlushed(outputClosed && code === EXIT.INTERRUPTED ? EXIT.OK : code),
  (error: unknown) => {
    if (outputClosed && error instanceof CliError && error.code === 'INTERRUPTED') return exitWhenFlushed(EXIT.OK);
    exitWhenFlushed(report(error, json.value));
  },
);
