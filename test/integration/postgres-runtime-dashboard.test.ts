/**
 * The dashboard of a runtime on PostgreSQL: its JSON API and event streams over a runtime of a
 * cluster, showing what another runtime of the cluster runs. The dashboard's runtime registers
 * `echo`; the other one registers `sleep` and `logging`, so their tasks run there and reach the
 * dashboard only through the database. What the store has no backing for answers as a store
 * without those records (no instances, no children), and an action it refuses answers its code.
 */
import { describe, expect, it } from 'vitest';
import { builtinAgent, type Runtime, type RuntimeOptions } from 'troupe';
import { nextEvent } from 'troupe/testing';
import { fixtureAgent, scratchPools } from '../helpers.js';
import { pgRuntimes } from '../pg-runtime.js';
import { readLines } from './contract.js';

// Runtimes close (pgRuntimes' hook, registered second, runs first) before their databases are dropped.
const pools = scratchPools();
const runtime = pgRuntimes();

/** A cluster of two runtimes on a fresh database; `rt` serves the dashboard at `base`. */
async function cluster(dashboard: RuntimeOptions['dashboard'] = true): Promise<{ rt: Runtime; worker: Runtime; base: string }> {
  const { url } = await pools({ migrated: false });
  const worker = await runtime(url, { agents: [builtinAgent('sleep'), { name: 'logging', module: fixtureAgent('logging') }] });
  const rt = await runtime(url, { dashboard, agents: [builtinAgent('echo')] });
  return { rt, worker, base: rt.dashboard()!.replace(/\/(#.*)?$/, '') };
}

async function json(url: string, init: RequestInit = {}): Promise<{ status: number; body: any }> {
  const res = await fetch(url, init);
  return { status: res.status, body: await res.json() };
}

const post = (body: unknown = {}): RequestInit => ({ method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
const ids = (page: { tasks: Array<{ id: string }> }) => page.tasks.map((t) => t.id);

interface Message {
  id?: string;
  event?: string;
  data: any;
}

/** Reads an SSE response until `enough` holds for the messages read (or the stream ends), then stops reading. */
async function readUntil(res: Response, enough: (messages: Message[]) => boolean): Promise<Message[]> {
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  const out: Message[] = [];
  let text = '';
  while (!enough(out)) {
    const { value, done } = await reader.read();
    if (done) break;
    text += decoder.decode(value, { stream: true });
    for (let end = text.indexOf('\n\n'); end >= 0; end = text.indexOf('\n\n')) {
      const fields: Record<string, string> = {};
      for (const line of text.slice(0, end).split('\n')) if (!line.startsWith(':')) fields[line.slice(0, line.indexOf(': '))] = line.slice(line.indexOf(': ') + 2);
      text = text.slice(end + 2);
      if (fields.data !== undefined) out.push({ id: fields.id, event: fields.event, data: JSON.parse(fields.data) });
    }
  }
  await reader.cancel();
  return out;
}

describe('the dashboard of a runtime on PostgreSQL', () => {
  it("answers overview, tasks, a task, instances, agents and schedules with the cluster's tasks and this runtime's slots", async () => {
    const { rt, worker, base } = await cluster();
    const mine = await rt.submit({ agent: 'echo', input: { n: 1 }, labels: { team: 'red' } });
    const theirs = await worker.submit({ agent: 'sleep', input: { ms: 1, steps: 1 }, labels: { team: 'blue' } });
    await rt.wait(mine.id);
    await rt.wait(theirs.id);

    // The first overview already counts every task of the cluster (a count taken for it), the one
    // the other runtime ran included, under its agent; the slots are this runtime's.
    const overview = await json(`${base}/api/overview`);
    expect(overview.status).toBe(200);
    expect(overview.body.store).toBe('postgres');
    expect(overview.body.stats.tasks).toMatchObject({ done: 2, queued: 0, running: 0 });
    expect(overview.body.stats.agents.echo.tasks).toEqual({ done: 1 });
    expect(overview.body.stats.agents.sleep.tasks).toEqual({ done: 1 });
    expect(overview.body.stats.slots).toEqual({ total: 2, busy: 0, free: 2 });
    expect(overview.body.stats.frozen).toBe(false);
    expect(overview.body.agents.map((a: { name: string }) => a.name)).toEqual(['echo']);
    expect(overview.body.chart).toMatchObject({ bucketMs: 10_000, buckets: [] });

    expect((await json(`${base}/api/tasks`)).body).toMatchObject({ tasks: [{ id: mine.id, state: 'done' }, { id: theirs.id, state: 'done', agent: 'sleep' }], next: null });
    expect(ids((await json(`${base}/api/tasks?state=done&agent=sleep`)).body)).toEqual([theirs.id]);
    expect(ids((await json(`${base}/api/tasks?label=team=blue`)).body)).toEqual([theirs.id]);
    const first = (await json(`${base}/api/tasks?limit=1`)).body;
    expect(ids(first)).toEqual([mine.id]);
    expect(ids((await json(`${base}/api/tasks?limit=1&after=${first.next}`)).body)).toEqual([theirs.id]);
    expect(ids((await json(`${base}/api/tasks?q=${theirs.id.slice(-8)}`)).body)).toEqual([theirs.id]);
    expect((await json(`${base}/api/tasks?state=nonsense`)).status).toBe(400);

    // A task has no parent or children on PostgreSQL: none, not an error.
    const view = await json(`${base}/api/tasks/${theirs.id}`);
    expect(view).toMatchObject({ status: 200, body: { task: { id: theirs.id, state: 'done', output: { sleptMs: 1 } }, parent: null, children: [] } });
    expect(await json(`${base}/api/tasks/01NOSUCHTASK`)).toMatchObject({ status: 404, body: { error: { code: 'NOT_FOUND' } } });

    // No execution instances on PostgreSQL: an empty list.
    expect(await json(`${base}/api/instances`)).toEqual({ status: 200, body: [] });
    const agents = await json(`${base}/api/agents`);
    expect(agents.status).toBe(200);
    expect(agents.body.store).toBe('postgres');
    expect(agents.body.agents.map((a: { name: string }) => a.name)).toEqual(['echo']);
    expect(agents.body.stats.sleep.tasks).toEqual({ done: 1 });

    await rt.schedules.create({ id: 'nightly', cron: '0 3 * * *', task: { agent: 'echo', input: 'n' } });
    expect((await json(`${base}/api/schedules`)).body).toMatchObject([{ id: 'nightly', paused: false }]);
    expect((await json(`${base}/api/schedules/nightly/pause`, post())).body.schedule).toMatchObject({ id: 'nightly', paused: true });
    expect((await json(`${base}/api/schedules/nightly/resume`, post())).body.schedule).toMatchObject({ id: 'nightly', paused: false });
  });

  it("streams a task's events from another runtime, resumes after a PostgreSQL cursor (Last-Event-ID or a seq), and goes live", async () => {
    const { rt, worker, base } = await cluster();
    const task = await worker.submit({ agent: 'sleep', input: { ms: 1, steps: 1 } });
    await rt.wait(task.id);
    // The sleep agent reports its one step: a task.progress before the settle, as on LMDB.
    const replayed = await readUntil(await fetch(`${base}/api/events?taskId=${task.id}`), (m) => m.length === 4);
    expect(replayed.map((e) => e.data.type)).toEqual(['task.queued', 'task.started', 'task.progress', 'task.done']);
    expect(replayed.map((e) => e.id)).toEqual(replayed.map((e) => e.data.cursor));
    const resumed = await readUntil(await fetch(`${base}/api/events?taskId=${task.id}`, { headers: { 'last-event-id': replayed[0]!.id! } }), (m) => m.length === 3);
    expect(resumed.map((e) => e.id)).toEqual(replayed.slice(1).map((e) => e.id));
    const afterSeq = await readUntil(await fetch(`${base}/api/events?taskId=${task.id}&after=${replayed[2]!.data.seq}`), (m) => m.length === 1);
    expect(afterSeq.map((e) => e.id)).toEqual([replayed[3]!.id]);
    expect(await json(`${base}/api/events?after=garbage`)).toMatchObject({ status: 400, body: { error: { code: 'INVALID_INPUT' } } });
    expect((await json(`${base}/api/events?types=task.nonsense`)).status).toBe(400);
    expect((await json(`${base}/api/events?taskId=01NOSUCHTASK`)).status).toBe(404);

    // Live: a task.done committed on the other runtime after the stream opened.
    const live = await fetch(`${base}/api/events?types=task.done&after=${replayed[3]!.id}`);
    const next = await worker.submit({ agent: 'sleep', input: { ms: 1, steps: 1 } });
    expect((await readUntil(live, (m) => m.length === 1)).map((e) => e.data.taskId)).toEqual([next.id]);
  });

  it('feeds the state changes of tasks running on another runtime, and streams their log lines to the settle', async () => {
    const { rt, worker, base } = await cluster();
    const feed = await fetch(`${base}/api/changes`);
    const started = nextEvent(rt, 'task.started');
    const long = await worker.submit({ agent: 'sleep', input: { ms: 60_000, steps: 1 } });
    await started;
    const quick = await worker.submit({ agent: 'sleep', input: { ms: 1, steps: 1 } });
    await rt.wait(quick.id);
    const states: Record<string, string> = {};
    let submitted = 0;
    await readUntil(feed, (messages) => {
      for (const message of messages.splice(0)) {
        Object.assign(states, message.data.tasks);
        submitted += message.data.submitted;
      }
      return states[quick.id] === 'done' && states[long.id] === 'running';
    });
    expect(states).toEqual({ [long.id]: 'running', [quick.id]: 'done' });
    expect(submitted).toBe(2);
    await rt.cancel(long.id);

    // The log of a task the other runtime runs, followed from before its first line to its end.
    await rt.freeze();
    const logging = await worker.submit({ agent: 'logging', input: { lines: 120 } });
    const stream = await fetch(`${base}/api/tasks/${logging.id}/logs`);
    await rt.unfreeze();
    const lines = await readUntil(stream, (m) => m.at(-1)?.event === 'end');
    expect(lines.at(-1)).toEqual({ id: undefined, event: 'end', data: {} });
    expect(lines.slice(0, -1).map((m) => m.data)).toEqual(await readLines(rt, logging.id));
    expect(lines).toHaveLength(121);
    expect((await json(`${base}/api/tasks/01NOSUCHTASK/logs`)).status).toBe(404);
  });

  it('cancels (on the runtime that runs it), retries, freezes and unfreezes; a refused action answers its code', async () => {
    const { rt, worker, base } = await cluster();
    const started = nextEvent(rt, 'task.started');
    const task = await worker.submit({ agent: 'sleep', input: { ms: 60_000, steps: 1 } });
    await started;
    const cancelled = await json(`${base}/api/tasks/${task.id}/cancel`, post({ reason: 'from the page' }));
    expect(cancelled).toMatchObject({ status: 200, body: { task: { id: task.id, state: 'cancelled' } } });
    expect((await worker.get(task.id)).state).toBe('cancelled');
    const restarted = nextEvent(rt, 'task.started', { taskId: task.id });
    expect((await json(`${base}/api/tasks/${task.id}/retry`, post())).body.task).toMatchObject({ state: 'queued', runs: 2 });
    await restarted;
    expect((await json(`${base}/api/tasks/${task.id}/cancel`, post())).body.task.state).toBe('cancelled');

    expect((await json(`${base}/api/freeze`, post({ reason: 'deploy' }))).body).toEqual({ frozen: true });
    expect((await json(`${base}/api/overview`)).body.stats).toMatchObject({ frozen: true, freeze: { reason: 'deploy', killed: false } });
    expect((await json(`${base}/api/unfreeze`, post())).body).toEqual({ frozen: false });
    expect(rt.stats().frozen).toBe(false);

    // Refused by the task's state, as on LMDB.
    const done = await rt.submit({ agent: 'echo', input: {} });
    await rt.wait(done.id);
    expect(await json(`${base}/api/tasks/${done.id}/retry`, post())).toMatchObject({ status: 400, body: { error: { code: 'ILLEGAL_TRANSITION' } } });
    expect(await json(`${base}/api/tasks/${done.id}/cancel`, post())).toMatchObject({ status: 400, body: { error: { code: 'ILLEGAL_TRANSITION' } } });
    // Calls the store has no backing for yet (UNSUPPORTED_STORE): what the runtime's own call
    // answers, the page gets, its code and message, not an internal error.
    for (const [path, call] of [
      [`/api/tasks/${done.id}/input`, () => rt.sendInput(done.id, { message: 'hi' })],
      ['/api/agents/echo/resume', () => rt.resumeAgent('echo')],
    ] as const) {
      const direct = await (call() as Promise<unknown>).then(
        () => undefined,
        (error: { code: string; message: string }) => ({ code: error.code, message: error.message }),
      );
      const answer = await json(`${base}${path}`, post({ message: 'hi' }));
      if (direct === undefined) expect(answer.status, path).toBe(200);
      else {
        expect(answer.status, path).toBe(direct.code === 'UNSUPPORTED_STORE' ? 501 : 400);
        expect(answer.body.error, path).toEqual(direct);
      }
    }
  });

  it('takes the token off loopback, and ends its streams when the runtime closes', async () => {
    const { rt, base: shown } = await cluster({ host: '0.0.0.0', port: 0 });
    const url = new URL(rt.dashboard()!);
    const token = decodeURIComponent(url.hash.replace(/^#token=/, ''));
    expect(token.length).toBeGreaterThanOrEqual(16);
    const base = `http://127.0.0.1:${url.port}`;
    expect(shown).toBe(`http://0.0.0.0:${url.port}`);
    expect((await json(`${base}/api/overview`)).status).toBe(401);
    expect((await json(`${base}/api/freeze`, post())).status).toBe(401);
    expect(rt.stats().frozen).toBe(false);
    const auth = { authorization: `Bearer ${token}` };
    expect((await json(`${base}/api/overview`, { headers: auth })).body.store).toBe('postgres');
    expect((await json(`${base}/api/instances?token=${encodeURIComponent(token)}`)).body).toEqual([]);

    const events = await fetch(`${base}/api/events`, { headers: auth });
    const changes = await fetch(`${base}/api/changes`, { headers: auth });
    const bodies = Promise.all([events.text(), changes.text()]);
    await rt.close();
    const [eventText, changeText] = await bodies;
    expect(eventText).toContain(': open');
    expect(changeText).toContain(': open');
  });
});
