/**
 * `npm run bench` as a user runs it (issue 9 item 9): it prints every setting it runs with, uses
 * one in-flight window for every runner (1,024 unless told), and puts raw Piscina and Troupe in
 * one table with the ratio. Only a tiny run here: figures belong to the bench, not to tests.
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { pgServer } from '../helpers.js';
import { now, openLoop } from '../../bench/measure.js';

const BENCH = new URL('../../dist/bench/dispatch.js', import.meta.url).pathname;
const run = promisify(execFile);
/** No peers: their servers are the bench's business, not this test's. */
const env = Object.fromEntries(Object.entries(process.env).filter(([key]) => key !== 'PG_URL' && key !== 'REDIS_URL'));

describe('npm run bench', () => {
  it('defaults to 100,000 tasks, 3 runs and a window of 1,024 for every runner, and says so', async () => {
    const { stdout } = await run(process.execPath, [BENCH, '--settings', '--json'], { env });
    const { settings } = JSON.parse(stdout) as { settings: Record<string, unknown> & { runners: Record<string, string> } };
    expect(settings).toMatchObject({ tasks: 100_000, warmup: 5_000, window: 1_024, threads: 2, slots: [1, 4, 16], runs: 3, latencySeconds: 3, latencyWarmupSeconds: 1, load: 0.5 });
    expect(Object.keys(settings.runners)).toEqual(['piscina', 'troupe']);
    const header = (await run(process.execPath, [BENCH, '--settings'], { env })).stdout;
    expect(header).toContain('window 1,024 for every runner');
    expect(header).toContain('# piscina: pool.run() per task');
    expect(header).toContain('# troupe: submit() + wait() per task');
    expect(header).toContain('1 s unmeasured to reach its steady state, then 3 s measured');
  });

  it('runs raw Piscina and Troupe with the same settings and prints both, with the ratio', async () => {
    const args = [BENCH, '--tasks', '300', '--warmup', '50', '--runs', '1', '--slots', '2', '--window', '32', '--latency-seconds', '0.2'];
    const { stdout } = await run(process.execPath, args, { env, timeout: 60_000 });
    expect(stdout).toContain('# npm run bench: 300 no-op tasks per runner and run after 50 warm-up, window 32 for every runner');
    expect(stdout).toContain('## 2×2 (threads × slots), window 32, 300 tasks, 1 run(s)');
    const rows = stdout.split('\n').filter((line) => /^\| (piscina|troupe) \|/.test(line));
    expect(rows.map((row) => row.split('|')[1]!.trim())).toEqual(['piscina', 'troupe']);
    // The baseline's ratio is itself; Troupe's is a positive number.
    expect(rows[0]!.split('|')[4]!.trim()).toBe('1.00');
    expect(Number(rows[1]!.split('|')[4])).toBeGreaterThan(0);
    // The whole process's CPU per task and the cores it kept busy: both positive numbers.
    for (const row of rows) {
      const [perTask, cores] = row.split('|')[8]!.split(',').map(Number);
      expect(perTask).toBeGreaterThan(0);
      expect(cores).toBeGreaterThan(0);
    }
    // The last column: each run's full GCs at half load, a count per run.
    for (const row of rows) expect(row.split('|')[12]!.trim()).toMatch(/^\d+$/);
  });

  it("gives npm run bench's arguments to the dispatch bench, and runs the cluster bench only after a bench", async () => {
    const ALL = new URL('../../dist/bench/all.js', import.meta.url).pathname;
    // npm appends the arguments to the script's command line: its last command must be all.js.
    const { scripts } = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { scripts: Record<string, string> };
    expect(scripts.bench).toMatch(/&& node dist\/bench\/all\.js$/);
    // PG_URL set, but --settings runs no bench: the dispatch bench prints its settings (graphile-worker's
    // among them) and the cluster bench does not start.
    const { stdout } = await run(process.execPath, [ALL, '--settings', '--window', '64'], { env: { ...env, PG_URL: pgServer().url }, timeout: 20_000 });
    expect(stdout).toContain('window 64 for every runner');
    expect(stdout).toContain('# graphile-worker');
    expect(stdout).not.toContain('bench:cluster');
    const refused = await run(process.execPath, [ALL, '--bogus'], { env }).catch((error: { code: number; stderr: string }) => error);
    expect(refused).toMatchObject({ code: 2 });
    expect((refused as { stderr: string }).stderr).toContain("node dist/bench/dispatch.js: Unknown option '--bogus'");
  });

  it('lists its options with --help, and refuses a bad option or value in one line, with the usage and exit code 2', async () => {
    const help = await run(process.execPath, [BENCH, '--help'], { env });
    expect(help.stdout).toContain('usage: node dist/bench/dispatch.js [options]');
    expect(help.stdout).toContain('--window <value>  (default: 1024)');
    const CLUSTER = new URL('../../dist/bench/cluster.js', import.meta.url).pathname;
    expect((await run(process.execPath, [CLUSTER, '--help'], { env })).stdout).toContain('--nodes <value>  (default: 1,2,3)');
    for (const [args, message] of [
      [['--bogus'], "Unknown option '--bogus'"],
      [['--tasks', 'many'], '--tasks must be an integer ≥ 1 (got "many")'],
      [['--load', '2'], '--latency-seconds must be > 0 and --load in (0, 1]'],
      [['--slots', '0'], '--slots takes positive integers, comma-separated'],
    ] as const) {
      const failed = await run(process.execPath, [BENCH, ...args], { env }).then(
        () => undefined,
        (error: { code: number; stderr: string }) => error,
      );
      expect(failed?.code).toBe(2);
      expect(failed!.stderr.split('\n')[0]).toBe(`node dist/bench/dispatch.js: ${message}`);
      expect(failed!.stderr).toContain('usage: node dist/bench/dispatch.js [options]');
      expect(failed!.stderr).not.toContain('    at ');
    }
  });
});

