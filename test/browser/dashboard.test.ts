/**
 * The dashboard page in a real browser (Debian's Chromium through playwright-core) against a real
 * runtime: live updates, the task actions, the input prompt, the error page, and the token.
 * With TROUPE_SCREENSHOTS=1 it also saves a screenshot of each view into docs/screenshots/.
 */
import { mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { builtinAgent, createRuntime, type Runtime, type RuntimeEvent } from 'troupe';
import { fixtureAgent, tempDir } from '../helpers.js';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const SCREENSHOTS = fileURLToPath(new URL('../../docs/screenshots/', import.meta.url));

function launch(): Promise<Browser> {
  return chromium.launch({ executablePath: CHROMIUM, args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update'] });
}

/**
 * Records every event of `type` from now on; `nth(id, n)` resolves with the n-th (1-based) about
 * task `id`, whether it came before the call or comes after.
 */
function recorder(rt: Runtime, type: 'task.started' | 'task.waiting') {
  const seen = new Map<string, RuntimeEvent[]>();
  const waiters: Array<{ id: string; n: number; resolve: (event: RuntimeEvent) => void }> = [];
  const off = rt.on(type, (event: RuntimeEvent) => {
    if (event.taskId === undefined) return;
    const list = seen.get(event.taskId) ?? [];
    seen.set(event.taskId, [...list, event]);
    for (const w of waiters.filter((w) => w.id === event.taskId && w.n === list.length + 1)) w.resolve(event);
  });
  return {
    off,
    nth: (id: string, n = 1): Promise<RuntimeEvent> => {
      const got = seen.get(id)?.[n - 1];
      return got ? Promise.resolve(got) : new Promise((resolve) => waiters.push({ id, n, resolve }));
    },
  };
}

describe('dashboard page', () => {
  const dir = tempDir();
  let rt: Runtime;
  let browser: Browser;
  let context: BrowserContext;
  let url: string;
  let started: ReturnType<typeof recorder>;
  let waiting: ReturnType<typeof recorder>;

  beforeAll(async () => {
    rt = await createRuntime({
      dataDir: dir.path,
      logger: false,
      threads: 1,
      slotsPerThread: 4,
      cancelGraceMs: 500,
      dashboard: true,
      agents: [builtinAgent('sleep'), builtinAgent('echo'), builtinAgent('fail'), { name: 'int', module: fixtureAgent('interactive') }],
    });
    url = rt.dashboard()!;
    started = recorder(rt, 'task.started');
    waiting = recorder(rt, 'task.waiting');
    browser = await launch();
  });

  afterAll(async () => {
    try {
      await browser?.close();
    } finally {
      await rt?.close({ timeoutMs: 2_000 });
      dir.cleanup();
    }
  });

  async function open(hash: string): Promise<Page> {
    await context?.close();
    context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
    const page = await context.newPage();
    page.setDefaultTimeout(10_000);
    await page.goto(`${url}${hash}`);
    await page.waitForSelector('#view[data-ready]');
    return page;
  }

  it('shows a task submitted after the page loaded, and its state going running → done, without a reload', async () => {
    const page = await open('#/tasks');
    await page.evaluate(() => ((globalThis as { loadedOnce?: boolean }).loadedOnce = true));
    const task = await rt.submit({ agent: 'sleep', input: { ms: 1_500, steps: 1 } });
    await page.waitForSelector(`tr[data-task-id="${task.id}"][data-state="running"]`);
    await page.waitForSelector(`tr[data-task-id="${task.id}"][data-state="done"]`);
    expect(await page.evaluate(() => (globalThis as { loadedOnce?: boolean }).loadedOnce)).toBe(true);
    expect(await page.locator(`tr[data-task-id="${task.id}"] a`).getAttribute('href')).toBe(`#/tasks/${task.id}`);
  });

  it('cancels a running task from its page, then retries it', async () => {
    const task = await rt.submit({ agent: 'sleep', input: { ms: 60_000, steps: 1 } });
    await started.nth(task.id);
    const page = await open(`#/tasks/${task.id}`);
    await page.waitForSelector(`[data-task-id="${task.id}"][data-state="running"]`);
    await page.getByRole('button', { name: 'Cancel', exact: true }).click();
    await page.waitForSelector(`[data-task-id="${task.id}"][data-state="cancelled"]`);
    expect(await page.locator('[data-status]').textContent()).toBe('Cancelled');
    expect((await rt.get(task.id)).state).toBe('cancelled');

    const restarted = started.nth(task.id, 2);
    await page.getByRole('button', { name: 'Retry', exact: true }).click();
    await restarted;
    await page.waitForSelector(`[data-task-id="${task.id}"][data-state="running"]`);
    expect(await page.locator('[data-status]').textContent()).toBe('Retried');
    await rt.cancel(task.id);
  });

  it("answers a waiting task's prompt: the task finishes with the answer", async () => {
    const task = await rt.submit({ agent: 'int', input: { mode: 'ask', prompt: 'Ship it?' } });
    const page = await open(`#/tasks/${task.id}`);
    await page.waitForSelector('[data-prompt]:text("Ship it?")');
    await page.getByRole('textbox', { name: 'Answer' }).fill('yes, ship');
    await page.getByRole('button', { name: 'Send', exact: true }).click();
    const done = await rt.wait(task.id, { timeoutMs: 10_000 });
    expect(done.state).toBe('done');
    expect(done.output).toMatchObject({ answer: 'yes, ship' });
    await page.waitForSelector(`[data-task-id="${task.id}"][data-state="done"]`);
    expect(await page.locator('[data-waiting]').count()).toBe(0);
  });

  it('shows an error page naming an unknown task id', async () => {
    const page = await open('#/tasks/NO-SUCH-TASK-42');
    const error = page.locator('[data-error="not-found"]');
    await error.waitFor();
    expect(await error.textContent()).toContain('NO-SUCH-TASK-42');
  });

  it('freezes and unfreezes the runtime from the overview', async () => {
    const page = await open('#/');
    await page.getByRole('textbox', { name: 'Freeze reason' }).fill('maintenance');
    await page.getByRole('button', { name: 'Freeze', exact: true }).click();
    await page.waitForSelector('[data-status]:text-is("Frozen")');
    expect(rt.stats().freeze).toMatchObject({ reason: 'maintenance' });
    await page.waitForSelector('[data-hold="frozen"]:text("maintenance")');
    await page.getByRole('button', { name: 'Unfreeze', exact: true }).click();
    await page.waitForSelector('[data-status]:text-is("Unfrozen")');
    expect(rt.stats().frozen).toBe(false);
  });

  it('pauses and resumes a schedule from its row', async () => {
    await rt.schedules.create({ id: 'weekly-cleanup', cron: '0 4 * * 1', task: { agent: 'echo', input: 'cleanup' } });
    const page = await open('#/schedules');
    const row = '[data-schedule="weekly-cleanup"]';
    await page.locator(row).getByRole('button', { name: 'Pause', exact: true }).click();
    await page.waitForSelector(`${row}[data-paused="true"]`);
    expect(await page.locator('[data-status]').textContent()).toBe('Paused weekly-cleanup');
    expect(rt.schedules.list().find((s) => s.id === 'weekly-cleanup')?.paused).toBe(true);
    await page.locator(row).getByRole('button', { name: 'Resume', exact: true }).click();
    await page.waitForSelector(`${row}[data-paused="false"]`);
    expect(rt.schedules.list().find((s) => s.id === 'weekly-cleanup')?.paused).toBe(false);
  });

  it.runIf(process.env.TROUPE_SCREENSHOTS === '1')('saves a screenshot of each view', { timeout: 90_000 }, async () => {
    mkdirSync(SCREENSHOTS, { recursive: true });
    await rt.schedules.create({ id: 'nightly-report', cron: '0 3 * * *', task: { agent: 'echo', input: { report: 'nightly' } } });
    await rt.schedules.create({ id: 'hourly-sync', cron: '0 * * * *', task: { agent: 'echo', input: 'sync' }, paused: true });
    const settled = [];
    for (let i = 0; i < 6; i++) settled.push(await rt.submit({ agent: 'echo', input: { n: i }, labels: { team: i % 2 ? 'search' : 'billing' } }));
    settled.push(await rt.submit({ agent: 'fail', input: { mode: 'fatal', message: 'upstream returned 503' } }));
    for (const t of settled) await rt.wait(t.id);
    const asking = await rt.submit({ agent: 'int', input: { mode: 'ask', prompt: 'Deploy build 812 to production?' }, labels: { team: 'release' } });
    await waiting.nth(asking.id);
    const running = await rt.submit({ agent: 'sleep', input: { ms: 60_000, steps: 1 } });
    await started.nth(running.id);
    const views: Array<[string, string, string]> = [
      ['overview', '#/', '.chart rect'],
      ['tasks', '#/tasks', `tr[data-task-id="${running.id}"]`],
      ['task', `#/tasks/${asking.id}`, '[data-prompt]'],
      ['instances', '#/instances', '[data-instance]'],
      ['agents', '#/agents', '[data-agent="sleep"]'],
      ['schedules', '#/schedules', '[data-schedule="nightly-report"]'],
    ];
    for (const [name, hash, ready] of views) {
      const page = await open(hash);
      // The chart's buckets are sampled every 10 s: the first one with these tasks takes that long.
      await page.waitForSelector(ready, { timeout: name === 'overview' ? 30_000 : 10_000 });
      await page.screenshot({ path: `${SCREENSHOTS}${name}.png`, fullPage: true });
    }
    await rt.cancel(running.id);
    await rt.cancel(asking.id);
  });
});

describe('dashboard token', () => {
  const dir = tempDir();
  let rt: Runtime;
  let base: string;
  let token: string;

  beforeAll(async () => {
    rt = await createRuntime({ dataDir: dir.path, logger: false, threads: 1, dashboard: { host: '0.0.0.0', port: 0 }, agents: [builtinAgent('sleep')] });
    const shown = new URL(rt.dashboard()!);
    token = decodeURIComponent(shown.hash.replace(/^#token=/, ''));
    base = `http://127.0.0.1:${shown.port}`;
  });

  afterAll(async () => {
    await rt?.close({ timeoutMs: 2_000 });
    dir.cleanup();
  });

  const reads = ['/api/overview', '/api/tasks', '/api/instances', '/api/agents', '/api/schedules', '/api/events'];
  const actions = ['/api/freeze', '/api/unfreeze', '/api/agents/sleep/resume', '/api/schedules/none/pause', '/api/schedules/none/resume'];

  async function call(path: string, init: { method?: string; headers?: Record<string, string> } = {}): Promise<number> {
    const stop = new AbortController();
    const headers = { ...(init.method === 'POST' ? { 'content-type': 'application/json' } : {}), ...init.headers };
    const res = await fetch(`${base}${path}`, { method: init.method ?? 'GET', headers, body: init.method === 'POST' ? '{}' : undefined, signal: stop.signal });
    stop.abort(); // event streams stay open otherwise
    return res.status;
  }

  it('refuses every API call and action without the token, and takes them with it', async () => {
    const task = await rt.submit({ agent: 'sleep', input: { ms: 60_000, steps: 1 } });
    const taskPaths = [`/api/tasks/${task.id}`, `/api/tasks/${task.id}/logs`];
    const taskActions = ['cancel', 'retry', 'input'].map((a) => `/api/tasks/${task.id}/${a}`);
    for (const path of [...reads, ...taskPaths]) {
      expect(await call(path), path).toBe(401);
      expect(await call(path, { headers: { authorization: 'Bearer not-the-token-at-all' } }), path).toBe(401);
    }
    for (const path of [...actions, ...taskActions]) expect(await call(path, { method: 'POST' }), path).toBe(401);
    expect(rt.stats().frozen).toBe(false);
    expect((await rt.get(task.id)).state).not.toBe('cancelled');

    const auth = { authorization: `Bearer ${token}` };
    for (const path of [...reads, ...taskPaths]) expect(await call(path, { headers: auth }), path).toBe(200);
    expect(await call(`/api/overview?token=${encodeURIComponent(token)}`)).toBe(200);
    expect(await call('/api/freeze', { method: 'POST', headers: auth })).toBe(200);
    expect(rt.stats().frozen).toBe(true);
    expect(await call('/api/unfreeze', { method: 'POST', headers: auth })).toBe(200);
    expect(await call(`/api/tasks/${task.id}/cancel`, { method: 'POST', headers: auth })).toBe(200);
    expect((await rt.get(task.id)).state).toBe('cancelled');
    // The page's own files hold no data: the browser fetches them before it has read the token.
    expect(await call('/')).toBe(200);
    expect(await call('/app.js')).toBe(200);
  });

  it('refuses a request from a foreign Origin, even with the token', async () => {
    const foreign = { authorization: `Bearer ${token}`, origin: 'http://evil.example' };
    expect(await call('/api/overview', { headers: foreign })).toBe(403);
    expect(await call('/api/freeze', { method: 'POST', headers: foreign })).toBe(403);
    expect(rt.stats().frozen).toBe(false);
    expect(await call('/api/overview', { headers: { authorization: `Bearer ${token}`, origin: base } })).toBe(200);
  });

  it('the page opened with its #token= link works, and says so when the token is wrong', async () => {
    const browser = await launch();
    try {
      const page = await browser.newPage();
      await page.goto(`${base}/#token=${encodeURIComponent(token)}`);
      await page.waitForSelector('#view[data-ready] [data-count="cancelled"]');
      expect(new URL(page.url()).hash).toBe('#/');
      await page.goto(`${base}/#/tasks`);
      await page.waitForSelector('#view[data-view="tasks"][data-ready] tr[data-task-id]');

      const stranger = await browser.newPage();
      await stranger.goto(`${base}/#token=not-the-token-at-all`);
      await stranger.waitForSelector('#banner[data-error="unauthorized"]:not([hidden])');
    } finally {
      await browser.close();
    }
  });
});
