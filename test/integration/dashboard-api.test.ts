/**
 * The dashboard's HTTP API without a browser: what it answers, what it refuses, and its event
 * stream resuming from Last-Event-ID. (test/browser/ drives the page in Chromium.)
 */
import { request } from 'node:http';
import { createServer } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { builtinAgent, createRuntime, type Runtime } from 'troupe';
import { nextEvent } from 'troupe/testing';
import { rejection, scratchDirs } from '../helpers.js';

const dirs = scratchDirs();
const open: Runtime[] = [];
afterEach(async () => {
  for (const rt of open.splice(0)) await rt.close();
});

async function runtime(options: Parameters<typeof createRuntime>[0] = {}): Promise<{ rt: Runtime; base: string }> {
  const rt = await createRuntime({ dataDir: dirs(), logger: false, threads: 1, dashboard: true, agents: [builtinAgent('echo')], ...options });
  open.push(rt);
  return { rt, base: rt.dashboard()!.replace(/\/(#.*)?$/, '') };
}

async function json(url: string, init: RequestInit = {}): Promise<{ status: number; body: any }> {
  const res = await fetch(url, init);
  return { status: res.status, body: await res.json() };
}

const post = (body: unknown = {}): RequestInit => ({ method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });

/** Reads `n` events from an SSE response body. */
async function readEvents(res: Response, n: number): Promise<Array<{ id?: string; event?: string; data: any }>> {
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  const out: Array<{ id?: string; event?: string; data: any }> = [];
  let text = '';
  while (out.length < n) {
    const { value, done } = await reader.read();
    if (done) break;
    text += decoder.decode(value, { stream: true });
    let end: number;
    while ((end = text.indexOf('\n\n')) >= 0 && out.length < n) {
      const block = text.slice(0, end);
      text = text.slice(end + 2);
      const fields: Record<string, string> = {};
      for (const line of block.split('\n')) {
        if (line.startsWith(':')) continue;
        const at = line.indexOf(': ');
        fields[line.slice(0, at)] = line.slice(at + 2);
      }
      if (fields.data !== undefined) out.push({ id: fields.id, event: fields.event, data: JSON.parse(fields.data) });
    }
  }
  await reader.cancel();
  return out;
}

describe('the dashboard API', () => {
  it('answers overview, tasks (filters, text search, cursors) and a task with its parent and children', async () => {
    const { rt, base } = await runtime();
    const parent = await rt.submit({ agent: 'echo', input: { n: 0 }, labels: { team: 'red' } });
    const child = await rt.submit({ agent: 'echo', input: { n: 1 }, parentId: parent.id, labels: { team: 'blue' } });
    await rt.wait(parent.id);
    await rt.wait(child.id);
    const overview = await json(`${base}/api/overview`);
    expect(overview.status).toBe(200);
    expect(overview.body.stats.tasks.done).toBe(2);
    expect(overview.body.agents.map((a: { name: string }) => a.name)).toEqual(['echo']);
    expect(overview.body.chart).toMatchObject({ bucketMs: 10_000, buckets: [] });
    const byLabel = await json(`${base}/api/tasks?label=team=blue`);
    expect(byLabel.body.tasks.map((t: { id: string }) => t.id)).toEqual([child.id]);
    const firstPage = await json(`${base}/api/tasks?limit=1`);
    expect(firstPage.body.tasks.map((t: { id: string }) => t.id)).toEqual([parent.id]);
    const secondPage = await json(`${base}/api/tasks?limit=1&after=${firstPage.body.next}`);
    expect(secondPage.body.tasks.map((t: { id: string }) => t.id)).toEqual([child.id]);
    const searched = await json(`${base}/api/tasks?q=${child.id.slice(-8)}`);
    expect(searched.body.tasks.map((t: { id: string }) => t.id)).toEqual([child.id]);
    const view = await json(`${base}/api/tasks/${child.id}`);
    expect(view.body.task).toMatchObject({ id: child.id, state: 'done', output: { n: 1 } });
    expect(view.body.parent.id).toBe(parent.id);
    expect((await json(`${base}/api/tasks/${parent.id}`)).body.children.map((t: { id: string }) => t.id)).toEqual([child.id]);
  });

  it('runs the actions through the public calls: cancel, retry, input, freeze and unfreeze', async () => {
    const { rt, base } = await runtime();
    // No agent named `later` is registered: the task stays queued.
    const queued = await rt.submit({ agent: 'echo', input: {}, runAt: Date.now() + 3_600_000 });
    const cancelled = await json(`${base}/api/tasks/${queued.id}/cancel`, post({ reason: 'from the page' }));
    expect(cancelled.body.task).toMatchObject({ state: 'cancelled', reason: 'from the page' });
    expect((await rt.get(queued.id)).state).toBe('cancelled');
    const done = nextEvent(rt, 'task.done', { taskId: queued.id });
    expect((await json(`${base}/api/tasks/${queued.id}/retry`, post())).body.task.state).toBe('queued');
    await done;
    expect((await json(`${base}/api/freeze`, post({ reason: 'deploy' }))).body).toEqual({ frozen: true });
    expect(rt.stats().freeze).toMatchObject({ reason: 'deploy' });
    expect((await json(`${base}/api/unfreeze`, post())).body).toEqual({ frozen: false });
    expect(rt.stats().frozen).toBe(false);
    const input = await json(`${base}/api/tasks/${queued.id}/input`, post({ message: 'hi' }));
    expect(input.status).toBe(400);
    expect(input.body.error.code).toBe('ILLEGAL_TRANSITION');
  });

  it('answers a task whose input and output hold a bigint (as LMDB keeps it) with its decimal string, in a page and alone', async () => {
    const { rt, base } = await runtime();
    const task = await rt.submit({ agent: 'echo', input: { big: 2n ** 63n - 1n } });
    expect((await rt.wait(task.id)).output).toEqual({ big: 2n ** 63n - 1n });
    const page = await json(`${base}/api/tasks`);
    expect(page).toMatchObject({ status: 200, body: { tasks: [{ id: task.id, input: { big: '9223372036854775807' }, output: { big: '9223372036854775807' } }] } });
    expect((await json(`${base}/api/tasks/${task.id}`)).body.task.output).toEqual({ big: '9223372036854775807' });
  });

  it('refuses what it does not serve: an unknown task or route, a bad filter, a form post, another origin or Host', async () => {
    const { base } = await runtime();
    const missing = await json(`${base}/api/tasks/NOSUCHTASK`);
    expect(missing).toMatchObject({ status: 404, body: { error: { code: 'NOT_FOUND' } } });
    expect((await json(`${base}/api/nothing`)).status).toBe(404);
    expect((await json(`${base}/api/tasks?state=nonsense`)).body.error.code).toBe('INVALID_INPUT');
    expect((await json(`${base}/api/tasks?label=nolabel`)).status).toBe(400);
    expect((await json(`${base}/api/freeze`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'reason=x' })).status).toBe(415);
    expect((await json(`${base}/api/freeze`, { method: 'PUT' })).status).toBe(405);
    expect((await fetch(`${base}/secret.txt`)).status).toBe(404);
    // Names an object has by inheritance are no files either (before: a 500 naming the install path).
    for (const name of ['constructor', '__proto__', 'toString', 'hasOwnProperty']) {
      expect(await json(`${base}/${name}`)).toEqual({ status: 404, body: { error: { code: 'NOT_FOUND', message: `no ${name}` } } });
    }
    const foreign = await json(`${base}/api/freeze`, { ...post(), headers: { 'content-type': 'application/json', origin: 'http://evil.example' } });
    expect(foreign).toMatchObject({ status: 403, body: { error: { code: 'FORBIDDEN' } } });
    // fetch() will not send another Host: a raw request does (DNS rebinding: a name that resolves here).
    const port = Number(new URL(base).port);
    const rebound = await new Promise<number>((resolve, reject) => {
      request({ host: '127.0.0.1', port, path: '/api/overview', headers: { host: `evil.example:${port}` } }, (res) => {
        res.resume();
        resolve(res.statusCode!);
      })
        .on('error', reject)
        .end();
    });
    expect(rebound).toBe(421);
    const raw = (path: string, headers: Record<string, string>) =>
      new Promise<number>((resolve, reject) => {
        request({ host: '127.0.0.1', port, path, headers }, (res) => {
          res.resume();
          resolve(res.statusCode!);
        })
          .on('error', reject)
          .end();
      });
    // Names are not case-sensitive; a malformed Origin is another origin; a malformed target is bad input.
    expect(await raw('/api/overview', { host: `LocalHost:${port}` })).toBe(200);
    expect(await raw('/api/overview', { host: `127.0.0.1:${port}`, origin: 'not a url' })).toBe(403);
    expect(await raw('http://[', { host: `127.0.0.1:${port}` })).toBe(400);
    expect((await json(`${base}/api/tasks/%E0%A4%A`)).body.error.code).toBe('INVALID_INPUT');
    expect((await json(`${base}/api/tasks?q=x&limit=abc`)).status).toBe(400);
    expect((await json(`${base}/api/agents/nope/resume`, post())).status).toBe(404);
    expect((await json(`${base}/api/events?after=garbage`)).status).toBe(400);
    expect((await json(`${base}/api/events?taskId=NOSUCHTASK`)).status).toBe(404);
    const page = await fetch(`${base}/`);
    expect(page.headers.get('content-security-policy')).toContain("default-src 'self'");
    // Not to be framed by another site (its buttons act on the runtime).
    expect(page.headers.get('content-security-policy')).toContain("frame-ancestors 'none'");
    expect(page.headers.get('x-frame-options')).toBe('DENY');
    expect(await page.text()).toContain('<');
  });

  it('answers through a forwarded port: on loopback to a loopback name on any port, off loopback to any name with the token', async () => {
    const status = (port: number, path: string, headers: Record<string, string>) =>
      new Promise<number>((resolve, reject) => {
        request({ host: '127.0.0.1', port, path, headers }, (res) => {
          res.resume();
          resolve(res.statusCode!);
        })
          .on('error', reject)
          .end();
      });
    const local = await runtime();
    const localPort = Number(new URL(local.base).port);
    // ssh -L 8080:localhost:PORT, docker -p 8080:PORT: the browser says the port it was given.
    expect(await status(localPort, '/api/overview', { host: 'localhost:8080' })).toBe(200);
    expect(await status(localPort, '/api/overview', { host: '127.0.0.1' })).toBe(200);
    expect(await status(localPort, '/api/overview', { host: 'evil.example:8080' })).toBe(421);
    const token = 'a-token-of-twenty-four-c';
    const { rt: remote } = await runtime({ dashboard: { host: '0.0.0.0', token } });
    const remotePort = Number(new URL(remote.dashboard()!).port);
    // A reverse proxy or a port-forward: another name and another port; the token decides.
    expect(await status(remotePort, '/api/overview', { host: 'localhost:8080', authorization: `Bearer ${token}` })).toBe(200);
    expect(await status(remotePort, '/api/overview', { host: 'troupe.example.com', authorization: `Bearer ${token}` })).toBe(200);
    expect(await status(remotePort, '/api/overview', { host: 'localhost:8080' })).toBe(401);
  });

  it('streams committed events, and a reconnect with Last-Event-ID resumes after the last one seen', async () => {
    const { rt, base } = await runtime();
    const task = await rt.submit({ agent: 'echo', input: { x: 1 } });
    await rt.wait(task.id);
    const first = await readEvents(await fetch(`${base}/api/events?taskId=${task.id}`), 3);
    expect(first.map((e) => e.data.type)).toEqual(['task.queued', 'task.started', 'task.done']);
    const resumed = await readEvents(await fetch(`${base}/api/events?taskId=${task.id}`, { headers: { 'last-event-id': first[1]!.id! } }), 1);
    expect(resumed.map((e) => e.data.type)).toEqual(['task.done']);
    expect(resumed[0]!.id).toBe(first[2]!.id);
    // Live: an event committed after the stream opened arrives on it.
    const stream = await fetch(`${base}/api/events?types=task.done`);
    const second = await rt.submit({ agent: 'echo', input: { x: 2 } });
    expect((await readEvents(stream, 2)).map((e) => e.data.taskId)).toEqual([task.id, second.id]);
    const bad = await json(`${base}/api/events?types=task.nonsense`);
    expect(bad.status).toBe(400);
  });

  it('feeds what changed, coalesced: the latest state of each task, and how many were submitted', async () => {
    const { rt, base } = await runtime({ agents: [builtinAgent('echo'), builtinAgent('sleep')] });
    const feed = await fetch(`${base}/api/changes`);
    const started = nextEvent(rt, 'task.started');
    const sleeping = await rt.submit({ agent: 'sleep', input: { ms: 60_000 } });
    await started;
    const quick = await rt.submit({ agent: 'echo', input: {} });
    await rt.wait(quick.id);
    const states: Record<string, string> = {};
    let submitted = 0;
    const reader = feed.body!.getReader();
    const decoder = new TextDecoder();
    for (let text = ''; states[quick.id] !== 'done' || states[sleeping.id] !== 'running'; ) {
      const { value } = await reader.read();
      text += decoder.decode(value, { stream: true });
      for (const match of text.matchAll(/^data: (.*)$/gm)) {
        const message = JSON.parse(match[1]!) as { tasks: Record<string, string>; submitted: number };
        Object.assign(states, message.tasks);
        submitted += message.submitted;
      }
      text = text.slice(text.lastIndexOf('\n\n') + 2);
    }
    await reader.cancel();
    expect(states).toEqual({ [sleeping.id]: 'running', [quick.id]: 'done' });
    expect(submitted).toBe(2);
    await rt.cancel(sleeping.id);
  });

  it('streams a task log to its end, and ends open streams when the runtime closes', async () => {
    const { rt, base } = await runtime({ agents: [builtinAgent('sleep')] });
    const started = nextEvent(rt, 'task.started');
    const sleeping = await rt.submit({ agent: 'sleep', input: { ms: 60_000 } });
    await started;
    const logs = await fetch(`${base}/api/tasks/${sleeping.id}/logs`);
    const events = await fetch(`${base}/api/events`);
    // Both bodies end (rather than hang) once the runtime closes.
    const bodies = Promise.all([logs.text(), events.text()]);
    await rt.close();
    open.splice(0);
    const [logText, eventText] = await bodies;
    expect(logText).toContain(': open');
    expect(eventText).toContain('task.started');
  });

  it('rejects bad dashboard options with INVALID_OPTIONS, and a port in use', async () => {
    for (const dashboard of [{ port: 70_000 }, { token: 'short' }, { bogus: 1 }, { host: '' }, 'yes']) {
      expect(await rejection(createRuntime({ dataDir: dirs(), logger: false, dashboard: dashboard as never }))).toMatchObject({ code: 'INVALID_OPTIONS' });
    }
    const taken = createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    const port = (taken.address() as { port: number }).port;
    try {
      expect(await rejection(createRuntime({ dataDir: dirs(), logger: false, threads: 1, dashboard: { port } }))).toMatchObject({ code: 'INVALID_OPTIONS' });
    } finally {
      taken.close();
    }
  });
});
