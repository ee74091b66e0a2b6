/**
 * What the `troupe` binary prints, run as a child process: `--version`, task states in colour
 * (FORCE_COLOR, NO_COLOR, a pipe) with the columns still aligned, and the one "no runtime is
 * running" error of every command that needs a running runtime.
 */
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, afterAll, describe, expect, it } from 'vitest';
import { builtinAgent, createRuntime } from 'troupe';
import { CLIENT_COMMANDS, type CommandContext } from '../../src/cli/commands.js';
import { runCli, tempDir } from '../helpers.js';

const VERSION = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;

const ESC = '\u001b';
const strip = (text: string) => text.replace(/\u001b\[[0-9;]*m/g, '');

describe('troupe --version', () => {
  it("prints the version in the package's package.json, and help mentions it", async () => {
    const [long, short, word, afterCommand, json, help] = await Promise.all([
      runCli(['--version']),
      runCli(['-v']),
      runCli(['version']),
      runCli(['list', '--version', '--data-dir', '/no/such/dir']),
      runCli(['--version', '--json']),
      runCli(['--help']),
    ]);
    for (const result of [long, short, word, afterCommand]) expect(result).toEqual({ code: 0, stdout: `${VERSION}\n`, stderr: '' });
    expect(json).toEqual({ code: 0, stdout: `${JSON.stringify({ version: VERSION })}\n`, stderr: '' });
    expect(help.stdout).toMatch(/^ {2}-v, --version +the version of this troupe$/m);
  });
});

describe('task states in colour', () => {
  let dir: { path: string; cleanup: () => void };
  const ids: Record<'done' | 'failed' | 'queued' | 'cancelled', string> = { done: '', failed: '', queued: '', cancelled: '' };
  // One at a time: each opens the data dir itself (no runtime runs), and the dir takes one at a time.
  const troupe = (args: string[], env: Record<string, string> = {}) => runCli([...args, '--data-dir', dir.path], { env });
  const inTurn = async (runs: Array<[string[], Record<string, string>?]>) => {
    const results = [];
    for (const [args, env] of runs) results.push(await troupe(args, env));
    return results;
  };

  beforeAll(async () => {
    dir = tempDir('troupe-cli-output-');
    const rt = await createRuntime({ dataDir: dir.path, logger: false, threads: 1, agents: [builtinAgent('echo'), builtinAgent('fail')] });
    try {
      ids.done = (await rt.wait((await rt.submit({ agent: 'echo', input: 1 })).id)).id;
      ids.failed = (await rt.wait((await rt.submit({ agent: 'fail', input: { mode: 'fatal' } })).id)).id;
      await rt.freeze('hold the rest');
      ids.queued = (await rt.submit({ agent: 'echo', input: 2 })).id;
      ids.cancelled = (await rt.cancel((await rt.submit({ agent: 'fail', input: 3 })).id, 'not needed')).id;
    } finally {
      await rt.close();
    }
  });

  afterAll(() => dir.cleanup());

  it('colours the state cells of list with FORCE_COLOR, and pads by what shows so the columns line up', async () => {
    const [forced, piped] = await inTurn([[['list'], { FORCE_COLOR: '1' }], [['list']]]);
    expect(forced.code).toBe(0);
    const row = (id: string) => forced.stdout.split('\n').find((line) => line.startsWith(id))!;
    expect(row(ids.done)).toContain(`${ESC}[32mdone${ESC}[39m`);
    expect(row(ids.failed)).toContain(`${ESC}[31mfailed${ESC}[39m`);
    expect(row(ids.queued)).toContain(`${ESC}[33mqueued${ESC}[39m`);
    expect(row(ids.cancelled)).toContain(`${ESC}[2mcancelled${ESC}[22m`);
    // Colour only: without its escapes the output is the plain table, column for column.
    expect(strip(forced.stdout)).toBe(piped.stdout);
    const [header, ...rows] = strip(forced.stdout).trimEnd().split('\n');
    const columns = ['STATE', 'AGENT', 'ATTEMPTS', 'CREATED'].map((name) => header!.indexOf(name));
    expect(rows).toHaveLength(4);
    for (const line of rows) {
      const cells = line.split(/ {2,}/);
      columns.forEach((at, i) => expect(line.slice(at).startsWith(`${cells[i + 1]!}`), `${line}: column ${i + 1} at ${at}`).toBe(true));
    }
  });

  it("list's hint at the next page keeps the filters, the limit and the data dir", async () => {
    const [first] = await inTurn([[['list', '--agent', 'echo', '--limit', '1']]]);
    expect(first!.stdout).toContain(ids.done);
    expect(first!.stderr).toBe(`more: troupe list --agent echo --limit 1 --data-dir ${dir.path} --after ${ids.done}\n`);
    // The hint runs as printed (these words need no quoting), and gives the next page.
    const words = first!.stderr.slice('more: troupe '.length).trim().split(' ');
    const next = await runCli(words);
    expect(next.code).toBe(0);
    expect(next.stdout).toContain(ids.queued);
    expect(next.stdout).not.toContain(ids.done);
    expect(next.stderr).toBe(`more: troupe list --agent echo --limit 1 --data-dir ${dir.path} --after ${ids.queued}\n`);
  });

  it('colours the counts of status and the state of show', async () => {
    const [status, show] = await inTurn([[['status'], { FORCE_COLOR: '1' }], [['show', ids.failed], { FORCE_COLOR: '1' }]]);
    expect(status.stdout).toMatch(new RegExp(`^tasks +${ESC}\\[33mqueued 1${ESC}\\[39m, running 0, .*${ESC}\\[32mdone 1${ESC}\\[39m, ${ESC}\\[31mfailed 1${ESC}\\[39m`, 'm'));
    expect(show.stdout).toMatch(new RegExp(`^state +${ESC}\\[31mfailed${ESC}\\[39m$`, 'm'));
  });

  it('prints no colour with NO_COLOR, with FORCE_COLOR=0, to a pipe, or with --json', async () => {
    const results = await inTurn([
      [['list'], { FORCE_COLOR: '1', NO_COLOR: '1' }],
      [['list'], { NO_COLOR: 'yes' }],
      [['list'], { FORCE_COLOR: '0' }],
      [['list']],
      [['status'], { FORCE_COLOR: '1', NO_COLOR: '1' }],
      [['show', ids.done], { FORCE_COLOR: '1', NO_COLOR: '1' }],
      [['list', '--json'], { FORCE_COLOR: '1' }],
    ]);
    for (const result of results) {
      expect(result.stderr).toBe('');
      expect(result.code).toBe(0);
      expect(result.stdout).toContain('done');
      expect(result.stdout).not.toContain(ESC);
    }
    // An empty NO_COLOR does not count (no-color.org): FORCE_COLOR still colours.
    expect((await troupe(['list'], { FORCE_COLOR: '1', NO_COLOR: '' })).stdout).toContain(`${ESC}[32mdone${ESC}[39m`);
  });
});

describe('no runtime running', () => {
  /** Every command that needs a running runtime, as the test runs it. */
  const LIVE: Record<string, string[]> = {
    submit: ['submit', 'echo'],
    wait: ['wait', 'some-task'],
    tail: ['tail', 'some-task', '--follow'],
    'schedules add': ['schedules', 'add', 'nightly', '--cron', '0 3 * * *', '--agent', 'echo'],
  };

  it('covers every command that needs one', () => {
    const ctx = { values: { follow: true, wait: true } } as unknown as CommandContext;
    expect(Object.keys(CLIENT_COMMANDS).filter((name) => CLIENT_COMMANDS[name]!.live(ctx))).toEqual(Object.keys(LIVE));
  });

  it('is the same line and exit code from each of them, on an empty dir, a missing one and one with a store', async () => {
    const root = tempDir('troupe-cli-norun-');
    try {
      const empty = join(root.path, 'empty');
      mkdirSync(empty);
      const missing = join(root.path, 'missing');
      const stored = join(root.path, "it's stored");
      await (await createRuntime({ dataDir: stored, logger: false, threads: 1 })).close();
      for (const dataDir of [empty, missing, stored]) {
        const quoted = dataDir === stored ? `'${root.path}/it'\\''s stored'` : dataDir;
        const message = `no runtime is running in ${dataDir}: start one with \`troupe run --agents <dir> --data-dir ${quoted}\``;
        const runs = Object.values(LIVE).flatMap((args) => [[...args], [...args, '--json'], ...(args[0] === 'submit' ? [[...args, '--wait']] : [])]);
        const results = await Promise.all(runs.map((args) => runCli([...args, '--data-dir', dataDir])));
        results.forEach((result, i) => {
          const json = runs[i]!.includes('--json');
          expect(result, `${runs[i]!.join(' ')} on ${dataDir}`).toEqual({
            code: 3,
            stdout: '',
            stderr: json ? `${JSON.stringify({ error: { code: 'NOT_RUNNING', message } })}\n` : `troupe: NOT_RUNNING: ${message}\n`,
          });
        });
      }
    } finally {
      root.cleanup();
    }
  });
});
