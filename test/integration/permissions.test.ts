/**
 * File permissions (issue 9 item 4): the data dir and every dir in it are 0700, its files and the
 * control socket 0600, whatever the umask; an existing data dir with looser modes is left alone and
 * named in a warning. The umask is process-global, so each runtime runs in a child process.
 */
import { spawn } from 'node:child_process';
import { chmodSync, mkdirSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { CLI_AGENTS as AGENTS, CLI_PATH as CLI, followChild, scratchDirs, stopCli, type RunningCli } from '../helpers.js';

const CHILD = fileURLToPath(new URL('../../dist/test/fixtures/permissions/child.js', import.meta.url));

const dir = scratchDirs();

/** A child process whose stdout lines can be awaited. */
interface Child extends RunningCli {
  /** Sends SIGTERM and resolves with the exit code. */
  stop(): Promise<number | null>;
}

/** Runs `node ...args` under `umask` (set by the shell, so it holds from the process's first file). */
function spawnUnder(umask: string, args: string[]): Child {
  const followed = followChild(spawn('/bin/sh', ['-c', `umask ${umask} && exec "$0" "$@"`, process.execPath, ...args], { stdio: ['ignore', 'pipe', 'pipe'] }));
  return { ...followed, stop: () => stopCli(followed) };
}

async function runtimeChild(dataDir: string, umask: string, given?: string): Promise<Child> {
  const child = spawnUnder(umask, [CHILD, dataDir, umask, ...(given ? [given] : [])]);
  await child.line(/^settled /);
  return child;
}

const modeOf = (path: string) => statSync(path).mode & 0o777;

/** Every path under (and including) `root` with its mode in octal, e.g. `{ '.': '700', 'data.mdb': '600' }`. */
function modesUnder(root: string): Record<string, string> {
  const modes: Record<string, string> = {};
  const walk = (path: string, name: string) => {
    const stat = statSync(path);
    modes[name] = (stat.mode & 0o777).toString(8);
    if (stat.isDirectory()) for (const entry of readdirSync(path)) walk(join(path, entry), name === '.' ? entry : `${name}/${entry}`);
  };
  walk(root, '.');
  return modes;
}

/** Whether every dir in `modes` is 700 and every other entry 600. */
function expectPrivate(root: string, modes: Record<string, string>): void {
  for (const [name, mode] of Object.entries(modes)) {
    expect({ name, mode }).toEqual({ name, mode: statSync(join(root, name)).isDirectory() ? '700' : '600' });
  }
}

/** The pino lines at warn level (40) in `lines`. */
const warnings = (lines: string[]) =>
  lines.filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { level: number; path?: string; mode?: string; msg: string }).filter((l) => l.level === 40);

describe('file permissions', () => {
  for (const umask of ['000', '022']) {
    it(`under umask ${umask}, a new data dir is 0700 with 0600 files and 0700 workspaces; a given workspace keeps its mode`, async () => {
      const root = dir();
      const dataDir = join(root, 'nested', 'data');
      const given = join(root, 'given');
      mkdirSync(given);
      chmodSync(given, 0o755);
      const child = await runtimeChild(dataDir, umask, given);
      const open = modesUnder(dataDir);
      // While open: the lock file, both LMDB files and the kept per-task workspace.
      expect(Object.keys(open).filter((name) => !name.startsWith('workspaces/')).sort()).toEqual(['.', 'data.mdb', 'lock.mdb', 'troupe.lock', 'workspaces']);
      expect(Object.keys(open).filter((name) => name.startsWith('workspaces/'))).toHaveLength(1);
      expectPrivate(dataDir, open);
      expect(modeOf(join(root, 'nested'))).toBe(0o700);
      expect(modeOf(given)).toBe(0o755);
      expect(await child.stop()).toBe(0);
      expect(child.lines).toContain('closed');
      expectPrivate(dataDir, modesUnder(dataDir));
      expect(warnings(child.lines)).toEqual([]);
    });
  }

  it('an existing data dir with loose modes is left alone and named in a warning; new files are still 0600', async () => {
    const dataDir = join(dir(), 'data');
    mkdirSync(dataDir);
    chmodSync(dataDir, 0o755);
    const first = await runtimeChild(dataDir, '022');
    expect(await first.stop()).toBe(0);
    expect(warnings(first.lines)).toEqual([expect.objectContaining({ path: dataDir, mode: '0755', msg: expect.stringContaining(dataDir) })]);
    expect(modeOf(dataDir)).toBe(0o755);
    expect(modeOf(join(dataDir, 'data.mdb'))).toBe(0o600);
    expect(modeOf(join(dataDir, 'workspaces'))).toBe(0o700);

    // A data file loosened since (say, by an older Troupe) is reported too, and not changed.
    chmodSync(join(dataDir, 'data.mdb'), 0o644);
    const second = await runtimeChild(dataDir, '022');
    expect(await second.stop()).toBe(0);
    expect(warnings(second.lines).map((w) => [w.path, w.mode])).toEqual([
      [dataDir, '0755'],
      [join(dataDir, 'data.mdb'), '0644'],
    ]);
    expect(modeOf(join(dataDir, 'data.mdb'))).toBe(0o644);
  });

  it('troupe run under umask 000 makes its control socket 0600, and warns on stderr about a loose existing data dir', async () => {
    const dataDir = join(dir(), 'data');
    const serve = () => spawnUnder('000', [CLI, 'run', '--agents', AGENTS, '--data-dir', dataDir, '--threads', '1', '--slots', '1', '--json']);
    const run = serve();
    const { socket } = JSON.parse(await run.line(/^\{"event":"running"/)) as { socket: string };
    expect(statSync(socket).isSocket()).toBe(true);
    expect(modeOf(socket)).toBe(0o600);
    expectPrivate(dataDir, modesUnder(dataDir));
    expect(await run.stop()).toBe(0);
    expect(run.stderr()).not.toMatch(/"level":40/);

    chmodSync(dataDir, 0o755);
    const again = serve();
    await again.line(/^\{"event":"running"/);
    expect(await again.stop()).toBe(0);
    expect(again.stderr()).toContain(`"path":"${dataDir}","mode":"0755"`);
  });
});
