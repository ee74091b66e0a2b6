/**
 * A node killed with -9 while it holds claimed tasks gets them taken back by another node's
 * sweeper (issue #15's target: within a second): each attempt ends as `crashed`, once, and its task
 * is requeued, or dropped once its attempt budget is spent. Measured over 20 kills, from the kill
 * to the sweep's commit; a live node's attempts are never taken.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { joinCluster } from '../../src/store/postgres/nodes.js';
import { claimTasks, submitTasks, type ClaimedTask } from '../../src/store/postgres/queue.js';
import { settleAttempts } from '../../src/store/postgres/settle.js';
import { runSweeper, type Reclaimed } from '../../src/store/postgres/sweeper.js';
import { scratchPools } from '../helpers.js';

const CHILD = fileURLToPath(new URL('../../dist/test/fixtures/postgres/claim-child.js', import.meta.url));
const pools = scratchPools();
const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

const KILLS = 20;
const PER_NODE = 5;
const MAX_ATTEMPTS = 4;
// 25 tasks × 4 attempts = 20 kills × 5 claims: claims go round the queue in order, so each task
// is claimed 4 times, requeued after its first 3 crashes and dropped after the 4th.
const TASKS = (KILLS * PER_NODE) / MAX_ATTEMPTS;

/** Starts a node in a child process that claims up to `n` tasks; resolves once it holds them. */
function startNode(url: string, n: number): Promise<{ id: string; claimed: ClaimedTask[]; kill: () => Promise<void> }> {
  const child = spawn(process.execPath, [CHILD, url, 'a', String(n), '600000'], { stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = once(child, 'exit');
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve, reject) => {
    createInterface({ input: child.stdout }).on('line', (line) => {
      const match = /^claimed (\S+) (.*)$/.exec(line);
      if (!match) return;
      resolve({
        id: match[1]!,
        claimed: JSON.parse(match[2]!) as ClaimedTask[],
        kill: async () => {
          child.kill('SIGKILL');
          await exited;
        },
      });
    });
    child.once('exit', (code) => reject(new Error(`node exited ${code} before claiming: ${stderr}`)));
  });
}

describe('reclaiming a dead node\'s attempts on PostgreSQL', () => {
  it('takes back every attempt of a node killed with -9, once each, within the budget, 20 times', async () => {
    const { url, pool } = await pools({ max: 6 });
    await submitTasks(pool, Array.from({ length: TASKS }, (_, i) => ({ id: `t${String(i).padStart(3, '0')}`, agent: 'a', maxAttempts: MAX_ATTEMPTS })));
    await submitTasks(pool, [{ id: 'live1', agent: 'live' }, { id: 'live2', agent: 'live' }]);
    // This process is a node too, with attempts of its own that must never be taken.
    const live = await joinCluster(url, () => undefined);
    cleanups.push(() => live.leave());
    const liveClaims = await claimTasks(pool, live.id, 'live', 2, 600_000);
    expect(liveClaims).toHaveLength(2);

    const reclaims: Array<Reclaimed & { at: number }> = [];
    const errors: Error[] = [];
    const waiters: Array<{ attemptIds: string[]; resolve: () => void }> = [];
    const stop = new AbortController();
    const sweeping = runSweeper(pool, {
      signal: stop.signal,
      onSweep: (result) => {
        const at = performance.now();
        for (const r of result.reclaimed) reclaims.push({ ...r, at });
        for (const w of waiters) if (w.attemptIds.every((id) => reclaims.some((r) => r.attemptId === id))) w.resolve();
      },
      onError: (error) => errors.push(error),
    });
    cleanups.push(async () => {
      stop.abort();
      await sweeping;
    });
    const reclaimedAll = (attemptIds: string[]) => new Promise<void>((resolve) => waiters.push({ attemptIds, resolve }));

    const latencies: number[] = [];
    const claims: Array<{ node: string; task: ClaimedTask }> = [];
    for (let kill = 0; kill < KILLS; kill++) {
      const node = await startNode(url, PER_NODE);
      expect(node.claimed).toHaveLength(PER_NODE);
      claims.push(...node.claimed.map((task) => ({ node: node.id, task })));
      const attemptIds = node.claimed.map((t) => t.attemptId);
      const done = reclaimedAll(attemptIds);
      // Nothing of a live node is taken: none of these attempts has come back before the kill.
      expect(reclaims.filter((r) => attemptIds.includes(r.attemptId))).toEqual([]);
      const killedAt = performance.now();
      await node.kill();
      await done;
      const at = Math.max(...reclaims.filter((r) => attemptIds.includes(r.attemptId)).map((r) => r.at));
      latencies.push(at - killedAt);
    }
    stop.abort();
    await sweeping;

    expect(errors).toEqual([]);
    // Every claimed attempt was taken back exactly once, as crashed, from the node that held it,
    // and nothing else was: the live node's attempts stayed.
    expect(reclaims.map((r) => r.attemptId).sort()).toEqual(claims.map((c) => c.task.attemptId).sort());
    for (const { node, task } of claims) {
      const r = reclaims.find((x) => x.attemptId === task.attemptId)!;
      expect(r).toMatchObject({ taskId: task.id, token: task.token, node, exit: 'crashed', state: task.attempts < MAX_ATTEMPTS ? 'queued' : 'dropped' });
      expect(task.attempts).toBeLessThanOrEqual(MAX_ATTEMPTS);
    }
    const stored = (await pool.query("SELECT id, state, attempts, attempt_seq, error->>'code' AS code FROM troupe_tasks WHERE agent = 'a' ORDER BY id")).rows;
    expect(stored).toEqual(Array.from({ length: TASKS }, (_, i) => ({ id: `t${String(i).padStart(3, '0')}`, state: 'dropped', attempts: MAX_ATTEMPTS, attempt_seq: MAX_ATTEMPTS, code: 'RETRY_EXHAUSTED' })));
    const attempts = (await pool.query("SELECT task_id, count(*)::int AS n, count(*) FILTER (WHERE exit = 'crashed' AND ended_at IS NOT NULL)::int AS crashed FROM troupe_attempts WHERE task_id LIKE 't%' GROUP BY task_id")).rows;
    expect(attempts).toHaveLength(TASKS);
    for (const a of attempts) expect(a).toMatchObject({ n: MAX_ATTEMPTS, crashed: MAX_ATTEMPTS });
    // Dead nodes are gone from troupe_nodes; the live one stays, and its attempts settle.
    expect((await pool.query('SELECT id::text FROM troupe_nodes')).rows).toEqual([{ id: live.id }]);
    const settled = await settleAttempts(pool, liveClaims.map((t) => ({ taskId: t.id, token: t.token, exit: 'success' as const })));
    expect(settled.stale).toEqual([]);

    const sorted = [...latencies].sort((a, b) => a - b);
    const median = (sorted[KILLS / 2 - 1]! + sorted[KILLS / 2]!) / 2;
    console.log(`reclaimed after kill -9 (kill → requeue committed), ms over ${KILLS} kills: median ${median.toFixed(1)}, max ${sorted.at(-1)!.toFixed(1)} (${latencies.map((ms) => ms.toFixed(0)).join(', ')})`);
    // The target is 1 s: the median is held to it; the max only loosely, as the machine may be busy.
    expect(median).toBeLessThan(1_000);
    expect(sorted.at(-1)!).toBeLessThan(5_000);
  }, 120_000);
});
