/**
 * Process lifetime, seen from a user's plain script (no test runner around it): an open runtime
 * keeps the process alive until close(), like a listening server; unref()/ref() as on net.Server;
 * a pending wait(), events() or logs({ follow }) keeps it alive until it ends. Before, a script
 * awaiting a task in a retry backoff or a delayed start exited with code 13.
 */
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { scratchDirs } from '../helpers.js';

const script = fileURLToPath(new URL('../fixtures/scripts/lifetime.mjs', import.meta.url));
const root = fileURLToPath(new URL('../..', import.meta.url));
const dir = scratchDirs();

/** Runs the script in `mode`; resolves with its exit code and the JSON lines it printed. */
function run(mode: string): Promise<{ code: number | null; lines: unknown[]; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [script, mode, dir()], { cwd: root, timeout: 20_000 }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === 'number' ? error.code : null) : 0;
      const lines = stdout
        .split('\n')
        .filter((line) => line.startsWith('{'))
        .map((line) => JSON.parse(line) as unknown);
      resolve({ code, lines, stderr });
    });
  });
}

describe('a user script that awaits the runtime', () => {
  it('is kept alive through a retry backoff until wait() resolves', async () => {
    const { code, lines, stderr } = await run('retry');
    expect(stderr).toBe('');
    expect(lines).toEqual([{ state: 'done' }, { exit: 0 }]);
    expect(code).toBe(0);
  });

  it('is kept alive through a delayed start until wait() resolves', async () => {
    expect(await run('delay')).toMatchObject({ code: 0, lines: [{ state: 'done' }, { exit: 0 }] });
  });

  it('gets WAIT_TIMEOUT from wait({ timeoutMs }) instead of exiting', async () => {
    expect(await run('wait-timeout')).toMatchObject({ code: 0, lines: [{ code: 'WAIT_TIMEOUT' }, { exit: 0 }] });
  });

  it('is kept alive by an open runtime, like a listening server, until close()', async () => {
    expect(await run('open')).toMatchObject({ code: 0, lines: [{ timer: 'fired' }, { exit: 0 }] });
  });

  it('may exit without close() after unref()', async () => {
    expect(await run('unref')).toMatchObject({ code: 0, lines: [{ unref: true }, { exit: 0 }] });
  });

  it('may exit without close() after unref() while serving metricsPort', async () => {
    expect(await run('unref-metrics')).toMatchObject({ code: 0, lines: [{ unref: true, metricsPort: true }, { exit: 0 }] });
  });

  it('is still kept alive by a pending wait() after unref()', async () => {
    expect(await run('unref-wait')).toMatchObject({ code: 0, lines: [{ state: 'done' }, { exit: 0 }] });
  });

  it('is still kept alive by an events() iteration waiting for its next event after unref()', async () => {
    expect(await run('unref-events')).toMatchObject({ code: 0, lines: [{ event: 'task.done' }, { exit: 0 }] });
  });

  it('is still kept alive by logs({ follow }) until the task settles after unref()', async () => {
    expect(await run('unref-logs')).toMatchObject({ code: 0, lines: [{ lines: 1, state: 'done' }, { exit: 0 }] });
  });

  it('is kept alive by an awaited close() after unref(), with an attempt running, and closes clean', async () => {
    expect(await run('unref-close')).toMatchObject({ code: 0, lines: [{ closed: 'closed', clean: true }, { exit: 0 }] });
  });

  it('is kept alive by an awaited kill() after unref() until no attempt runs', async () => {
    expect(await run('unref-kill')).toMatchObject({ code: 0, lines: [{ killed: true }, { exit: 0 }] });
  });

  it('is kept alive again after unref().ref()', async () => {
    expect(await run('ref-again')).toMatchObject({ code: 0, lines: [{ timer: 'fired' }, { exit: 0 }] });
  });
});
