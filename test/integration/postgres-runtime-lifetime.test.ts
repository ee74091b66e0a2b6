/**
 * Process lifetime of the runtime on PostgreSQL, seen from a user's plain script (no test runner
 * around it), as on LMDB (process-lifetime.test.ts): an open runtime keeps the process alive until
 * close(), like a listening server, its connections and threads open or not; after unref() the
 * process exits on its own once idle; ref() undoes it; a pending wait() or an events() iteration
 * waiting for its next event keeps it alive after unref() until it ends. Before, the runtime's
 * database connections kept an unref'd script alive until close().
 */
import type { ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { scratchPools } from '../helpers.js';
import { runScript, type ScriptLine } from '../pg-runtime.js';

const script = fileURLToPath(new URL('../fixtures/scripts/pg-lifetime.mjs', import.meta.url));
const pools = scratchPools();

type Line = ScriptLine;

/** Runs the script in `mode` on a scratch database (see runScript: killed after 20 s). */
async function run(mode: string, onLine?: (line: Line, child: ChildProcess) => void): Promise<{ code: number | null; lines: Line[]; stderr: string }> {
  const { url } = await pools({ max: 1, migrated: false });
  return runScript(script, [mode, url], 20_000, onLine);
}

/** Sends SIGTERM once the child printed its second done tick: it stayed alive through a second of idle time. */
function stopAfterTwoTicks(line: Line, child: ChildProcess): void {
  if (line.done === 2) child.kill('SIGTERM');
}

describe('a user script on PostgreSQL', () => {
  it('exits on its own after unref(), without close(), once its work is done', async () => {
    const { code, lines, stderr } = await run('unref');
    expect(stderr).toBe('');
    expect(lines).toEqual([{ state: 'done' }, { unref: true }, { exit: 0 }]);
    expect(code).toBe(0);
  });

  it('is kept alive by an open runtime until close(), through the idle time between cron ticks', async () => {
    const { code, lines, stderr } = await run('open', stopAfterTwoTicks);
    expect(stderr).toBe('');
    expect(lines.slice(0, 3)).toEqual([{ ready: true }, { done: 1 }, { done: 2 }]);
    // The ticks, the signal, and the exit once close() ended everything.
    expect(lines.slice(-2)).toEqual([{ signal: 'SIGTERM' }, { exit: 0 }]);
    expect(code).toBe(0);
  });

  it('is kept alive again after unref().ref()', async () => {
    const { code, lines } = await run('ref-again', stopAfterTwoTicks);
    expect(lines.slice(0, 3)).toEqual([{ ready: true }, { done: 1 }, { done: 2 }]);
    expect(lines.slice(-2)).toEqual([{ signal: 'SIGTERM' }, { exit: 0 }]);
    expect(code).toBe(0);
  });

  it('is still kept alive by a pending wait() after unref(), until the task settles', async () => {
    expect(await run('unref-wait')).toMatchObject({ code: 0, lines: [{ state: 'done' }, { exit: 0 }], stderr: '' });
  });

  it('is still kept alive by an events() iteration waiting for its next event after unref()', async () => {
    expect(await run('unref-events')).toMatchObject({ code: 0, lines: [{ event: 'task.done' }, { exit: 0 }], stderr: '' });
  });
});
