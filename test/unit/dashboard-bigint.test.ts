/**
 * A task whose input, output or log holds a bigint (LMDB keeps 64-bit ones): the dashboard writes
 * it as its decimal string, in its JSON answers and its event and log streams. Before, a page of
 * tasks holding one answered 200 with an empty body (the head was sent before JSON.stringify
 * threw), and a stream of its events or log broke off.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { DashboardRuntime } from '../../src/dashboard/api.js';
import { serveDashboard, type DashboardServer } from '../../src/dashboard/server.js';

const BIG = 2n ** 63n - 1n;

function fakeRuntime(): DashboardRuntime {
  const task = { id: 'T1', agent: 'echo', state: 'done', labels: {}, input: { big: BIG }, output: { big: BIG } };
  return {
    metrics: async () => ({ attemptsByExit: {}, latency: { submitToStart: { count: 0, sum: 0 } }, at: 0 }),
    get: async () => task,
    list: async () => ({ tasks: [task], next: null }),
    events: () =>
      (async function* () {
        yield { seq: 1, cursor: '0000000000000001', at: 1, type: 'task.waiting', taskId: 'T1', data: { for: 'input', prompt: { big: BIG } } };
      })(),
    logs: () =>
      (async function* () {
        yield { taskId: 'T1', cursor: 'a', level: 'info', message: 'counted', at: 1, attemptId: 'A1', fields: { big: BIG } };
      })(),
  } as unknown as DashboardRuntime;
}

const servers: DashboardServer[] = [];
afterEach(async () => {
  for (const server of servers.splice(0)) await server.close();
});

/** The data lines of a stream that ends. */
async function dataLines(url: string): Promise<unknown[]> {
  const text = await (await fetch(url)).text();
  return [...text.matchAll(/^data: (.*)$/gm)].map((m) => JSON.parse(m[1]!) as unknown);
}

describe('the dashboard over values that hold a bigint', () => {
  it('answers them as decimal strings, in pages, a task, and its event and log streams', async () => {
    const server = await serveDashboard(fakeRuntime(), { port: 0, host: '127.0.0.1', token: undefined, generated: false });
    servers.push(server);
    const base = server.url.replace(/\/$/, '');
    const page = await fetch(`${base}/api/tasks`);
    expect(page.status).toBe(200);
    expect(await page.json()).toMatchObject({ tasks: [{ id: 'T1', input: { big: String(BIG) }, output: { big: String(BIG) } }] });
    expect(await (await fetch(`${base}/api/tasks/T1`)).json()).toMatchObject({ task: { output: { big: String(BIG) } } });
    expect(await dataLines(`${base}/api/events?taskId=T1`)).toEqual([expect.objectContaining({ type: 'task.waiting', data: { for: 'input', prompt: { big: String(BIG) } } })]);
    expect(await dataLines(`${base}/api/tasks/T1/logs`)).toEqual([expect.objectContaining({ message: 'counted', fields: { big: String(BIG) } }), {}]);
  });
});
