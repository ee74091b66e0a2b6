/**
 * A store that goes quiet materializes what it holds and truncates its log behind it (rather than
 * waiting for the next busy commit), so a kill -9 after a quiet spell leaves nothing to replay,
 * and nothing is lost: the queued tasks are all there after the restart, in their state. An open
 * after a kill -9 replays the log into memory and leaves it in place until what it held is written
 * (a kill -9 before then loses nothing either), then writes it without another commit.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { open } from 'lmdb';
import { describe, expect, it } from 'vitest';
import { createRuntime } from 'troupe';
import { scratchDirs } from '../helpers.js';

const scratch = scratchDirs();
const INDEX = new URL('../../dist/src/index.js', import.meta.url).pathname;
const TASKS = 500;

/** Runs `script` (after `rt` is open on `dataDir`) in a child, and resolves with what it printed once it printed a line matching `ready`. */
async function child(dataDir: string, script: string, ready: RegExp): Promise<{ out: string; kill: () => Promise<void> }> {
  const proc = spawn(process.execPath, ['--input-type=module', '-e', `
    import { createRuntime, builtinAgent } from ${JSON.stringify(INDEX)};
    const rt = await createRuntime({ dataDir: ${JSON.stringify(dataDir)}, logger: false, threads: 1, retention: false, starvation: false, agents: [builtinAgent('echo')] });
    ${script}
    setInterval(() => {}, 1000);
  `], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  await new Promise<void>((resolve) => proc.stdout!.on('data', (chunk: Buffer) => ready.test((out += chunk.toString())) && resolve()));
  return {
    out,
    kill: async () => {
      proc.kill('SIGKILL');
      await once(proc, 'exit');
    },
  };
}

/** The log records a data dir holds, read by another process as LMDB allows while the runtime runs. */
function logRecords(dataDir: string): number {
  const env = open({ path: dataDir, noSubdir: false, maxDbs: 24, readOnly: true });
  try {
    return [...env.openDB({ name: 'log' }).getKeys()].length;
  } finally {
    void env.close();
  }
}

/** What the first child runs: holds the tasks (frozen) and submits them all. */
const SUBMIT = `
  await rt.freeze('hold them');
  const tasks = await rt.submitMany(Array.from({ length: ${TASKS} }, (_, n) => ({ agent: 'echo', input: n })));
  console.log('submitted ' + tasks.map((t) => t.id).join(','));
`;

function submittedIds(out: string): string[] {
  return /submitted (\S+)\n/.exec(out)![1]!.split(',');
}

/** Waits for a quiet store to leave no log records: within a few seconds (1 s is the longest an entry stays dirty). */
async function untilLogEmpty(dataDir: string): Promise<void> {
  for (let waited = 0; logRecords(dataDir) > 0; waited += 100) {
    expect(waited, 'log records left after a quiet spell').toBeLessThan(10_000);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** Opens the data dir here and finds every submitted task still queued. */
async function expectAllQueued(dataDir: string, ids: string[]): Promise<void> {
  const rt = await createRuntime({ dataDir, logger: false, threads: 1, retention: false });
  try {
    expect(rt.stats().tasks.queued).toBe(TASKS);
    for (const id of [ids[0]!, ids.at(-1)!]) expect((await rt.get(id)).state).toBe('queued');
  } finally {
    await rt.close();
  }
}

describe('a quiet store', () => {
  it('truncates its log without another commit, and a kill -9 then loses nothing', async () => {
    const dataDir = join(scratch(), 'data');
    const holder = await child(dataDir, SUBMIT, /submitted \S+\n/);
    const ids = submittedIds(holder.out);
    expect(logRecords(dataDir)).toBeGreaterThan(0);
    await untilLogEmpty(dataDir);
    await holder.kill();
    await expectAllQueued(dataDir, ids);
  }, 60_000);

  it('after a kill -9, replays the log into memory at open, keeps it until that is written, and then writes it', async () => {
    const dataDir = join(scratch(), 'data');
    const first = await child(dataDir, SUBMIT, /submitted \S+\n/);
    await first.kill();
    const ids = submittedIds(first.out);
    const before = logRecords(dataDir);
    expect(before).toBeGreaterThan(0);
    // Opened, and killed at once: the replay wrote nothing, and nothing is lost by a second kill.
    const second = await child(dataDir, `console.log('open ' + rt.stats().tasks.queued);`, /open \d+\n/);
    expect(second.out).toContain(`open ${TASKS}`);
    expect(logRecords(dataDir)).toBe(before);
    await second.kill();
    const third = await child(dataDir, `console.log('open ' + rt.stats().tasks.queued);`, /open \d+\n/);
    expect(third.out).toContain(`open ${TASKS}`);
    // Quiet: what the replay put in memory is written, and the log truncated behind it.
    await untilLogEmpty(dataDir);
    await third.kill();
    await expectAllQueued(dataDir, ids);
  }, 60_000);
});
