/**
 * The `troupe` binary on PostgreSQL (issue #15), as a user runs it: `troupe run --store URL` and
 * `TROUPE_STORE=URL troupe run` on one scratch database, each with a data dir of its own that holds
 * only its control socket; the commands reach each through its socket and see the one database;
 * a second runtime on a served dir and a bad store are refused; with no runtime running, commands
 * open only LMDB data dirs and say what they need instead of making an empty one; `troupe demo`
 * stays on LMDB; SIGTERM closes both cleanly.
 */
import { chmodSync, existsSync, mkdirSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Task } from 'troupe';
import { CLI_AGENTS, runCli, scratchOnServer, serveCli, stopCli, tempDir, type CliResult, type RunningCli } from '../helpers.js';

const json = <T>(result: CliResult): T => JSON.parse(result.stdout) as T;

describe('troupe run --store, and TROUPE_STORE, on one database', () => {
  let db: { url: string; drop: () => Promise<void> };
  let dir: { path: string; cleanup: () => void };
  /** `troupe run --store` (with a dashboard) and `TROUPE_STORE=… troupe run`, on the same database. */
  let a: RunningCli & { running: string };
  let b: RunningCli & { running: string };
  let dirA: string;
  let dirB: string;
  const inA = (...args: string[]) => runCli([...args, '--data-dir', dirA]);
  const inB = (...args: string[]) => runCli([...args, '--data-dir', dirB]);

  beforeAll(async () => {
    // A copy of the run's migrated template: the runtimes find the schema in place.
    db = await scratchOnServer();
    dir = tempDir('troupe-cli-pg-');
    dirA = join(dir.path, 'a');
    dirB = join(dir.path, 'b');
    const common = ['--agents', CLI_AGENTS, '--threads', '1', '--slots', '2'];
    [a, b] = await Promise.all([
      serveCli([...common, '--data-dir', dirA, '--store', db.url, '--dashboard']),
      serveCli([...common, '--data-dir', dirB], { env: { TROUPE_STORE: db.url } }),
    ]);
  });

  afterAll(async () => {
    for (const run of [a, b]) if (run?.child.exitCode === null) await stopCli(run);
    dir?.cleanup();
    await db?.drop();
  });

  it('prints the running line; the data dir holds only the control socket', async () => {
    expect(a.running).toBe(`troupe running: 3 agents, on PostgreSQL, socket ${join(dirA, 'control.sock')}`);
    expect(b.running).toBe(`troupe running: 3 agents, on PostgreSQL, socket ${join(dirB, 'control.sock')}`);
    expect(readdirSync(dirA)).toEqual(['control.sock']);
    expect(readdirSync(dirB)).toEqual(['control.sock']);
    // --dashboard serves the cluster's dashboard, as on LMDB.
    const url = /^troupe dashboard: (http:\/\/127\.0\.0\.1:\d+\/)$/.exec(await a.line(/^troupe dashboard: /))![1]!;
    expect(((await (await fetch(`${url}api/overview`)).json()) as { store: string }).store).toBe('postgres');
  });

  it('refuses a second runtime on a data dir one serves, which serves on (the next test submits through it)', async () => {
    const second = await runCli(['run', '--agents', CLI_AGENTS, '--store', db.url, '--data-dir', dirA, '--threads', '1']);
    expect(second.code).toBe(1);
    expect(second.stderr).toBe(`troupe: CONTROL_FAILED: another process answers on ${join(dirA, 'control.sock')}\n`);
    expect(readdirSync(dirA)).toEqual(['control.sock']);
  });

  it('submit --wait runs a task to done, and show, list, tail and status through the other runtime see it', async () => {
    const submitted = await inA('submit', 'greet', '--input', '{"name":"pg"}', '--wait');
    expect(submitted.stderr).toBe('');
    expect(submitted.code).toBe(0);
    const [id, outcome] = submitted.stdout.trim().split('\n');
    expect(outcome).toBe(`${id} done`);

    const [shown, listed, tail, status] = await Promise.all([inB('show', id!, '--json'), inB('list', '--json'), inB('tail', id!), inB('status', '--json')]);
    expect(json<Task>(shown)).toMatchObject({ id, agent: 'greet', state: 'done', output: { greeting: 'hello pg' } });
    expect(json<{ tasks: Task[] }>(listed).tasks.map((t) => t.id)).toEqual([id]);
    expect(tail.stdout).toMatch(/^\S+Z info +greeting \{"name":"pg"\}\n\S+Z warn +done greeting\n$/);
    // The cluster's counts taken for the call, not the background count of an earlier one (none yet).
    const body = json<{ live: boolean; stats: { state: string; tasks: Record<string, number> }; instances: unknown[] }>(status);
    expect(body).toMatchObject({ live: true, stats: { state: 'running', tasks: { done: 1, queued: 0 } }, instances: [] });
  });

  it('takes the data dirs LMDB takes: one whose parents are missing (made 0700), and one open to others (a warning)', async () => {
    const nested = join(dir.path, 'nodes', 'a');
    const loose = join(dir.path, 'loose');
    mkdirSync(loose);
    chmodSync(loose, 0o755);
    const common = ['--agents', CLI_AGENTS, '--store', db.url, '--threads', '1'];
    const runs = await Promise.all([serveCli([...common, '--data-dir', nested]), serveCli([...common, '--data-dir', loose])]);
    try {
      expect(statSync(nested).mode & 0o777).toBe(0o700);
      expect(statSync(loose).mode & 0o777).toBe(0o755);
      expect(runs[1].stderr()).toContain(`${loose} has mode 0755: group or others can reach the data dir`);
      expect(runs[0].stderr()).not.toContain('has mode');
      expect((await runCli(['status', '--data-dir', nested])).code).toBe(0);
    } finally {
      expect(await Promise.all(runs.map(stopCli))).toEqual([0, 0]);
    }
  });

  it('refuses a store that is not PostgreSQL with a usage error, before anything starts', async () => {
    const root = join(dir.path, 'bad');
    const [flag, env] = await Promise.all([
      runCli(['run', '--agents', CLI_AGENTS, '--store', 'mysql://me:secret@x', '--data-dir', root]),
      // `troupe dashboard` with no runtime running serves on TROUPE_STORE's database: it checks it too.
      runCli(['dashboard', '--data-dir', root], { env: { TROUPE_STORE: 'mysql://me:secret@x' } }),
    ]);
    expect(flag.code).toBe(2);
    // It names the option and never echoes the URL (a password may be in it).
    expect(flag.stderr).toBe('troupe: USAGE: --store must be a postgres:// or postgresql:// URL, not mysql:\nrun `troupe help` for usage\n');
    expect(env.code).toBe(2);
    expect(env.stderr).toMatch(/^troupe: USAGE: the environment variable TROUPE_STORE must be a postgres:\/\/ or postgresql:\/\/ URL, not mysql:\n/);
    expect(existsSync(root)).toBe(false);
  });

  it('under TROUPE_STORE, demo and the commands with no runtime running keep to LMDB data dirs; dashboard makes no empty one', async () => {
    const empty = join(dir.path, 'empty');
    mkdirSync(empty);
    const env = { TROUPE_STORE: db.url };
    // The demo writes to its data dir, not to the database (which holds a greet task by now), and
    // the commands open that dir, not the cluster.
    const lmdb = join(dir.path, 'lmdb');
    expect((await runCli(['demo', '--tasks', '1', '--threads', '1', '--data-dir', lmdb], { env })).code).toBe(0);
    const [list, listed, dashboard] = await Promise.all([
      runCli(['list', '--data-dir', empty], { env }),
      runCli(['list', '--json', '--data-dir', lmdb], { env }),
      runCli(['dashboard', '--data-dir', empty], { env: { TROUPE_STORE: '' } }),
    ]);
    expect(list.code).toBe(3);
    expect(list.stderr).toBe(`troupe: NOT_RUNNING: no runtime is running in ${empty} (TROUPE_STORE is set: the commands reach PostgreSQL only through a running runtime): start one with \`troupe run --agents <dir> --data-dir ${empty}\`\n`);
    expect(json<{ tasks: Task[] }>(listed).tasks.map((t) => `${t.agent} ${t.state}`)).toEqual(['echo done']);
    expect(dashboard.code).toBe(2);
    expect(dashboard.stderr).toMatch(/^troupe: NO_DATA_DIR: no Troupe data dir at /);
    expect(readdirSync(empty)).toEqual([]);
  });

  it('closes both cleanly on SIGTERM, removing their sockets: the data dirs are left empty', async () => {
    const [exitA, exitB] = await Promise.all([stopCli(a), stopCli(b)]);
    expect([exitA, exitB]).toEqual([0, 0]);
    expect([a.lines.at(-1), b.lines.at(-1)]).toEqual(['troupe stopped', 'troupe stopped']);
    expect(a.stderr()).toMatch(/^troupe: SIGTERM, closing/m);
    expect([readdirSync(dirA), readdirSync(dirB)]).toEqual([[], []]);
  });
});
