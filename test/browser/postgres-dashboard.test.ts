/**
 * The dashboard page of a runtime on PostgreSQL, in a real browser (Debian's Chromium through
 * playwright-core): it lists the tasks another runtime of the cluster runs and follows their state
 * live, cancels one running there, and says what it shows (the cluster's tasks, this runtime's
 * slots and chart, no instances). The dashboard's runtime registers `echo`, the other `sleep`.
 */
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { builtinAgent, type Runtime } from 'troupe';
import { nextEvent } from 'troupe/testing';
import { scratchPools } from '../helpers.js';
import { pgRuntimes } from '../pg-runtime.js';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

// Runtimes close (pgRuntimes' hook, registered second, runs first) before their databases are dropped.
const pools = scratchPools();
const runtime = pgRuntimes();

describe('the dashboard page on PostgreSQL', () => {
  let browser: Browser;
  let context: BrowserContext | undefined;

  beforeAll(async () => {
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update'] });
  });
  afterEach(async () => {
    await context?.close();
    context = undefined;
  });
  afterAll(async () => {
    await browser?.close();
  });

  /** Two runtimes on a fresh database; `rt` serves the dashboard. */
  async function cluster(): Promise<{ rt: Runtime; worker: Runtime }> {
    const { url } = await pools({ migrated: false });
    const worker = await runtime(url, { agents: [builtinAgent('sleep')] });
    const rt = await runtime(url, { dashboard: true, agents: [builtinAgent('echo')] });
    return { rt, worker };
  }

  async function open(rt: Runtime, hash: string): Promise<Page> {
    context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
    const page = await context.newPage();
    page.setDefaultTimeout(10_000);
    await page.goto(`${rt.dashboard()}${hash}`);
    await page.waitForSelector('#view[data-ready]');
    return page;
  }

  it('lists a task another runtime ran, and follows one it runs from queued to running to cancelled, without a reload', async () => {
    const { rt, worker } = await cluster();
    const ran = await worker.submit({ agent: 'sleep', input: { ms: 1, steps: 1 } });
    await rt.wait(ran.id);
    const page = await open(rt, '#/tasks');
    await page.waitForSelector(`tr[data-task-id="${ran.id}"][data-state="done"]`);
    expect(await page.locator(`tr[data-task-id="${ran.id}"] td`).nth(1).textContent()).toBe('sleep');
    await page.evaluate(() => ((globalThis as { loadedOnce?: boolean }).loadedOnce = true));

    // Frozen, the task stays queued until the page has shown it so.
    await rt.freeze();
    const task = await worker.submit({ agent: 'sleep', input: { ms: 60_000, steps: 1 } });
    await page.waitForSelector(`tr[data-task-id="${task.id}"][data-state="queued"]`);
    await rt.unfreeze();
    await page.waitForSelector(`tr[data-task-id="${task.id}"][data-state="running"]`);
    await worker.cancel(task.id);
    await page.waitForSelector(`tr[data-task-id="${task.id}"][data-state="cancelled"]`);
    expect(await page.evaluate(() => (globalThis as { loadedOnce?: boolean }).loadedOnce)).toBe(true);
  });

  it("cancels from its page a task running on another runtime, and shows its events as they come", async () => {
    const { rt, worker } = await cluster();
    const started = nextEvent(rt, 'task.started');
    const task = await worker.submit({ agent: 'sleep', input: { ms: 60_000, steps: 1 } });
    await started;
    const page = await open(rt, `#/tasks/${task.id}`);
    await page.waitForSelector(`[data-task-id="${task.id}"][data-state="running"]`);
    await page.getByRole('button', { name: 'Cancel', exact: true }).click();
    await page.waitForSelector(`[data-task-id="${task.id}"][data-state="cancelled"]`);
    expect(await page.locator('[data-status]').textContent()).toBe('Cancelled');
    expect((await worker.get(task.id)).state).toBe('cancelled');
    await page.waitForSelector('td:text-is("task.cancelled")');
    expect(await page.locator('td:text-is("task.started")').count()).toBe(1);
  });

  it("shows the cluster's tasks and this runtime's slots and chart on the overview, and no instances", async () => {
    const { rt, worker } = await cluster();
    const theirs = await worker.submit({ agent: 'sleep', input: { ms: 1, steps: 1 } });
    const mine = await rt.submit({ agent: 'echo', input: {} });
    await rt.wait(theirs.id);
    await rt.wait(mine.id);
    const page = await open(rt, '#/');
    await page.waitForSelector('[data-store="postgres"]');
    expect(await page.locator('[data-count="done"] b').textContent()).toBe('2');
    expect(await page.locator('h2', { hasText: "This runtime's attempts" }).count()).toBe(1);
    expect(await page.locator('.card', { hasText: 'slots busy on this runtime' }).count()).toBe(1);
    expect(await page.locator('[data-queue="sleep"]').textContent()).toContain('(not on this runtime)');

    await page.goto(`${rt.dashboard()}#/instances`);
    const none = page.locator('[data-instances="none"]');
    await none.waitFor();
    expect(await none.textContent()).toContain('PostgreSQL');
  });
});
