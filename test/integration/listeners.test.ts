/**
 * A listener that throws is isolated: it is logged, never thrown into the pipeline (the submit
 * still resolves, the task still runs) or into other listeners.
 */
import { Writable } from 'node:stream';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { builtinAgent, type RuntimeEvent } from 'troupe';
import { runtimes } from '../helpers.js';

const runtime = runtimes();

describe('event listeners that throw', () => {
  it('neither fail the submit nor keep the task from running, nor starve the other listeners', async () => {
    const lines: Array<Record<string, unknown>> = [];
    const stream = new Writable({
      write(chunk: Buffer, _e, done) {
        lines.push(JSON.parse(chunk.toString()) as Record<string, unknown>);
        done();
      },
    });
    const rt = await runtime({ logger: pino({ level: 'error' }, stream), agents: [builtinAgent('echo')] });
    for (const type of ['task.queued', 'task.started', 'task.done'] as const) {
      rt.on(type, () => {
        throw new Error(`listener of ${type} broke`);
      });
    }
    const seen: string[] = [];
    rt.on('*', (e: RuntimeEvent) => seen.push(e.type));
    const tasks = await rt.submitMany([{ agent: 'echo', input: 1 }, { agent: 'echo', input: 2 }, { agent: 'echo', input: 3 }]);
    for (const task of tasks) expect(await rt.wait(task.id)).toMatchObject({ state: 'done' });
    expect(seen.filter((t) => t === 'task.done')).toHaveLength(3);
    expect(seen.filter((t) => t === 'task.queued')).toHaveLength(3);
    expect(lines.filter((l) => l.msg === 'an event listener threw').length).toBeGreaterThanOrEqual(9);
  });
});
