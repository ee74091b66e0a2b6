import { describe, expect, it } from 'vitest';
import { Packr } from 'msgpackr';
import { MsgpackWriter, recordWriter } from '../../src/store/lmdb/msgpack.js';
import { attemptCodec, taskCodec } from '../../src/store/lmdb/codec.js';
import { createTaskRecord } from '../../src/store/records.js';

const packr = new Packr({ useRecords: false, copyBuffers: true, mapsAsObjects: true });
const writer = new MsgpackWriter();
const write = (value: unknown) => writer.encode(value, (w, v) => w.value(v));

/** A deterministic pseudo-random source, so a failure repeats. */
function random(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

const STRINGS = ['', 'a', 'task-01JE8Z3K4M5N6P7Q8R9S0T1V2W', 'x'.repeat(31), 'y'.repeat(32), 'z'.repeat(255), 'w'.repeat(256), 'é', 'naïve café', '日本語のテキスト', '😀 emoji 🚀', 'é'.repeat(40), 'long '.repeat(20_000)];
const NUMBERS = [0, 1, 127, 128, 255, 256, 65_535, 65_536, 2 ** 32 - 1, 2 ** 32, -1, -32, -33, -128, -129, -32_768, -32_769, -(2 ** 31), -(2 ** 31) - 1, 0.5, -1.25, 1e300, Number.MAX_SAFE_INTEGER, -Number.MAX_SAFE_INTEGER, Date.now(), NaN, Infinity, -Infinity];

function value(next: () => number, depth: number): unknown {
  const pick = Math.floor(next() * (depth > 3 ? 7 : 10));
  switch (pick) {
    case 0:
      return STRINGS[Math.floor(next() * STRINGS.length)];
    case 1:
      return NUMBERS[Math.floor(next() * NUMBERS.length)];
    case 2:
      return next() < 0.5;
    case 3:
      return null;
    case 4:
      return undefined;
    case 5:
      return new Date(Math.floor(next() * 2e12));
    case 6:
      return new Uint8Array(Array.from({ length: Math.floor(next() * 40) }, () => Math.floor(next() * 256)));
    case 7:
      return Array.from({ length: Math.floor(next() * 20) }, () => value(next, depth + 1));
    default: {
      const object: Record<string, unknown> = {};
      const size = Math.floor(next() * (next() < 0.1 ? 40 : 8));
      for (let i = 0; i < size; i++) object[`${STRINGS[i % 8]}${i}`] = value(next, depth + 1);
      return object;
    }
  }
}

describe('MsgpackWriter', () => {
  it('writes what msgpackr reads back as msgpackr would have written it', () => {
    const next = random(42);
    for (let i = 0; i < 3_000; i++) {
      const v = value(next, 0);
      expect(packr.unpack(write(v))).toEqual(packr.unpack(packr.pack(v)));
    }
  });

  it('keeps every value it handed out intact while it writes many more (a chunk is never reused)', () => {
    const values = Array.from({ length: 5_000 }, (_, i) => ({ i, text: `value ${i} `.repeat(i % 50) }));
    const written = values.map(write);
    written.forEach((bytes, i) => expect(packr.unpack(bytes)).toEqual(values[i]));
  });

  it('writes a frozen object of primitives once and copies its bytes after, but a frozen object holding objects every time', () => {
    const policy = Object.freeze({ maxAttempts: 3, backoff: 'fixed', delayMs: 5 });
    const holder = Object.freeze({ nested: { n: 1 } });
    for (let i = 0; i < 3; i++) expect(packr.unpack(write({ i, policy }))).toEqual({ i, policy: { maxAttempts: 3, backoff: 'fixed', delayMs: 5 } });
    expect(packr.unpack(write(holder))).toEqual({ nested: { n: 1 } });
    holder.nested.n = 2;
    expect(packr.unpack(write(holder))).toEqual({ nested: { n: 2 } });
  });

  it('writes an object of more than 65,535 keys with a 32-bit map header', () => {
    const big: Record<string, number> = {};
    for (let i = 0; i < 70_000; i++) big[`k${i}`] = i;
    expect(packr.unpack(write({ before: 'x'.repeat(300), big }))).toEqual({ before: 'x'.repeat(300), big });
  });

  it('writes integers in the smallest msgpack form and other numbers as float64, as msgpackr does', () => {
    for (const n of NUMBERS) expect(Buffer.from(write(n))).toEqual(Buffer.from(packr.pack(n)));
    expect(Object.is(packr.unpack(write(-0)), 0)).toBe(true);
  });
});

describe('recordWriter', () => {
  it('writes a record as its codec values, field by field', () => {
    const task = createTaskRecord({ id: 'T1', agent: 'echo', state: 'done', input: { prompt: 'héllo', n: [1, 2.5] }, priority: -3, lane: 'default', instanceKey: 'echo/default/abc', labels: { model: 'm' }, timeoutMs: 0, retry: { maxAttempts: 3, backoff: 'fixed', delayMs: 5, maxDelayMs: 9, jitter: 0.2 }, runReason: 'submit', createdAt: Date.now() });
    task.output = { startedAt: 1.5 };
    task.error = { code: 'X', message: 'm', retryable: false, fault: 'agent' };
    expect(packr.unpack(writer.encode(task, taskCodec.write))).toEqual(taskCodec.toValues(task));
    expect(taskCodec.fromValues(packr.unpack(writer.encode(task, taskCodec.write)))).toEqual(task);
    const attempt = { taskId: 'T1', run: 1, attempt: 2, attemptId: 'T1:1:2', token: 77, owner: 'o', startedAt: 5, leaseExpiresAt: 6, endedAt: undefined, exit: undefined, error: undefined };
    expect(packr.unpack(writer.encode(attempt, attemptCodec.write))).toEqual(attemptCodec.toValues(attempt));
  });

  it('reads a version 1 task record (written before the final attempt, the retention and the trace context were appended) with those fields absent', () => {
    const task = createTaskRecord({ id: 'T1', agent: 'echo', state: 'done', input: 1, priority: 0, lane: 'default', instanceKey: 'k', labels: {}, timeoutMs: 0, retry: { maxAttempts: 3, backoff: 'fixed', delayMs: 5, maxDelayMs: 9, jitter: 0.2 }, runReason: 'submit', createdAt: 7 });
    task.attemptStartedAt = 3;
    task.attemptLeaseUntil = 4;
    task.attemptExit = 'success';
    task.retention = { done: 60_000 };
    task.firstSeq = 42;
    task.trace = { traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' };
    const values = taskCodec.toValues(task);
    expect(values[0]).toBe(4);
    // Version 1 had every field but the six appended since (version 2: the final attempt's three; 3: the retention and the first seq; 4: the trace context).
    const v1 = [1, ...values.slice(1, -6)];
    const read = taskCodec.fromValues(v1);
    expect(read).toEqual({ ...task, attemptStartedAt: undefined, attemptLeaseUntil: undefined, attemptExit: undefined, retention: undefined, firstSeq: undefined, trace: undefined });
    expect(Object.keys(read)).toEqual(Object.keys(task));
    expect(taskCodec.fromValues([2, ...values.slice(1, -3)])).toEqual({ ...task, retention: undefined, firstSeq: undefined, trace: undefined });
    // A record as the previous build's writer wrote it (version 3: every field but the trace context) reads with it absent.
    const v3Writer = recordWriter<typeof task>(3, Object.keys(task).filter((field) => field !== 'trace') as Array<keyof typeof task & string>);
    const v3 = packr.unpack(writer.encode(task, v3Writer));
    expect(v3).toEqual([3, ...values.slice(1, -1)]);
    expect(taskCodec.fromValues(v3)).toEqual({ ...task, trace: undefined });
    expect(taskCodec.fromValues(packr.unpack(writer.encode(task, taskCodec.write)))).toEqual(task);
    expect(() => taskCodec.fromValues([5, ...values.slice(1)])).toThrow(/not a version 1-4 record/);
    expect(() => taskCodec.fromValues([4, ...values.slice(1), 'extra'])).toThrow(/not a version 1-4 record/);
  });

  it('refuses a field that is not a plain name', () => {
    expect(() => recordWriter<Record<string, unknown>>(1, ['ok', 'not ok'])).toThrow(/not a field name/);
  });
});
