/**
 * The `troupe` binary, run as a child process against temp data dirs: `troupe run` serving the
 * control socket, the client commands over it, the direct path when no runtime runs, and the
 * error paths. Tests wait for output lines and exits, never for time to pass.
 */
import { existsSync, mkdirSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { builtinAgent, createRuntime, type Task } from 'troupe';
import { renderBar } from '../../src/cli/progress.js';
import { CLI_AGENTS as AGENTS, holdInChild, runCli, serveCli, startCli, stopCli, tempDir, type CliResult as Result, type RunningCli } from '../helpers.js';

/** Runs `fn` with a fresh temp dir, removed afterwards (safe for concurrent tests). */
async function withDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = tempDir('troupe-cli-');
  try {
    return await fn(dir.path);
  } finally {
    dir.cleanup();
  }
}

/** Runs `troupe ...args` to completion. */
const troupe = (args: string[]): Promise<Result> => runCli(args);

/** Starts `troupe run` on `dataDir` and waits for its running line. */
const serve = (dataDir: string, options: { json?: boolean } = {}): Promise<RunningCli & { running: string }> => serveCli(['--agents', AGENTS, '--data-dir', dataDir, '--threads', '1', '--slots', '2'], options);

const json = <T>(result: Result): T => JSON.parse(result.stdout) as T;

