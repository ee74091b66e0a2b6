import { Writable } from 'node:stream';
import { open } from 'lmdb';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { builtinAgent, createRuntime, type RuntimeEvent } from 'troupe';
import { scratchDirs } from '../helpers.js';

const dataDir = scratchDirs();

/** Overwrites records with bytes that are not msgpack (0xc1 is never used by the format). */
async function corrupt(path: string, db: string, keys: unknown[]): Promise<void> {
  const env = open({ path, noSubdir: false });
  const raw = env.openDB({ name: db, encoding: 'binary' });
  for (const key of keys) await raw.put(key as string, Buffer.from([0xc1, 0xc1, 0xc1]));
  await env.close();
}

describe('bad data', () => {
  it('quarantines records that fail to decode and keeps serving the rest', async () => {
    const dir = { path: dataDir() };
    const base = { dataDir: dir.path, threads: 1, agents: [builtinAgent('echo')] };
    const first = await createRuntime({ ...base, logger: false });
    const done = await first.wait((await first.submit({ agent: 'echo', input: 'fine' })).id);
    const broken = await first.wait((await first.submit({ agent: 'echo', input: 'doomed' })).id);
    const probe = await first.wait((await first.submit({ agent: 'echo', lane: 'parked' })).id);
    await first.setDispatchTarget(probe.instanceKey, 0);
    const queuedBroken = await first.submit({ agent: 'echo', lane: 'parked', input: 'queued and doomed' });
    const queuedFine = await first.submit({ agent: 'echo', lane: 'parked', input: 'queued and fine' });
    await first.close();
    await corrupt(dir.path, 'tasks', [broken.id, queuedBroken.id]);

    const lines: Array<Record<string, unknown>> = [];
    const stream = new Writable({ write: (chunk, _enc, next) => (lines.push(JSON.parse(String(chunk))), next()) });
    const rt = await createRuntime({ ...base, logger: pino({ level: 'warn' }, stream) });
    // The rebuild met the queued broken task first: it is quarantined, the fine one is queued.
    expect((await rt.get(queuedFine.id)).state).toBe('queued');
    expect(await rt.get(done.id)).toMatchObject({ state: 'done', output: 'fine' });
    await expect(rt.get(broken.id)).rejects.toMatchObject({ code: 'NOT_FOUND' });
    await expect(rt.get(queuedBroken.id)).rejects.toMatchObject({ code: 'NOT_FOUND' });
    const listed = await rt.list();
    expect(listed.tasks.map((t) => t.id)).toEqual([done.id, probe.id, queuedFine.id]);

    const quarantined: Array<RuntimeEvent<'store.quarantined'>> = [];
    for await (const e of rt.events({ types: ['store.quarantined'] })) {
      quarantined.push(e);
      if (quarantined.length === 2) break;
    }
    expect(quarantined.map((e) => e.data.key).sort()).toEqual([broken.id, queuedBroken.id].sort());
    expect(quarantined[0]!.data).toMatchObject({ db: 'tasks', problem: expect.stringContaining('does not decode') });
    expect(lines.filter((l) => l.msg === 'quarantined a record that could not be read').map((l) => l.key)).toEqual(expect.arrayContaining([broken.id, queuedBroken.id]));

    // Work goes on: the parked lane runs once it is unparked.
    await rt.setDispatchTarget(probe.instanceKey, null);
    expect(await rt.wait(queuedFine.id)).toMatchObject({ state: 'done', output: 'queued and fine' });
    await rt.close();

    // The bad bytes were moved aside, not lost.
    const env = open({ path: dir.path, noSubdir: false });
    const kept = [...env.openDB({ name: 'quarantine', sharedStructuresKey: Symbol.for('troupe.structures') }).getRange()].map(({ value }) => value as { db: string; key: string; bytes: Uint8Array });
    expect(kept.map((q) => q.key).sort()).toEqual([broken.id, queuedBroken.id].sort());
    expect([...kept[0]!.bytes]).toEqual([0xc1, 0xc1, 0xc1]);
    await env.close();
  });

  it('quarantines a corrupt instance snapshot and starts that instance afresh', async () => {
    const dir = { path: dataDir() };
    const base = { dataDir: dir.path, logger: false as const, threads: 1, agents: [builtinAgent('echo')] };
    const first = await createRuntime(base);
    const task = await first.wait((await first.submit({ agent: 'echo' })).id);
    await first.setDispatchTarget(task.instanceKey, 3);
    await first.close();
    await corrupt(dir.path, 'instances', [task.instanceKey]);
    const rt = await createRuntime(base);
    expect(await rt.wait((await rt.submit({ agent: 'echo', input: 2 })).id)).toMatchObject({ state: 'done', output: 2 });
    expect(rt.instances().find((i) => i.key === task.instanceKey)).toMatchObject({ target: null });
    await rt.close();
  });
});
