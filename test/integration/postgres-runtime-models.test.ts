/**
 * Per-model sub-limits of an agent's concurrency on the runtime on PostgreSQL, seen from the
 * agents' side (as test/integration/limits.test.ts sees them on LMDB): two runtimes share one
 * database and one limited agent; a task's `labels.model` picks its sub-limit, and the model's
 * tasks at the head of the queue do not hold back the others behind them.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { fixtureAgent, maxOverlap, scratchDirs, scratchPools } from '../helpers.js';
import { pgRuntimes } from '../pg-runtime.js';

const pools = scratchPools();
const runtime = pgRuntimes();
const dirs = scratchDirs();

/** When each task's attempt started, from the overlap agent's file (epoch ms). */
function startsOf(file: string): Map<string, number> {
  const starts = new Map<string, number>();
  for (const line of readFileSync(file, 'utf8').trim().split('\n')) {
    const [sign, at, id] = line.split(' ');
    if (sign === '+') starts.set(id!, Number(at));
  }
  return starts;
}

describe('per-model sub-limits on PostgreSQL', () => {
  it('concurrency { total, [model] } holds across two runtimes: labels.model picks the sub-limit, and other models are not blocked behind a full one', async () => {
    const { url } = await pools({ max: 2 });
    const file = join(dirs(), 'overlap.log');
    const agents = [{ name: 'llm', module: fixtureAgent('overlap'), concurrency: { total: 3, 'gpt-5': 1 } }];
    const [one, two] = [await runtime(url, { agents, slotsPerThread: 3 }), await runtime(url, { agents, slotsPerThread: 3 })];
    // gpt-5 tasks first: a claim that stopped at a full model would starve the mini ones behind them.
    const big = await one.submitMany(Array.from({ length: 5 }, () => ({ agent: 'llm', input: { file, ms: 120 }, labels: { model: 'gpt-5' } })));
    const small = await one.submitMany(Array.from({ length: 6 }, () => ({ agent: 'llm', input: { file, ms: 120 }, labels: { model: 'mini' } })));
    const plain = await two.submitMany(Array.from({ length: 3 }, () => ({ agent: 'llm', input: { file, ms: 120 } })));
    const all = [...big, ...small, ...plain];
    for (const task of await Promise.all(all.map((t) => two.wait(t.id, { timeoutMs: 30_000 })))) expect(task.state).toBe('done');
    expect(maxOverlap(file, new Set(big.map((t) => t.id)))).toBe(1);
    expect(maxOverlap(file)).toBeLessThanOrEqual(3);
    // The limits bind: other models ran beside the one gpt-5 attempt.
    expect(maxOverlap(file)).toBeGreaterThanOrEqual(2);
    // Not head-of-line blocked: a mini task started before the last gpt-5 one (which, one at a
    // time, could only start after four others had run).
    const starts = startsOf(file);
    const firstSmall = Math.min(...small.map((t) => starts.get(t.id)!));
    const lastBig = Math.max(...big.map((t) => starts.get(t.id)!));
    expect(firstSmall).toBeLessThan(lastBig);
    expect(one.stats().agents.llm).toMatchObject({ limit: 3, models: { 'gpt-5': { limit: 1 } } });
  }, 60_000);
});
