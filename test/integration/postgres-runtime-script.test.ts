/**
 * The runtime on PostgreSQL in a user's plain script (no test runner around it): it submits,
 * awaits wait(), prints the result, closes, and the process exits on its own. And a task running
 * in that process is cancelled from this one, through the database.
 */
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { scratchPools, started } from '../helpers.js';
import { pgRuntimes, runScript, type ScriptLine } from '../pg-runtime.js';

const script = fileURLToPath(new URL('../fixtures/scripts/pg-runtime.mjs', import.meta.url));
const pools = scratchPools();
const runtime = pgRuntimes();

/** Runs the script (see runScript: killed after 30 s). */
function run(mode: string, url: string, onLine?: (line: ScriptLine) => void): Promise<{ code: number | null; lines: ScriptLine[]; stderr: string }> {
  return runScript(script, [mode, url], 30_000, onLine);
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