describe('troupe run, with commands over the control socket', () => {
  let dir: { path: string; cleanup: () => void };
  let dataDir: string;
  let run: RunningCli & { running: string };
  const cli = (...args: string[]) => troupe([...args, '--data-dir', dataDir]);

  beforeAll(async () => {
    dir = tempDir('troupe-cli-');
    dataDir = join(dir.path, 'data');
    run = await serve(dataDir);
  });

  afterAll(async () => {
    if (run.child.exitCode === null) await stopCli(run);
    dir.cleanup();
  });

  it('prints the running line and reports a live status', async () => {
    expect(run.running).toBe(`troupe running: 3 agents, data dir ${dataDir}, socket ${join(dataDir, 'control.sock')}`);
    const status = await cli('status', '--json');
    expect(status.code).toBe(0);
    const body = json<{ live: boolean; stats: { state: string; agents: Record<string, unknown> }; instances: unknown[] }>(status);
    expect(body.live).toBe(true);
    expect(body.stats.state).toBe('running');
    expect(Object.keys(body.stats.agents)).toEqual(['ask', 'greet', 'hold']);
  });

  it('submit --wait runs a task to done, and show, list, tail and status see it', async () => {
    const submitted = await cli('submit', 'greet', '--input', '{"name":"cli"}', '--wait');
    expect(submitted.stderr).toBe('');
    expect(submitted.code).toBe(0);
    const [id, outcome] = submitted.stdout.trim().split('\n');
    expect(outcome).toBe(`${id} done`);

    // Reads over the socket run side by side.
    const [shownJson, shownText, listedJson, listedText, tail, statusJson, statusText] = await Promise.all([
      cli('show', id!, '--json'),
      cli('show', id!),
      cli('list', '--agent', 'greet', '--state', 'done', '--json'),
      cli('list'),
      cli('tail', id!),
      cli('status', '--json'),
      cli('status'),
    ]);
    expect(json<Task>(shownJson)).toMatchObject({ id, agent: 'greet', state: 'done', output: { greeting: 'hello cli' } });
    expect(shownText.stdout).toMatch(/^state +done$/m);
    expect(json<{ tasks: Task[]; next: string | null }>(listedJson).tasks.map((t) => t.id)).toContain(id);
    expect(listedText.stdout).toMatch(new RegExp(`^${id} +done +greet +1 `, 'm'));
    expect(tail.stdout).toMatch(/^\S+Z info +greeting \{"name":"cli"\}\n\S+Z warn +done greeting\n$/);
    expect(json<{ stats: { tasks: Record<string, number> } }>(statusJson).stats.tasks.done).toBeGreaterThanOrEqual(1);
    expect(statusText.stdout).toMatch(/^greet +0 +0 +- +done \d/m);
  });

  it('submit --label labels a task, and list --label finds it by every label given', async () => {
    const first = await cli('submit', 'greet', '--input', '{"name":"a"}', '--label', 'team=red', '--label', 'url=http://x/?q=1', '--wait');
    const second = await cli('submit', 'greet', '--input', '{"name":"b"}', '--label', 'team=red', '--wait');
    const [a, b] = [first, second].map((result) => result.stdout.trim().split('\n')[0]!);
    expect(first.code).toBe(0);
    const [red, both, bad] = await Promise.all([
      cli('list', '--label', 'team=red', '--json'),
      cli('list', '--label', 'team=red', '--label', 'url=http://x/?q=1', '--json'),
      cli('list', '--label', 'team'),
    ]);
    expect(json<{ tasks: Task[] }>(red).tasks.map((t) => t.id)).toEqual([a, b]);
    expect(json<{ tasks: Task[] }>(both).tasks.map((t) => [t.id, t.labels])).toEqual([[a, { team: 'red', url: 'http://x/?q=1' }]]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--label takes NAME=VALUE/);
  });

  it('answers a malformed id over the socket with INVALID_INPUT and keeps serving', async () => {
    const long = 'x'.repeat(5_000);
    for (const args of [['show', long], ['cancel', long], ['retry', long], ['wait', long], ['tail', long]]) {
      const result = await cli(...args);
      expect(result.code, args[0]).toBe(1);
      expect(result.stderr, args[0]).toMatch(/^troupe: INVALID_INPUT: /);
    }
    expect(run.child.exitCode).toBeNull();
    expect(json<{ live: boolean }>(await cli('status', '--json')).live).toBe(true);
  });

  it('submit --wait exits 1 for a task that fails, and prints its error', async () => {
    const result = await cli('submit', 'greet', '--input', '{"fail":true}', '--wait', '--json');
    expect(result.code).toBe(1);
    expect(json<Task>(result)).toMatchObject({ state: 'failed', error: { code: 'AGENT_ERROR', message: 'asked to fail' } });
  });

  it('freeze, cancel, retry and unfreeze round-trip', async () => {
    expect(json(await cli('freeze', '--reason', 'maintenance', '--json'))).toMatchObject({ frozen: true, reason: 'maintenance' });
    const id = json<Task>(await cli('submit', 'hold', '--input', '{"ms":5}', '--key', 'held-1', '--json')).id;
    expect((await cli('cancel', id, '--reason', 'not now')).stdout).toBe(`${id} cancelled\n`);
    expect(json<Task>(await cli('retry', id, '--json'))).toMatchObject({ id, state: 'queued' });
    expect(json<{ stats: { freeze: { reason: string } } }>(await cli('status', '--json')).stats.freeze.reason).toBe('maintenance');
    expect((await cli('unfreeze')).stdout).toBe('unfrozen\n');
    const waited = await cli('wait', id);
    expect(waited.stdout).toBe(`${id} done\n`);
    expect(waited.code).toBe(0);
    // The same key names the same task.
    expect(json<Task>(await cli('submit', 'hold', '--key', 'held-1', '--json')).id).toBe(id);
  });

  it('cancels a running task', async () => {
    const id = (await cli('submit', 'hold')).stdout.trim();
    const tail = startCli(['tail', id, '--follow', '--data-dir', dataDir]);
    const interrupted = startCli(['tail', id, '--follow', '--data-dir', dataDir]);
    await Promise.all([tail.line(/ holding$/), interrupted.line(/ holding$/)]);
    // Ctrl-C stops a follow (and only the follow: the task carries on).
    interrupted.child.kill('SIGINT');
    expect(await interrupted.exit).toBe(130);
    expect(json<Task>(await cli('show', id, '--json')).state).toBe('running');
    expect((await cli('cancel', id, '--reason', 'enough')).code).toBe(0);
    const waited = await cli('wait', id, '--json');
    expect(waited.code).toBe(1);
    expect(json<Task>(waited)).toMatchObject({ state: 'cancelled' });
    expect(await tail.exit).toBe(0);
  });

  it('send delivers input to a waiting task, and tail --follow streams until it settles', async () => {
    const id = (await cli('submit', 'ask')).stdout.trim();
    const tail = startCli(['tail', id, '--follow', '--json', '--data-dir', dataDir]);
    await tail.line(/"message":"asking"/);
    const sent = await cli('send', id, '{"ok":1}', '--key', 'answer-1');
    expect(sent.stderr).toBe('');
    expect(sent.stdout).toBe(`sent to ${id}\n`);
    expect(await tail.exit).toBe(0);
    expect(tail.lines.map((l) => (JSON.parse(l) as { message: string }).message)).toEqual(['asking', 'got input']);
    const waited = await cli('wait', id, '--json');
    expect(json<Task>(waited)).toMatchObject({ state: 'done', output: { answer: { ok: 1 } } });
  });

  it('schedules add, ls and rm round-trip', async () => {
    const added = await cli('schedules', 'add', 'nightly', '--cron', '0 3 * * *', '--agent', 'greet', '--tz', 'Europe/Berlin', '--input', '{"name":"n"}', '--overlap', 'allow', '--json');
    expect(added.code).toBe(0);
    expect(json(added)).toMatchObject({ id: 'nightly', cron: '0 3 * * *', tz: 'Europe/Berlin', overlap: 'allow', task: { agent: 'greet', input: { name: 'n' } } });
    expect(json<Array<{ id: string }>>(await cli('schedules', 'ls', '--json')).map((s) => s.id)).toEqual(['nightly']);
    expect((await cli('schedules', 'ls')).stdout).toMatch(/^nightly +0 3 \* \* \* +Europe\/Berlin +greet /m);
    expect((await cli('schedules', 'rm', 'nightly')).stdout).toBe('removed nightly\n');
    expect(json(await cli('schedules', 'ls', '--json'))).toEqual([]);
    const bad = await cli('schedules', 'add', 'x', '--cron', 'nope', '--agent', 'greet');
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/^troupe: INVALID_CRON: /);
  });

  it('backup and prune go to the live runtime, which serves on', async () => {
    const id = (await cli('submit', 'greet', '--wait')).stdout.split('\n')[0]!;
    const dest = join(dir.path, 'live-backup');
    const backup = await cli('backup', dest, '--json');
    expect(backup.code).toBe(0);
    expect(json<{ path: string; bytes: number }>(backup)).toMatchObject({ path: dest });
    const copy = await createRuntime({ dataDir: dest, logger: false, threads: 1 });
    try {
      expect((await copy.get(id)).state).toBe('done');
    } finally {
      await copy.close();
    }
    const pruned = await cli('prune', '--state', 'done', '--json');
    expect(pruned.code).toBe(0);
    expect(json<{ tasks: number }>(pruned).tasks).toBeGreaterThanOrEqual(1);
    expect((await cli('show', id)).stderr).toMatch(/NOT_FOUND/);
    expect(json<{ live: boolean }>(await cli('status', '--json')).live).toBe(true);
  });

  it("prints the runtime's errors with their code, as text or JSON", async () => {
    const missing = await cli('show', 'no-such-task');
    expect(missing.code).toBe(1);
    expect(missing.stderr).toBe('troupe: NOT_FOUND: no task no-such-task\n');
    const unknown = await cli('submit', 'nobody', '--json');
    expect(unknown.code).toBe(1);
    expect(JSON.parse(unknown.stderr)).toMatchObject({ error: { code: 'UNKNOWN_AGENT' } });
  });

  it('refuses a second runtime on the same data dir with DATA_DIR_LOCKED', async () => {
    const second = await troupe(['run', '--agents', AGENTS, '--data-dir', dataDir, '--threads', '1']);
    expect(second.code).toBe(1);
    expect(second.stderr).toMatch(/^troupe: DATA_DIR_LOCKED: data dir .* is locked by live process \d+/);
    // The first one still answers.
    expect((await cli('status')).code).toBe(0);
  });
});

