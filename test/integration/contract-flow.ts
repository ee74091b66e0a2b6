/**
 * The contract of how work flows (contract.ts's suite, run by contract-lmdb.test.ts and
 * contract-postgres.test.ts): the order tasks start in, a waiting or parked task's slot given back,
 * a sleep and its wake, and log streams followed while an agent writes, with no gap and no
 * duplicate. The tests of a block share one runtime (one store: see
 * `sharedRuntime`), each waiting for its own tasks by id.
 */
import { describe, expect, it } from 'vitest';
import { builtinAgent, type LogLine } from 'troupe';
import { fixtureAgent, started } from '../helpers.js';
import { history, nextEvent, readLines, sharedRuntime, type ContractBackend } from './contract.js';

const interactive = { name: 'int', module: fixtureAgent('interactive') };

/** Registers the flow contract's tests against `backend` under `name`. */
export function flowContract(name: string, backend: ContractBackend): void {
  describe(`one slot on ${name}`, () => {
    // The tasks behind the one running start one by one, in the order the runtime picks; none is
    // started ahead onto the busy thread.
    const rt = sharedRuntime(backend, { threads: 1, slotsPerThread: 1, prefetch: 0, agents: [builtinAgent('sleep'), builtinAgent('echo'), interactive] });

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

    it('a task waiting for input, or parked in a join, gives its slot back: the others run meanwhile', async () => {
      const asking = await rt().submit({ agent: 'int', input: { mode: 'ask' } });
      await nextEvent(rt(), 'task.waiting', asking.id);
      expect(await rt().wait((await rt().submit({ agent: 'echo', input: 'meanwhile' })).id)).toMatchObject({ state: 'done', output: 'meanwhile' });
      // Each parent spawns a child and joins it: the child needs the slot its parent holds until it parks.
      const parents = await rt().submitMany([{ agent: 'int', input: { mode: 'spawnThenJoin' } }, { agent: 'int', input: { mode: 'spawnThenJoin' } }]);
      for (const p of parents) expect(await rt().wait(p.id)).toMatchObject({ state: 'done', output: { joined: [{ state: 'done', output: 'c' }] } });
      await rt().sendInput(asking.id, { message: 'now' });
      expect(await rt().wait(asking.id)).toMatchObject({ state: 'done', output: { answer: 'now' } });
    });

    it('a sleep result parks the task until its wake, which starts a new run that sees the followUp, with the same events on both stores', async () => {
      const task = await rt().submit({ agent: 'int', input: { mode: 'sleeper' } });
      const done = await rt().wait(task.id);
      expect(done).toMatchObject({ state: 'done', runs: 2, attempts: 1, output: { wokeWith: { step: 2 }, run: `${task.id}:2` } });
      const events = await history(rt(), task.id);
      expect(events.map((e) => [e.type, (e.data as { run?: number }).run])).toEqual([
        ['task.queued', 1],
        ['task.started', 1],
        ['task.sleeping', 1],
        ['task.queued', 2],
        ['task.started', 2],
        ['task.done', 2],
      ]);
      const sleeping = events[2]!;
      expect(sleeping.data).toMatchObject({ attempt: 1, exit: 'success', wakeAt: expect.any(Number) });
      expect((sleeping.data as { wakeAt: number }).wakeAt).toBeGreaterThanOrEqual(done.createdAt + 20);
      expect(events[3]!.data).toEqual({ run: 2, reason: 'wake' });
    });
  });

  describe(`log streams on ${name}`, () => {
    const rt = sharedRuntime(backend, { agents: [interactive, { name: 'chatty', module: fixtureAgent('chatty') }] });

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
