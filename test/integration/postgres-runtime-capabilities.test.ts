/**
 * Routing by capabilities on PostgreSQL (store/postgres/routing.ts) across runtimes sharing one
 * database: a spec with `requires` goes to an agent whose capabilities any runtime stored, and runs
 * on a runtime that runs that agent; the least-loaded covering agent is found from the cluster's
 * queue; the routed task's attempt budget is its agent's stored one; a task no agent covers waits
 * in needs_attention until a runtime registers a covering agent and `rt.retry` routes it again. The
 * behaviour both stores share is contract-capabilities.ts's.
 */
import type pg from 'pg';
import { describe, expect, it } from 'vitest';
import { builtinAgent } from 'troupe';
import { rejection, scratchPools } from '../helpers.js';
import { pgRuntimes, thrown } from '../pg-runtime.js';
import { nextEvent } from './contract.js';

const pools = scratchPools();
const runtime = pgRuntimes();
const echo = builtinAgent('echo').module;

const tasksIn = async (pool: pg.Pool) => Number((await pool.query('SELECT count(*) AS n FROM troupe_tasks')).rows[0].n);

describe('capabilities on PostgreSQL', () => {
  it('routes to an agent another runtime registered, where it runs; a task nobody covers waits until a covering agent comes and a retry routes it', async () => {
    const { url, pool } = await pools({ max: 2 });
    const a = await runtime(url, { agents: [{ name: 'alpha', module: echo, capabilities: ['x'] }] });
    const b = await runtime(url, { agents: [{ name: 'beta', module: echo, capabilities: ['y'], retry: { maxAttempts: 5 } }] });
    // Each runtime runs only its own agent: a task routed to the other's runs there.
    const toBeta = await a.submit({ requires: ['y'], input: 'from a' });
    expect(toBeta).toMatchObject({ agent: 'beta', requires: ['y'], state: 'queued' });
    expect(await a.wait(toBeta.id)).toMatchObject({ agent: 'beta', requires: ['y'], state: 'done', output: 'from a' });
    expect(await b.wait((await b.submit({ requires: ['x'], input: 'from b' })).id)).toMatchObject({ agent: 'alpha', state: 'done', output: 'from b' });
    // The routed agent's stored budget, unless the task gives its own.
    expect((await pool.query('SELECT max_attempts FROM troupe_tasks WHERE id = $1', [toBeta.id])).rows[0].max_attempts).toBe(5);
    const own = await a.submit({ requires: ['y'], retry: { maxAttempts: 2 } });
    expect((await pool.query('SELECT max_attempts FROM troupe_tasks WHERE id = $1', [own.id])).rows[0].max_attempts).toBe(2);
    expect((await pool.query('SELECT name, capabilities, max_attempts FROM troupe_agents ORDER BY name')).rows).toEqual([
      { name: 'alpha', capabilities: ['x'], max_attempts: 3 },
      { name: 'beta', capabilities: ['y'], max_attempts: 5 },
    ]);

    // Neither covers both: it needs attention, from any runtime's view, until one does.
    const both = await a.submit({ requires: ['y', 'x'], input: 'both' });
    expect(both).toMatchObject({ agent: '', requires: ['x', 'y'], state: 'needs_attention', reason: 'unmatched' });
    expect(await b.get(both.id)).toMatchObject({ agent: '', requires: ['x', 'y'], state: 'needs_attention', reason: 'unmatched' });
    expect((await pool.query('SELECT requires FROM troupe_tasks WHERE id = $1', [both.id])).rows[0].requires).toEqual(['x', 'y']);
    expect(await rejection(b.retry(both.id))).toMatchObject({ code: 'UNKNOWN_AGENT' });
    const c = await runtime(url, { agents: [{ name: 'gamma', module: echo, capabilities: ['x', 'y', 'z'] }] });
    const queued = nextEvent(a, 'task.queued', both.id);
    expect(await b.retry(both.id)).toMatchObject({ agent: 'gamma', state: 'queued', runs: 1, requires: ['x', 'y'] });
    expect((await queued).data).toMatchObject({ run: 1, reason: 'operator', from: 'needs_attention', agent: 'gamma' });
    expect(await c.wait(both.id)).toMatchObject({ agent: 'gamma', state: 'done', output: 'both', runs: 1, attempts: 1 });
  });

  it('picks the least-loaded covering agent from the cluster\'s queue (over its concurrency), a batch counting what it routed, a tie going to the first name', async () => {
    const { url } = await pools({ max: 2 });
    const a = await runtime(url, { agents: [{ name: 'l1', module: echo, capabilities: ['l'] }] });
    const b = await runtime(url, { agents: [{ name: 'l2', module: echo, capabilities: ['l'], concurrency: 4 }] });
    // Frozen: what is submitted stays queued, and counts as load.
    await a.freeze('hold');
    await a.submitMany([1, 2].map((input) => ({ agent: 'l1', input })));
    await b.submitMany([1, 2, 3, 4, 5].map((input) => ({ agent: 'l2', input })));
    // l1: 2 queued over no concurrency (1) = 2; l2: 5 over 4 = 1.25.
    expect((await a.submit({ requires: ['l'] })).agent).toBe('l2');
    expect((await b.submitMany([{ requires: ['l'] }, { requires: ['l'] }])).map((t) => t.agent)).toEqual(['l2', 'l2']);
    // l2 now 8 / 4 = 2 ties l1's 2: the first name.
    expect((await b.submit({ requires: ['l'] })).agent).toBe('l1');
  });

  it('prefers a covering agent that is not paused, however loaded', async () => {
    const { url } = await pools({ max: 2 });
    const failing = builtinAgent('fail', { retry: { maxAttempts: 1 }, backoff: { failures: 1, fastFailMs: 60_000, pauseMs: 600_000 } });
    const a = await runtime(url, { agents: [{ ...failing, name: 'p1', capabilities: ['p'] }] });
    const b = await runtime(url, { agents: [{ name: 'p2', module: echo, capabilities: ['p'] }] });
    const paused = new Promise((resolve) => a.on('agent.paused', resolve));
    await a.submit({ agent: 'p1', input: { mode: 'throw' } });
    await paused;
    await b.freeze('hold');
    await b.submitMany([1, 2, 3].map((input) => ({ agent: 'p2', input })));
    // p1: no load, but paused; p2: 3 queued.
    expect((await a.submit({ requires: ['p'] })).agent).toBe('p2');
  });

  it('refuses what a text[] cannot hold before anything is stored', async () => {
    const { url, pool } = await pools({ max: 2 });
    const rt = await runtime(url, { agents: [{ name: 'alpha', module: echo, capabilities: ['x'] }] });
    expect(await rejection(rt.submit({ requires: ['x\u0000'] }))).toMatchObject({ code: 'INVALID_INPUT', message: expect.stringContaining('requires') });
    expect(thrown(() => rt.agents.register({ name: 'nul', module: echo, capabilities: ['\u0000'] }))).toMatchObject({ code: 'INVALID_OPTIONS', message: expect.stringContaining('NUL') });
    expect(await tasksIn(pool)).toBe(0);
    expect((await pool.query('SELECT name FROM troupe_agents')).rows).toEqual([{ name: 'alpha' }]);
  });
});
