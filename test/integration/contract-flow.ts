/**
 * The contract of how work flows out (contract.ts's suite, run by contract-lmdb.test.ts and
 * contract-postgres.test.ts): the order tasks start in, and log streams followed while an agent
 * writes, with no gap and no duplicate. The tests of a block share one runtime (one store: see
 * `sharedRuntime`), each waiting for its own tasks by id.
 */
import { describe, expect, it } from 'vitest';
import { builtinAgent, type LogLine } from 'troupe';
import { fixtureAgent, started } from '../helpers.js';
import { nextEvent, readLines, sharedRuntime, type ContractBackend } from './contract.js';

/** Registers the flow contract's tests against `backend` under `name`. */
export function flowContract(name: string, backend: ContractBackend): void {
  describe(`dispatch order on ${name}`, () => {
    // One slot: the tasks behind the one running start one by one, in the order the runtime picks.
    const rt = sharedRuntime(backend, { threads: 1, slotsPerThread: 1, agents: [builtinAgent('sleep')] });

    it('starts higher priority first, and first submitted first within a priority', async () => {
      const order: unknown[] = [];
      const off = rt().on('task.started', (e) => order.push(e.taskId));
      const blocker = await rt().submit({ agent: 'sleep', input: { ms: 150 } });
      await started(rt(), blocker.id);
      // Submitted together while the only slot is taken, so they queue up behind it.
      const [low1, high, low2, urgent] = await rt().submitMany([
        { agent: 'sleep', input: { ms: 1 }, priority: 5 },
        { agent: 'sleep', input: { ms: 1 }, priority: 1 },
        { agent: 'sleep', input: { ms: 1 }, priority: 5 },
        { agent: 'sleep', input: { ms: 1 }, priority: -1 },
      ]);
      await Promise.all([blocker, low1, high, low2, urgent].map((t) => rt().wait(t!.id)));
      off();
      expect(order).toEqual([blocker.id, urgent!.id, high!.id, low1!.id, low2!.id]);
    });
  });

  describe(`log streams on ${name}`, () => {
    const rt = sharedRuntime(backend, { agents: [{ name: 'int', module: fixtureAgent('interactive') }, { name: 'chatty', module: fixtureAgent('chatty') }] });

    it('a follow replays the stored lines, then goes live until the task settles, with no gap and no duplicate', async () => {
      const task = await rt().submit({ agent: 'int', input: { mode: 'ask' } });
      const waiting = nextEvent(rt(), 'task.waiting', task.id);
      const following = readLines(rt(), task.id, { follow: true });
      await waiting;
      await rt().sendInput(task.id, { message: 'go' });
      const seen = await following;
      const stored = await readLines(rt(), task.id);
      expect(stored.map((l) => l.message)).toEqual(['asking']);
      expect(seen).toEqual(stored);
      expect(await rt().get(task.id)).toMatchObject({ state: 'done' });
    });

    it('a follow of a chatty task sees every line once, in order, and resumes after a cursor', async () => {
      const task = await rt().submit({ agent: 'chatty', input: { lines: 300 } });
      const seen = await readLines(rt(), task.id, { follow: true });
      expect(seen.map((l) => l.message)).toEqual(Array.from({ length: 300 }, (_, i) => `line ${i}`));
      const lines = await readLines(rt(), task.id);
      expect(lines).toEqual(seen);
      const tail = await readLines(rt(), task.id, { after: lines[289]!.cursor, follow: true });
      expect(tail.map((l) => l.message)).toEqual(Array.from({ length: 10 }, (_, i) => `line ${290 + i}`));
    });

    it('followers that start while lines are being stored miss none of them', async () => {
      // Twelve follows at once are no leak: Node warns of more than 10 listeners on one signal.
      const warnings: Error[] = [];
      const warned = (warning: Error) => warnings.push(warning);
      process.on('warning', warned);
      const task = await rt().submit({ agent: 'chatty', input: { lines: 1500 } });
      const followers: Array<Promise<number>> = [];
      for (let i = 0; i < 12; i++) {
        followers.push(
          (async () => {
            let n = 0;
            for await (const line of rt().logs(task.id, { follow: true })) if (line.message === `line ${n}`) n++;
            return n;
          })(),
        );
        await new Promise((resolve) => setTimeout(resolve, 2));
      }
      expect(await Promise.all(followers)).toEqual(Array.from({ length: 12 }, () => 1500));
      // A warning is emitted on a later tick.
      await new Promise((resolve) => setImmediate(resolve));
      process.off('warning', warned);
      expect(warnings.map((w) => w.message)).toEqual([]);
    });

    it('a follow ends when its signal aborts, though its task goes on', async () => {
      const task = await rt().submit({ agent: 'int', input: { mode: 'ask' } });
      const controller = new AbortController();
      const seen: LogLine[] = [];
      for await (const line of rt().logs(task.id, { follow: true, signal: controller.signal })) {
        seen.push(line);
        controller.abort();
      }
      expect(seen.map((l) => l.message)).toEqual(['asking']);
      expect(await rt().cancel(task.id)).toMatchObject({ state: 'cancelled' });
    });
  });
}
