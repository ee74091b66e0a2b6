/**
 * The runtime on PostgreSQL in a user's plain script (no test runner around it): it submits,
 * awaits wait(), prints the result, closes, and the process exits on its own. And a task running
 * in that process is cancelled from this one, through the database.
 */
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { scratchPools, started } from '../helpers.js';
import { pgRuntimes } from '../pg-runtime.js';

const script = fileURLToPath(new URL('../fixtures/scripts/pg-runtime.mjs', import.meta.url));
const root = fileURLToPath(new URL('../..', import.meta.url));
const pools = scratchPools();
const runtime = pgRuntimes();

/** Runs the script; `onLine` hears each JSON line as it comes; resolves with its exit code and every line. */
function run(mode: string, url: string, onLine: (line: Record<string, unknown>) => void = () => undefined): Promise<{ code: number | null; lines: Array<Record<string, unknown>>; stderr: string }> {
  return new Promise((resolve) => {
    const lines: Array<Record<string, unknown>> = [];
    let buffered = '';
    const child = execFile(process.execPath, [script, mode, url], { cwd: root, timeout: 30_000, env: { ...process.env, TROUPE_STORE: '' } }, (error, _stdout, stderr) => {
      resolve({ code: error ? (typeof error.code === 'number' ? error.code : null) : 0, lines, stderr });
    });
    child.stdout!.on('data', (chunk: Buffer) => {
      buffered += chunk.toString();
      for (let at = buffered.indexOf('\n'); at >= 0; at = buffered.indexOf('\n')) {
        const text = buffered.slice(0, at);
        buffered = buffered.slice(at + 1);
        if (!text.startsWith('{')) continue;
        const line = JSON.parse(text) as Record<string, unknown>;
        lines.push(line);
        onLine(line);
      }
    });
  });
}

describe('a user script on PostgreSQL', () => {
  it('submits, awaits wait(), prints the result, closes, and exits on its own', async () => {
    const { url } = await pools({ max: 1 });
    const { code, lines, stderr } = await run('echo', url);
    expect(stderr).toBe('');
    expect(lines).toEqual([{ id: expect.any(String) }, { state: 'done', output: { hello: 'cluster' } }, { exit: 0 }]);
    expect(code).toBe(0);
  });

  it("has its running task cancelled by another process's runtime, and exits once its wait() resolves", async () => {
    const { url } = await pools({ max: 1 });
    const operator = await runtime(url);
    let cancelled: Promise<unknown> | undefined;
    const result = await run('sleep', url, (line) => {
      if (typeof line.id === 'string') cancelled = started(operator, line.id).then(() => operator.cancel(line.id as string, 'from the other process'));
    });
    expect(await cancelled).toMatchObject({ state: 'cancelled', reason: 'from the other process' });
    expect(result.lines.slice(1)).toEqual([{ state: 'cancelled', reason: 'from the other process' }, { exit: 0 }]);
    expect(result.code).toBe(0);
  });
});
