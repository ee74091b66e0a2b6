/**
 * The dashboard over a runtime whose store has no backing for some calls (PostgreSQL): a read of
 * records the store does not keep answers as a store without them (no instances, no children),
 * and an action it refuses answers UNSUPPORTED_STORE with its message, as 501, not as an internal
 * error. Any other error still answers as it is.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { DashboardRuntime } from '../../src/dashboard/api.js';
import { serveDashboard, type DashboardServer } from '../../src/dashboard/server.js';
import { TroupeError } from '../../src/errors.js';

const unsupported = (call: string) => new TroupeError('UNSUPPORTED_STORE', `${call} is not supported on PostgreSQL yet`);

/** A runtime that keeps one task and refuses instances, children and resumeAgent; `instancesError` replaces the refusal. */
function fakeRuntime(instancesError: TroupeError = unsupported('instances')): DashboardRuntime {
  const task = { id: 'T1', agent: 'echo', state: 'done', labels: {} };
  return {
    stats: () => ({ agents: {} }),
    agents: { list: () => [] },
    metrics: async () => ({ attemptsByExit: {}, latency: { submitToStart: { count: 0, sum: 0 } }, at: 0 }),
    get: async (id: string) => {
      if (id !== task.id) throw new TroupeError('NOT_FOUND', `no task ${id}`);
      return task;
    },
    list: async (options: { parentId?: string }) => {
      if (options.parentId !== undefined) throw unsupported('list: parentId');
      return { tasks: [task], next: null };
    },
    instances: () => {
      throw instancesError;
    },
    resumeAgent: async () => {
      throw unsupported('resumeAgent');
    },
  } as unknown as DashboardRuntime;
}

const servers: DashboardServer[] = [];
afterEach(async () => {
  for (const server of servers.splice(0)) await server.close();
});

async function serve(rt: DashboardRuntime): Promise<string> {
  const server = await serveDashboard(rt, { port: 0, host: '127.0.0.1', token: undefined, generated: false });
  servers.push(server);
  return server.url.replace(/\/$/, '');
}

async function json(url: string, init: RequestInit = {}): Promise<{ status: number; body: any }> {
  const res = await fetch(url, init);
  return { status: res.status, body: await res.json() };
}

describe('the dashboard over a store without some records', () => {
  it('answers no instances and no children, and a refused action with UNSUPPORTED_STORE as 501', async () => {
    const base = await serve(fakeRuntime());
    expect(await json(`${base}/api/instances`)).toEqual({ status: 200, body: [] });
    expect(await json(`${base}/api/tasks/T1`)).toMatchObject({ status: 200, body: { task: { id: 'T1' }, parent: null, children: [] } });
    const resume = await json(`${base}/api/agents/echo/resume`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
    expect(resume).toEqual({ status: 501, body: { error: { code: 'UNSUPPORTED_STORE', message: 'resumeAgent is not supported on PostgreSQL yet' } } });
  });

  it('answers any other error of those calls as it is', async () => {
    const base = await serve(fakeRuntime(new TroupeError('CLOSED', 'the runtime is closed')));
    expect(await json(`${base}/api/instances`)).toEqual({ status: 503, body: { error: { code: 'CLOSED', message: 'the runtime is closed' } } });
  });
});
