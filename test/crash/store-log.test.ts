/**
 * kill -9 against the store's log: every commit whose promise resolved is there after a restart
 * (replayed from the log or already materialized), removals included, and the event log has no gap.
 */
import { spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { tempDir } from '../helpers.js';

const CHILD = new URL('../../dist/test/fixtures/crash/store-child.js', import.meta.url);
const STORE = new URL('../../dist/src/store/lmdb/store.js', import.meta.url);

interface OpenedStore {
  read: {
    control: { get(key: string): unknown };
    tasks: { get(key: string): { updatedAt: number; state: string } | undefined };
    active: { has(key: string): boolean; keys(): Iterable<string> };
    events: { range(): Iterable<{ value: { seq: number; data?: { value?: number } } }> };
  };
  close(clean: boolean): Promise<void>;
}

async function runUntil(dataDir: string, acks: number): Promise<number> {
  const child = spawn(process.execPath, [CHILD.pathname, dataDir], { stdio: ['ignore', 'pipe', 'inherit'] });
  let last = -1;
  let buffer = '';
  await new Promise<void>((resolve, reject) => {
    child.stdout.on('data', (chunk: Buffer) => {
      buffer += chunk.toString();
      const lines = buffer.split('\n');
      buffer = lines.pop()!;
      for (const line of lines) if (line.startsWith('acked ')) last = Math.max(last, Number(line.slice(6)));
      if (last >= acks && child.exitCode === null) {
        child.kill('SIGKILL');
        resolve();
      }
    });
    child.on('exit', (code, signal) => (signal === 'SIGKILL' ? resolve() : reject(new Error(`store child exited ${code}`))));
  });
  await new Promise((resolve) => child.once('close', resolve));
  return last;
}

describe('kill -9 while the store commits', () => {
  it('keeps every acknowledged commit, and the event log has no gap', async () => {
    const dir = tempDir('troupe-store-crash-');
    const { openStore } = (await import(STORE.href)) as { openStore: (o: { dataDir: string }) => Promise<OpenedStore> };
    try {
      let acked = -1;
      for (let round = 1; round <= 3; round++) acked = await runUntil(dir.path, acked + 400 * round);
      const store = await openStore({ dataDir: dir.path });
      const next = store.read.control.get('next') as number;
      expect(next).toBeGreaterThan(acked);
      for (let i = Math.max(0, next - 200); i < next; i++) {
        const value = store.read.control.get(`k${i}`);
        if (i < next - 5) expect(value, `k${i} was removed by batch ${i + 5}`).toBeNull();
        else expect(value, `k${i}`).toMatchObject({ i });
      }
      // Each task holds the version of its last acknowledged batch or a later one, never an older
      // one: a replay must not put back what a final write (not in the log) superseded.
      for (let k = 0; k < 20; k++) {
        let lastAcked = acked - (((acked % 20) - k + 20) % 20);
        if (lastAcked < 0) continue;
        const task = store.read.tasks.get(`t${k}`)!;
        expect(task.updatedAt, `task t${k}`).toBeGreaterThanOrEqual(lastAcked);
        expect(task.updatedAt % 20).toBe(k);
        lastAcked = task.updatedAt;
        // The active index follows the records, replayed or materialized: a task is in it while not settled.
        expect(store.read.active.has(`t${k}`), `active index of t${k} (${task.state})`).toBe(task.state !== 'done');
      }
      for (const id of store.read.active.keys()) expect(store.read.tasks.get(id)?.state, `active ${id}`).toBe('queued');
      const seqs: number[] = [];
      const progress: number[] = [];
      for (const { value } of store.read.events.range()) {
        seqs.push(value.seq);
        progress.push(value.data!.value!);
      }
      expect(seqs).toEqual(Array.from({ length: seqs.length }, (_, i) => i + 1));
      // Each batch that was acknowledged wrote its event; a batch lost in the kill never was acknowledged.
      expect(new Set(progress).size).toBe(progress.length);
      for (let i = 0; i <= acked; i++) expect(progress.includes(i), `event of batch ${i}`).toBe(true);
      await store.close(true);
    } finally {
      dir.cleanup();
    }
  }, 120_000);
});
