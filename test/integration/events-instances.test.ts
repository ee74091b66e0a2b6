import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { builtinAgent, createRuntime, type RuntimeEvent } from 'troupe';
import { fixtureAgent, maxOverlap, scratchDirs, started } from '../helpers.js';

const dataDir = scratchDirs();

const base = { logger: false as const, threads: 2, slotsPerThread: 2 };

describe('event stream', () => {
  it('replays from a cursor, then goes live, with no gap and no duplicate across the switch and a restart', async () => {
    const path = dataDir();
    const rt = await createRuntime({ ...base, dataDir: path, agents: [builtinAgent('echo')] });
    const first = await rt.submitMany(Array.from({ length: 10 }, (_, i) => ({ agent: 'echo', input: i })));
    await Promise.all(first.map((t) => rt.wait(t.id)));
    const seen: RuntimeEvent[] = [];
    let submitting: Promise<unknown> | undefined;
    let done = 0;
    for await (const e of rt.events()) {
      seen.push(e);
      if (e.type === 'task.done') done++;
      // Submit more while the replay is still running, so the live tail overlaps the replay.
      if (seen.length === 5) submitting = rt.submitMany(Array.from({ length: 10 }, (_, i) => ({ agent: 'echo', input: 100 + i })));
      if (done === 20) break;
    }
    await submitting;
    const seqs = seen.map((e) => e.seq);
    expect(seqs).toEqual(Array.from({ length: seqs.length }, (_, i) => i + 1));
    expect(seen.filter((e) => e.type === 'task.done')).toHaveLength(20);
    const cursor = seen[14]!.cursor;
    await rt.close();

    const reopened = await createRuntime({ ...base, dataDir: path });
    const resumed: number[] = [];
    for await (const e of reopened.events({ after: cursor })) {
      resumed.push(e.seq);
      if (e.seq === seqs.at(-1)) break;
    }
    expect(resumed).toEqual(seqs.slice(15));
    // An event's numeric seq works as `after` too, the way users try first.
    const bySeq: number[] = [];
    for await (const e of reopened.events({ after: seen[14]!.seq })) {
      bySeq.push(e.seq);
      if (e.seq === seqs.at(-1)) break;
    }
    expect(bySeq).toEqual(seqs.slice(15));
    const bad = reopened.events({ after: -1 });
    await expect(bad.next()).rejects.toMatchObject({ code: 'INVALID_INPUT', message: expect.stringContaining("pass an event's cursor or its seq") });
    await reopened.close();
  });

  it('filters by task and type, and ends live iteration on close', async () => {
    const path = dataDir();
    const rt = await createRuntime({ ...base, dataDir: path, agents: [builtinAgent('echo')] });
    const [a, b] = await rt.submitMany([{ agent: 'echo', input: 'a' }, { agent: 'echo', input: 'b' }]);
    const onlyB: string[] = [];
    const collecting = (async () => {
      for await (const e of rt.events({ taskId: b!.id, types: ['task.started', 'task.done'] })) onlyB.push(`${e.type}:${e.taskId === b!.id}`);
    })();
    await Promise.all([rt.wait(a!.id), rt.wait(b!.id)]);
    await rt.close();
    await collecting;
    expect(onlyB).toEqual(['task.started:true', 'task.done:true']);
  });

  it('yields at close the committed events it had buffered, then ends; read after close, an iteration ends and logs() rejects CLOSED', async () => {
    const rt = await createRuntime({ ...base, dataDir: dataDir(), agents: [builtinAgent('echo')] });
    const published: number[] = [];
    rt.on('*', (e) => published.push(e.seq));
    const live = rt.events();
    await rt.wait((await rt.submit({ agent: 'echo', input: 0 })).id);
    // A consumer that takes one event, then is busy while more commit.
    const got = [(await live.next()).value!.seq];
    const tasks = await rt.submitMany([1, 2, 3].map((input) => ({ agent: 'echo', input })));
    await Promise.all(tasks.map((t) => rt.wait(t.id)));
    const unread = rt.events();
    const lines = rt.logs(tasks[0]!.id);
    await rt.close();
    for await (const e of live) got.push(e.seq);
    expect(published.length).toBeGreaterThan(8);
    expect(got).toEqual(published);
    expect(await unread.next()).toEqual({ done: true, value: undefined });
    await expect(lines.next()).rejects.toMatchObject({ code: 'CLOSED' });
  });
});

