/**
 * `submit --wait`, `wait` and `tail --follow` while `troupe run` shuts down, run as child
 * processes: a task that ends `done` as the runtime drains is reported done (exit 0), and one the
 * runtime stops before it settles is the runtime going away (exit 3), never a silent exit 0 or a
 * failure of the command. Tests wait for output lines and states, never for time to pass.
 */
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import type { Task } from 'troupe';
import { CLI_AGENTS, runCli, serveCli, startCli, stopCli, tempDir, type RunningCli } from '../helpers.js';

/** The built gate agent: it returns once the file `input.path` exists. */
const GATE = fileURLToPath(new URL('../../dist/test/fixtures/agents/gate.agent.js', import.meta.url));

/** Resolves once `run`'s stderr contains `text`. */
function stderrShows(run: RunningCli, text: string): Promise<void> {
  return new Promise((resolve) => {
    const check = () => {
      if (!run.stderr().includes(text)) return;
      run.child.stderr!.off('data', check);
      resolve();
    };
    run.child.stderr!.on('data', check);
    check();
  });
}

/** Resolves once task `id` is in `state`, read over the socket. */
async function inState(dataDir: string, id: string, state: string): Promise<void> {
  for (;;) {
    const shown = await runCli(['show', id, '--json', '--data-dir', dataDir]);
    if ((JSON.parse(shown.stdout) as Task).state === state) return;
  }
}

describe('a runtime that shuts down under a wait or a follow', () => {
  it('reports a task that ends done while it drains as done (exit 0)', async () => {
    const dir = tempDir('troupe-cli-shutdown-');
    const agents = join(dir.path, 'agents');
    mkdirSync(agents);
    symlinkSync(GATE, join(agents, 'gate.agent.js'));
    const dataDir = join(dir.path, 'data');
    const gate = join(dir.path, 'open');
    try {
      const run = await serveCli(['--agents', agents, '--data-dir', dataDir, '--threads', '1']);
      const waiting = startCli(['submit', 'gate', '--input', JSON.stringify({ path: gate }), '--wait', '--data-dir', dataDir]);
      // The id is printed once submitted, and the follow starts on the same connection.
      const id = await waiting.line(/^\w{26}$/);
      await inState(dataDir, id, 'running');
      run.child.kill('SIGTERM');
      await stderrShows(run, 'SIGTERM, closing');
      // Draining now: the running attempt may finish, and does.
      writeFileSync(gate, '');
      expect(await waiting.exit, waiting.stderr()).toBe(0);
      expect(waiting.lines).toEqual([id, `${id} done`]);
      expect(waiting.stderr()).toBe('');
      expect(await run.exit).toBe(0);
    } finally {
      dir.cleanup();
    }
  });

  it('exits 3 from submit --wait and tail --follow when it stops before their task settles', async () => {
    const dir = tempDir('troupe-cli-shutdown-');
    const dataDir = join(dir.path, 'data');
    const cli = (...args: string[]) => runCli([...args, '--data-dir', dataDir]);
    try {
      const run = await serveCli(['--agents', CLI_AGENTS, '--data-dir', dataDir, '--threads', '1']);
      // A task with log lines that is queued again and stays queued: frozen, nothing dispatches.
      const failed = await cli('submit', 'greet', '--input', '{"fail":true}', '--wait');
      const logged = failed.stdout.split('\n')[0]!;
      expect(failed.code).toBe(1);
      expect((await cli('freeze')).code).toBe(0);
      expect((await cli('retry', logged)).code).toBe(0);
      const tail = startCli(['tail', logged, '--follow', '--data-dir', dataDir]);
      await tail.line(/ greeting \{"name":"world"\}$/);
      const waiting = startCli(['submit', 'greet', '--wait', '--data-dir', dataDir]);
      const id = await waiting.line(/^\w{26}$/);
      expect(await stopCli(run)).toBe(0);
      expect(await waiting.exit).toBe(3);
      expect(waiting.stderr()).toBe(`troupe: DISCONNECTED: the runtime stopped before ${id} settled\n`);
      expect(await tail.exit).toBe(3);
      expect(tail.stderr()).toBe(`troupe: DISCONNECTED: the runtime stopped before ${logged} settled\n`);
    } finally {
      dir.cleanup();
    }
  });
});
