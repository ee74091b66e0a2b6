import { writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';
import { builtinAgent, createRuntime, type Runtime, type RuntimeOptions } from 'troupe';
import { rejection, runtimes, tempDir } from '../helpers.js';

const runtime = runtimes();

function thrown(fn: () => unknown): { code?: string; message: string } {
  try {
    fn();
  } catch (error) {
    return error as { code?: string; message: string };
  }
  throw new Error('expected a throw');
}

async function settleAll(rt: Runtime, n: number): Promise<string[]> {
  const tasks = await Promise.all(Array.from({ length: n }, () => rt.submit({ agent: 'echo' })));
  await Promise.all(tasks.map((t) => rt.wait(t.id)));
  return tasks.map((t) => t.id);
}

describe('listeners that fail', () => {
  it('an async listener whose promise rejects is logged and counted, and nothing else notices', async () => {
    const rt = await runtime({ agents: [builtinAgent('echo')] });
    const seen: string[] = [];
    rt.on('task.done', async () => {
      await Promise.resolve();
      throw new Error('async listener');
    });
    rt.on('task.done', () => {
      throw new Error('sync listener');
    });
    rt.on('task.done', (e) => seen.push(e.taskId!));
    const ids = await settleAll(rt, 10);
    // The rejections are handled a microtask after the publish: let them land.
    await new Promise((resolve) => setImmediate(resolve));
    expect(seen.sort()).toEqual([...ids].sort());
    expect((await rt.metrics()).listenerErrors).toBe(20);
    expect(await rt.metrics({ format: 'prometheus' })).toContain('troupe_listener_errors_total 20');
    expect(rt.state).toBe('running');
  });
});

describe('options a call does not know', () => {
  it('are INVALID_OPTIONS naming the option, for list, events, on and metrics', async () => {
    const rt = await runtime({ agents: [builtinAgent('echo')] });
    const cases: Array<[() => unknown, string]> = [
      [() => rt.list({ bogus: 1 } as never), 'list: bogus is not one of its options'],
      [() => rt.list({ State: 'done' } as never), 'list: State is not one of its options'],
      [() => rt.events({ bogus: 1 } as never).next(), 'events: bogus is not one of its options'],
      [() => rt.events({ types: ['task.bogus'] as never }).next(), 'events: types: "task.bogus" is not an event type'],
      [() => rt.on('task.bogus' as never, () => undefined), 'on: "task.bogus" is not an event type'],
      [() => rt.metrics({ bogus: 1 } as never), 'metrics: bogus is not one of its options'],
      [() => rt.metrics({ format: 'xml' } as never), "metrics: format must be 'prometheus' or 'snapshot'"],
    ];
    for (const [call, message] of cases) {
      let error: { code?: string; message: string };
      try {
        await call();
        throw new Error(`expected ${message}`);
      } catch (caught) {
        error = caught as { code?: string; message: string };
      }
      expect(error.code, message).toBe('INVALID_OPTIONS');
      expect(error.message).toContain(message);
    }
    expect(thrown(() => rt.on('task.done', 'not a function' as never))).toMatchObject({ code: 'INVALID_INPUT' });
    // A stream's bad options fail its first next(), before anything is replayed.
    expect(await rejection(rt.events({ taskId: 'x'.repeat(5_000) }).next())).toMatchObject({ code: 'INVALID_INPUT' });
    expect(await rejection(rt.list({ after: 'x'.repeat(5_000) }))).toMatchObject({ code: 'INVALID_INPUT' });
  });
});

describe('settings that were silently wrong', () => {
  it('are INVALID_OPTIONS naming the option, before anything is opened', async () => {
    const dir = tempDir();
    const file = join(dir.path, 'a-file');
    writeFileSync(file, 'not a dir');
    const holder = createServer();
    await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve));
    const busy = (holder.address() as AddressInfo).port;
    try {
      const cases: Array<[RuntimeOptions, string]> = [
        [{ dataDir: `${dir.path}/x\u0000y` }, 'options.dataDir must not contain a NUL byte'],
        [{ dataDir: file }, 'is not a directory'],
        [{ dataDir: join(dir.path, 'rt'), threads: 100_000 }, 'options.threads must be at most 256'],
        [{ dataDir: join(dir.path, 'rt'), slotsPerThread: 1_000_000 }, 'options.slotsPerThread must be at most 1000'],
        [{ dataDir: join(dir.path, 'rt'), logger: { level: 'nope' } }, 'options.logger'],
        [{ dataDir: join(dir.path, 'rt'), agents: [{ name: 'dir', module: pathToFileURL(dir.path) }] }, 'is not a file'],
        [{ dataDir: join(dir.path, 'rt'), agents: [{ name: 'far', module: 'file://otherhost/x.js' }] }, 'is not a local file URL or path'],
        [{ dataDir: join(dir.path, 'rt'), metricsPort: busy }, `options.metricsPort: cannot listen on 127.0.0.1:${busy}`],
      ];
      for (const [options, message] of cases) {
        const error = await rejection(createRuntime({ logger: false, threads: 1, ...options }));
        expect(error.code, message).toBe('INVALID_OPTIONS');
        expect(error.message).toContain(message);
      }
      // The busy port left nothing behind: the same dir opens.
      const rt = await createRuntime({ dataDir: join(dir.path, 'rt'), logger: false, threads: 1 });
      await rt.close();
    } finally {
      holder.close();
      dir.cleanup();
    }
  });

  it('schedules.update refuses fields it cannot change instead of ignoring them', async () => {
    const rt = await runtime({ agents: [builtinAgent('echo')] });
    await rt.schedules.create({ id: 'nightly', cron: '0 3 * * *', task: { agent: 'echo' } });
    for (const [patch, message] of [
      [{ id: 'other' }, 'schedule.id cannot be updated'],
      [{ nextRunAt: Date.now() + 60_000 }, 'schedule.nextRunAt cannot be updated'],
      [{ fired: 5 }, 'schedule.fired cannot be updated'],
      [null, 'a schedule update must be an object'],
    ] as const) {
      const error = await rejection(rt.schedules.update('nightly', patch as never));
      expect(error.code, message).toBe('INVALID_INPUT');
      expect(error.message).toContain(message);
    }
    expect((await rt.schedules.update('nightly', { cron: '0 4 * * *' })).cron).toBe('0 4 * * *');
  });
});