describe('execution instances', () => {
  it('shows an instance stored while it ran as idle after a restart, not active with nothing running', async () => {
    const path = dataDir();
    let rt = await createRuntime({ ...base, dataDir: path, agents: [builtinAgent('sleep')] });
    const [a, b] = await rt.submitMany([0, 1].map(() => ({ agent: 'sleep', input: { ms: 200, steps: 1 } })));
    await Promise.all([started(rt, a!.id), started(rt, b!.id)]);
    // Stored now, while both of its attempts run.
    await rt.setDispatchTarget(a!.instanceKey, 5);
    await Promise.all([rt.wait(a!.id), rt.wait(b!.id)]);
    await rt.close();
    rt = await createRuntime({ ...base, dataDir: path, agents: [builtinAgent('sleep')] });
    expect(rt.instances()).toEqual([expect.objectContaining({ key: a!.instanceKey, status: 'idle', running: 0, live: false, target: 5 })]);
    await rt.close();
  });

  it('passivates idle actors beyond maxLiveInstances and rehydrates them with their target', async () => {
    const path = dataDir();
    const rt = await createRuntime({ ...base, dataDir: path, maxLiveInstances: 5, agents: [builtinAgent('echo')] });
    const tasks = await rt.submitMany(Array.from({ length: 40 }, (_, i) => ({ agent: 'echo', lane: `tenant-${i}`, input: i })));
    await Promise.all(tasks.map((t) => rt.wait(t.id)));
    const instances = rt.instances();
    expect(instances).toHaveLength(40);
    expect(instances.filter((i) => i.live).length).toBeLessThanOrEqual(5);
    const parked = tasks[0]!.instanceKey;
    expect(instances.find((i) => i.key === parked)!.live).toBe(false);
    await rt.setDispatchTarget(parked, 0);
    // Evict it again by touching many other instances, then check the target held.
    const more = await rt.submitMany(Array.from({ length: 20 }, (_, i) => ({ agent: 'echo', lane: `tenant-${i + 1}`, input: i })));
    await Promise.all(more.map((t) => rt.wait(t.id)));
    const held = await rt.submit({ agent: 'echo', lane: 'tenant-0', input: 'held' });
    await expect(rt.wait(held.id, { timeoutMs: 200 })).rejects.toMatchObject({ code: 'WAIT_TIMEOUT' });
    expect(rt.instances().find((i) => i.key === parked)).toMatchObject({ target: 0 });
    await rt.close();

    // The target survives a restart too; lifting it lets the held task run.
    const reopened = await createRuntime({ ...base, dataDir: path, agents: [builtinAgent('echo')] });
    expect(reopened.instances().find((i) => i.key === parked)).toMatchObject({ target: 0, live: false });
    expect((await reopened.get(held.id)).state).toBe('queued');
    const targetEvent = new Promise<RuntimeEvent>((resolve) => reopened.on('instance.target', resolve));
    await reopened.setDispatchTarget(parked, null);
    expect((await targetEvent).data).toEqual({ instanceKey: parked, target: null });
    expect(await reopened.wait(held.id)).toMatchObject({ state: 'done', output: 'held' });
    await reopened.close();
  });

  it('never runs more attempts at once than the dispatch target or the agent concurrency allow', async () => {
    const path = dataDir();
    const scratch = dataDir();
    const rt = await createRuntime({ ...base, threads: 2, slotsPerThread: 4, dataDir: path, agents: [{ name: 'overlap', module: fixtureAgent('overlap'), concurrency: 3 }] });
    const agentFile = join(scratch, 'agent.log');
    const byAgent = await rt.submitMany(Array.from({ length: 12 }, (_, i) => ({ agent: 'overlap', input: { file: agentFile, ms: 30 }, lane: `l${i % 4}` })));
    await Promise.all(byAgent.map((t) => rt.wait(t.id)));
    expect(maxOverlap(agentFile)).toBe(3);

    const targetFile = join(scratch, 'target.log');
    const probe = await rt.wait((await rt.submit({ agent: 'overlap', lane: 'one', input: { file: join(scratch, 'probe.log'), ms: 1 } })).id);
    await rt.setDispatchTarget(probe.instanceKey, 2);
    const byTarget = await rt.submitMany(Array.from({ length: 8 }, () => ({ agent: 'overlap', lane: 'one', input: { file: targetFile, ms: 30 } })));
    await Promise.all(byTarget.map((t) => rt.wait(t.id)));
    expect(maxOverlap(targetFile)).toBe(2);
    await rt.close();
  });

  it('sets the dispatch target, or resets, an instance whose tasks are queued but have not dispatched yet', async () => {
    const scratch = dataDir();
    const rt = await createRuntime({ ...base, threads: 2, slotsPerThread: 4, dataDir: dataDir(), agents: [{ name: 'overlap', module: fixtureAgent('overlap') }] });
    await rt.freeze('setting up');
    const file = join(scratch, 'target.log');
    const tasks = await rt.submitMany(Array.from({ length: 6 }, () => ({ agent: 'overlap', lane: 'capped', input: { file, ms: 30 } })));
    const key = tasks[0]!.instanceKey;
    expect(rt.instances()).toEqual([]);
    await rt.setDispatchTarget(key, 1);
    await rt.resetInstance(key);
    expect(rt.instances()).toEqual([expect.objectContaining({ key, agent: 'overlap', lane: 'capped', target: 1, status: 'idle' })]);
    await expect(rt.setDispatchTarget('no-such-instance', 1)).rejects.toMatchObject({ code: 'NOT_FOUND' });
    await rt.unfreeze();
    await Promise.all(tasks.map((t) => rt.wait(t.id)));
    expect(maxOverlap(file)).toBe(1);
    await rt.close();
  });
});