describe('the half-load latency driver (bench/measure.ts openLoop)', () => {
  it('submits through the warm-up and then the measured span, and times only the measured tasks', async () => {
    // 2,000 tasks/s: 40 tasks in the 20 ms warm-up, then 100 measured. The runner answers the
    // warm-up's tasks 500 ms late and the measured ones at once, so any warm-up task counted would
    // show in the p99 (its nearest rank over 100 takes the second slowest).
    let calls = 0;
    const one = () => {
      const warm = calls++ < 40;
      return Promise.resolve(now() + (warm ? 500 : 0));
    };
    const latency = await openLoop(2_000, 0.05, one, 0.02);
    expect(calls).toBe(140);
    expect(latency.tasks).toBe(100);
    expect(latency.startP99).toBeLessThan(100);
    // Without the warm-up, the same runner's 40 slow answers are measured.
    calls = 0;
    const cold = await openLoop(2_000, 0.05, one);
    expect(calls).toBe(100);
    expect(cold.startP99).toBeGreaterThanOrEqual(400);
  });
});

const CLUSTER_BENCH = new URL('../../dist/bench/cluster.js', import.meta.url).pathname;

describe('npm run bench, its cluster part (bench/cluster.js)', () => {
  it('is skipped without PG_URL when run with --if-pg, as npm run bench runs it', async () => {
    const { stdout } = await run(process.execPath, [CLUSTER_BENCH, '--if-pg'], { env });
    expect(stdout).toContain('cluster bench (bench/cluster.ts): skipped, PG_URL is not set');
  });

  it('drains the same tasks with runtime nodes, queue core nodes and graphile-worker on one server, and prints the ratios', async () => {
    const args = [CLUSTER_BENCH, '--tasks', '300', '--runs', '1', '--nodes', '1,2', '--if-pg'];
    const { stdout } = await run(process.execPath, args, { env: { ...env, PG_URL: pgServer().url }, timeout: 120_000 });
    const rows = stdout.split('\n').filter((line) => /^\| (graphile-worker|troupe) /.test(line));
    expect(rows.map((row) => row.split('|')[1]!.trim().replace(/graphile-worker \S+/, 'graphile-worker'))).toEqual([
      'graphile-worker',
      'troupe runtime, 1 node',
      'troupe runtime, 2 nodes',
      'troupe queue core, 1 node',
      'troupe queue core, 2 nodes',
    ]);
    expect(rows[0]!.split('|')[4]!.trim()).toBe('1.00');
    for (const row of rows.slice(1)) expect(Number(row.split('|')[4])).toBeGreaterThan(0);
  }, 150_000);
});