// These use their own data dirs, so they run side by side.
describe.concurrent('shutdown, the direct path and usage', () => {
  it('closes gracefully on SIGTERM; then commands open the data dir directly, and a restart sees the data', ({ expect }) => withDir(async (root) => {
    const dataDir = join(root, 'data');
    const first = await serve(dataDir);
    const id = (await troupe(['submit', 'greet', '--wait', '--data-dir', dataDir])).stdout.split('\n')[0]!;
    expect(await stopCli(first)).toBe(0);
    expect(first.lines.at(-1)).toBe('troupe stopped');
    expect(existsSync(join(dataDir, 'control.sock'))).toBe(false);

    // No runtime: reads work on the dir itself, waits and follows need a live runtime.
    expect(json<Task>(await troupe(['show', id, '--json', '--data-dir', dataDir]))).toMatchObject({ id, state: 'done' });
    const listed = await troupe(['list', '--json', '--data-dir', dataDir]);
    expect(json<{ tasks: Task[] }>(listed).tasks.map((t) => t.id)).toEqual([id]);
    expect(json<{ live: boolean }>(await troupe(['status', '--json', '--data-dir', dataDir])).live).toBe(false);
    for (const args of [['submit', 'greet', '--wait'], ['tail', id, '--follow']]) {
      const refused = await troupe([...args, '--data-dir', dataDir]);
      expect(refused.code).toBe(3);
      expect(refused.stderr).toBe(`troupe: NOT_RUNNING: no runtime is running in ${dataDir}: start one with \`troupe run --agents <dir> --data-dir ${dataDir}\`\n`);
    }

    const second = await serve(dataDir, { json: true });
    expect(JSON.parse(second.running)).toEqual({ event: 'running', pid: second.child.pid, agents: ['ask', 'greet', 'hold'], dataDir, socket: join(dataDir, 'control.sock') });
    expect(json<Task>(await troupe(['show', id, '--json', '--data-dir', dataDir]))).toMatchObject({ id, state: 'done', output: { greeting: 'hello world' } });
    expect(await stopCli(second)).toBe(0);
    expect(JSON.parse(second.lines.at(-1)!)).toEqual({ event: 'closed', signal: 'SIGTERM' });
    expect(second.stderr()).toBe('');
  }));

  it('ignores the stale socket a killed runtime left, and the next run replaces it', ({ expect }) => withDir(async (dataDir) => {
    const killed = await serve(dataDir);
    killed.child.kill('SIGKILL');
    await killed.exit;
    expect(existsSync(join(dataDir, 'control.sock'))).toBe(true);
    expect(json<{ live: boolean }>(await troupe(['status', '--json', '--data-dir', dataDir])).live).toBe(false);
    const next = await serve(dataDir);
    expect(json<{ live: boolean }>(await troupe(['status', '--json', '--data-dir', dataDir])).live).toBe(true);
    expect(await stopCli(next)).toBe(0);
  }));

  it('puts the socket of a data dir whose path is too long in a private directory, and the commands reach it', ({ expect }) => withDir(async (root) => {
    const dataDir = join(root, 'a-data-dir-whose-path-is-too-long-for-a-unix-socket-'.repeat(3));
    const run = await serve(dataDir, { json: true });
    const { socket } = JSON.parse(run.running) as { socket: string };
    try {
      expect(dirname(socket)).not.toBe(tmpdir());
      const dir = statSync(dirname(socket));
      expect(dir.uid).toBe(process.getuid!());
      expect(dir.mode & 0o077).toBe(0);
      expect(json<{ live: boolean }>(await troupe(['status', '--json', '--data-dir', dataDir])).live).toBe(true);
    } finally {
      expect(await stopCli(run)).toBe(0);
    }
  }));

  it('works on a data dir an embedding app wrote, with no runtime running', ({ expect }) => withDir(async (dataDir) => {
    const rt = await createRuntime({ dataDir, logger: false, threads: 1, agents: [builtinAgent('echo')] });
    const task = await rt.wait((await rt.submit({ agent: 'echo', input: 'direct' })).id);
    await rt.close();
    expect((await troupe(['show', task.id, '--data-dir', dataDir])).stdout).toMatch(/^output +direct$/m);
    const cancel = await troupe(['retry', task.id, '--data-dir', dataDir]);
    expect(cancel.code).toBe(1);
    expect(cancel.stderr).toMatch(/^troupe: ILLEGAL_TRANSITION: /);
  }));

  it('says so when a runtime holds the data dir but does not answer on the socket', ({ expect }) => withDir(async (dataDir) => {
    const holder = await holdInChild(dataDir);
    try {
      const result = await troupe(['list', '--data-dir', dataDir]);
      expect(result.code).toBe(3);
      expect(result.stderr).toBe(`troupe: NOT_ANSWERING: a runtime holds ${dataDir} but does not answer on ${join(dataDir, 'control.sock')}\n`);
    } finally {
      holder.kill('SIGKILL');
    }
  }));

  it('exits 2 with a clear message for a data dir that does not exist', ({ expect }) => withDir(async (root) => {
    const dataDir = join(root, 'nowhere');
    for (const json of [false, true]) {
      const result = await troupe(['list', '--data-dir', dataDir, ...(json ? ['--json'] : [])]);
      expect(result.code).toBe(2);
      const message = `no Troupe data dir at ${dataDir}: start a runtime on it with \`troupe run --agents <dir> --data-dir ${dataDir}\``;
      expect(result.stderr).toBe(json ? `${JSON.stringify({ error: { code: 'NO_DATA_DIR', message } })}\n` : `troupe: NO_DATA_DIR: ${message}\n`);
    }
    // An empty dir is not a data dir either.
    const empty = join(root, 'empty');
    mkdirSync(empty);
    expect((await troupe(['status', '--data-dir', empty])).code).toBe(2);
  }));

  it('prints the usage for help and --help', async ({ expect }) => {
    for (const result of await Promise.all([['help'], ['--help'], ['list', '--help']].map((args) => troupe(args)))) {
      expect(result.code).toBe(0);
      expect(result.stdout).toContain('troupe run --agents DIR');
      expect(result.stdout).toContain('troupe schedules add ID --cron EXPR');
    }
  });

  it('rejects a bad command, option or argument count with a usage error', ({ expect }) => withDir(async (root) => {
    const cases: Array<[string[], RegExp]> = [
      [['bogus'], /^troupe: USAGE: unknown command "bogus"\n/],
      [['list', '--nope'], /^troupe: USAGE: list: Unknown option '--nope'\n/],
      [['show'], /^troupe: USAGE: show takes ID \(got none\)\n/],
      [['schedules'], /^troupe: USAGE: schedules needs a subcommand/],
      [['list', '--limit', 'lots'], /^troupe: USAGE: --limit must be an integer >= 1/],
      [['run'], /^troupe: USAGE: run needs --agents DIR\n/],
      [['run', '--agents', '/no/such/dir'], /^troupe: USAGE: --agents \/no\/such\/dir: no such directory\n/],
      // Checked before the CLI looks for a runtime or the data dir: a usage error, not NOT_RUNNING or NO_DATA_DIR.
      [['submit', 'greet', '--label', 'team'], /^troupe: USAGE: --label takes NAME=VALUE \(got "team"\)\n/],
      [['list', '--label', 'team'], /^troupe: USAGE: --label takes NAME=VALUE \(got "team"\)\n/],
      [['prune', '--before', 'someday'], /^troupe: USAGE: --before must be an ISO 8601 date or epoch milliseconds \(got "someday"\)\n/],
      [['schedules', 'add', 'nightly', '--agent', 'greet'], /^troupe: USAGE: schedules add needs --cron and --agent\n/],
      [['schedules', 'add', 'nightly', '--cron', '0 3 * * *', '--agent', 'greet', '--overlap', 'never'], /^troupe: USAGE: --overlap must be one of skip, allow, queue_one\n/],
    ];
    const results = await Promise.all(cases.map(([args]) => troupe([...args, '--data-dir', join(root, 'data')])));
    cases.forEach(([args, message], i) => {
      expect(results[i]!.code, args.join(' ')).toBe(2);
      expect(results[i]!.stderr, args.join(' ')).toMatch(message);
    });
    const asJson = await troupe(['bogus', '--json']);
    expect(JSON.parse(asJson.stderr)).toEqual({ error: { code: 'USAGE', message: 'unknown command "bogus"' } });
  }));

  it('renders a bar with percentage and message, clamped to 0..1', ({ expect }) => {
    expect(renderBar(0.45, 10, 'running')).toBe('[#####.....]  45% running');
    expect(renderBar(0, 4)).toBe('[....]   0%');
    expect(renderBar(1.7, 4)).toBe('[####] 100%');
    expect(renderBar(Number.NaN, 4, 'x')).toBe('[....]   0% x');
  });
});
