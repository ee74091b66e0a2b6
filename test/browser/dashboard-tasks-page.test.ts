/**
 * The Tasks page left open on a busy runtime, in Chromium: it keeps at most a page of tasks shown
 * on top of the one it read, and when the changes feed says too much changed to name (overflow),
 * it reads its page again in one request. Before, it added a row for every new task without end,
 * and on overflow asked for every row it held, one request each.
 */
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { builtinAgent, createRuntime, type Runtime } from 'troupe';
import { tempDir } from '../helpers.js';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
/** dashboard/lib.js's PAGE_SIZE. */
const PAGE_SIZE = 50;

describe('the Tasks page on a busy runtime', () => {
  const dir = tempDir();
  let rt: Runtime;
  let browser: Browser;
  let url: string;

  beforeAll(async () => {
    rt = await createRuntime({ dataDir: dir.path, logger: false, threads: 1, slotsPerThread: 4, dashboard: true, agents: [builtinAgent('echo')] });
    url = rt.dashboard()!;
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update'] });
  });

  afterAll(async () => {
    try {
      await browser?.close();
    } finally {
      await rt?.close({ timeoutMs: 2_000 });
      dir.cleanup();
    }
  });

  /** The page at `hash`; `requests` gets the path of every request it makes. */
  async function open(hash: string, requests: string[] = []): Promise<Page> {
    const page = await (await browser.newContext()).newPage();
    page.setDefaultTimeout(10_000);
    page.on('request', (request) => void requests.push(new URL(request.url()).pathname));
    await page.goto(`${url}${hash}`);
    await page.waitForSelector('#view[data-ready]');
    return page;
  }

  it('keeps at most a page of new tasks on top of the page it read', async () => {
    const page = await open('#/tasks');
    const ids: string[] = [];
    for (let i = 0; i < 2 * PAGE_SIZE + 10; i++) ids.push((await rt.submit({ agent: 'echo', input: { i } })).id);
    for (const id of ids) await rt.wait(id);
    await page.waitForSelector(`tr[data-task-id="${ids.at(-1)}"][data-state="done"]`);
    // The page read (at most a page) and at most a page above it: never all 110.
    expect(await page.locator('tbody tr[data-task-id]').count()).toBeLessThanOrEqual(2 * PAGE_SIZE);
    expect(await page.locator(`tr[data-task-id="${ids.at(-PAGE_SIZE)}"]`).count()).toBe(1);
    await page.context().close();
  });

  it('reads its page again in one request when too much changed to name, not each row it shows', async () => {
    const kept = await rt.submitMany([1, 2, 3].map((i) => ({ agent: 'echo', input: { i }, labels: { keep: 'yes' } })));
    for (const task of kept) await rt.wait(task.id);
    const requests: string[] = [];
    const page = await open('#/tasks?label=keep%3Dyes', requests);
    await page.waitForSelector(`tr[data-task-id="${kept[2]!.id}"]`);
    const lists = () => requests.filter((path) => path === '/api/tasks').length;
    // Read once, and once more when the changes feed opened.
    await expect.poll(lists).toBe(2);
    const before = requests.length;
    // Over 500 tasks change state in one commit: the feed cannot name them.
    await rt.submitMany(Array.from({ length: 1_100 }, (_, i) => ({ agent: 'echo', input: { i }, runAt: Date.now() + 3_600_000 })));
    await expect.poll(lists).toBe(3);
    await page.waitForSelector(`tr[data-task-id="${kept[2]!.id}"]`);
    expect(requests.slice(before).filter((path) => path.startsWith('/api/tasks/'))).toEqual([]);
    expect(await page.locator('tbody tr[data-task-id]').count()).toBe(3);
    await page.context().close();
  });
});
