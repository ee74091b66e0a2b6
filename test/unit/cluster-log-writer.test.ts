/**
 * How a cluster node writes its agents' log lines and progress (src/cluster/log-writer.ts), against fake
 * write verbs that answer when told, on a clock the test moves: a turn's lines of every attempt in
 * one write, numbered per attempt; one write in flight, the lines that come meanwhile in the next
 * one; an attempt's waiters hear once its lines are written; a failed write is tried again before
 * later lines; what jsonb cannot hold is made storable.
 */
import { describe, expect, it } from 'vitest';
import { LogWriter } from '../../src/cluster/log-writer.js';
import { ManualClock } from '../../src/clock.js';
import { TroupeError } from '../../src/errors.js';
import type { LogWrite, LogWriteResult } from '../../src/store/postgres/logs.js';
import type { ProgressWrite } from '../../src/store/postgres/progress.js';
import { capturedLog } from '../log-capture.js';

/** A write verb whose calls wait until the test answers them. */
function fakeVerb<T>() {
  const calls: Array<{ lines: readonly T[]; answer(result?: LogWriteResult): void; fail(error: Error): void }> = [];
  const verb = (_pool: unknown, lines: readonly T[]) =>
    new Promise<LogWriteResult>((resolve, reject) => calls.push({ lines, answer: (result = { stored: lines.length, stale: [] }) => resolve(result), fail: reject }));
  return { calls, verb: verb as never };
}

/** The log and progress verbs, faked. */
function fakeWrites() {
  const log = fakeVerb<LogWrite>();
  const progress = fakeVerb<ProgressWrite>();
  return { calls: log.calls, reports: progress.calls, queue: { log: log.verb, progress: progress.verb } };
}

/** Lets a turn pass: scheduled writes start, answered ones finish. */
const turn = () => new Promise((resolve) => setImmediate(resolve));

const attempt = (id: string, token = 1) => ({ id, token, run: 1, attempt: 1, attemptId: `${id}:1:1` });
const summary = (lines: readonly LogWrite[]) => lines.map((l) => `${l.taskId}/${l.seq}/${l.message}`);

function writer(clock = new ManualClock()) {
  const { calls, reports, queue } = fakeWrites();
  const { log, lines } = capturedLog('warn');
  return { calls, reports, clock, logged: lines, logs: new LogWriter({ pool: {} as never, queue, log, clock, retryMs: 100 }) };
}

describe('a node writing log lines', () => {
  it("writes a turn's lines of every attempt in one write, numbered per attempt, and one write at a time", async () => {
    const { calls, logs } = writer();
    expect(logs.add(attempt('a'), 0, [['info', 'a0', 1], ['warn', 'a1', 2, { k: 1 }]])).toBe(2);
    expect(logs.add(attempt('b'), 0, [['info', 'b0', 3]])).toBe(1);
    await turn();
    expect(calls).toHaveLength(1);
    expect(summary(calls[0]!.lines)).toEqual(['a/0/a0', 'a/1/a1', 'b/0/b0']);
    expect(calls[0]!.lines[1]).toEqual({ taskId: 'a', token: 1, run: 1, attempt: 1, attemptId: 'a:1:1', seq: 1, level: 'warn', message: 'a1', at: 2, fields: { k: 1 } });
    // While it is in flight, later lines wait, over several turns, and then go together.
    logs.add(attempt('a'), 2, [['info', 'a2', 4]]);
    await turn();
    logs.add(attempt('b'), 1, [['info', 'b1', 5]]);
    await turn();
    expect(calls).toHaveLength(1);
    calls[0]!.answer();
    await turn();
    await turn();
    expect(calls).toHaveLength(2);
    expect(summary(calls[1]!.lines)).toEqual(['a/2/a2', 'b/1/b1']);
  });

  it("has an attempt's waiters hear once every line of it queued so far is written", async () => {
    const { calls, logs } = writer();
    expect(logs.written('a:1:1')).toBeUndefined();
    logs.add(attempt('a'), 0, [['info', 'a0', 1]]);
    await turn();
    logs.add(attempt('a'), 1, [['info', 'a1', 2]]);
    let heard = false;
    void logs.written('a:1:1')!.then(() => (heard = true));
    calls[0]!.answer();
    await turn();
    expect(heard).toBe(false);
    await turn();
    calls[1]!.answer();
    await turn();
    expect(heard).toBe(true);
    expect(logs.written('a:1:1')).toBeUndefined();
    await logs.idle();
  });

  it('tries a failed write again before later lines; drops a refused one and stale lines, saying so', async () => {
    const { calls, clock, logged, logs } = writer();
    logs.add(attempt('a'), 0, [['info', 'a0', 1]]);
    await turn();
    logs.add(attempt('a'), 1, [['info', 'a1', 2]]);
    calls[0]!.fail(new TroupeError('STORE_FAILED', 'the server went away'));
    await turn();
    expect(calls).toHaveLength(1);
    clock.advance(100);
    await turn();
    expect(summary(calls[1]!.lines)).toEqual(['a/0/a0', 'a/1/a1']);
    calls[1]!.answer({ stored: 0, stale: [{ taskId: 'a', token: 1 }] });
    await turn();
    logs.add(attempt('b'), 0, [['info', 'b0', 3]]);
    await turn();
    calls[2]!.fail(new TroupeError('INVALID_INPUT', 'malformed'));
    await logs.idle();
    expect(calls).toHaveLength(3);
    expect(logged.map((l) => l.msg)).toEqual(['storing log lines failed; trying again', 'stale log lines dropped: the attempt is no longer current', 'the store refused a batch of log lines; they are dropped']);
  });

  it("writes a turn's progress reports of every attempt in one write of their own, in order, and an attempt's waiters hear once its lines and reports are written", async () => {
    const { calls, reports, logs } = writer();
    logs.progress(attempt('a'), 0.1, 'a\u0000', 1);
    logs.add(attempt('a'), 0, [['info', 'a0', 2]]);
    logs.progress(attempt('b'), 0.2, undefined, 3);
    logs.progress(attempt('a'), 0.3, undefined, 4);
    let heard = false;
    void logs.written('a:1:1')!.then(() => (heard = true));
    await turn();
    expect(calls).toHaveLength(1);
    expect(reports).toHaveLength(1);
    expect(reports[0]!.lines).toEqual([
      { taskId: 'a', token: 1, attemptId: 'a:1:1', value: 0.1, message: 'a\uFFFD', at: 1 },
      { taskId: 'b', token: 1, attemptId: 'b:1:1', value: 0.2, at: 3 },
      { taskId: 'a', token: 1, attemptId: 'a:1:1', value: 0.3, at: 4 },
    ]);
    // One write in flight: a report meanwhile waits for the next.
    logs.progress(attempt('b'), 0.4, undefined, 5);
    await turn();
    expect(reports).toHaveLength(1);
    calls[0]!.answer();
    await turn();
    expect(heard).toBe(false);
    reports[0]!.answer();
    await turn();
    expect(heard).toBe(true);
    await turn();
    expect(reports).toHaveLength(2);
    expect(reports[1]!.lines.map((r) => r.value)).toEqual([0.4]);
    reports[1]!.answer();
    await logs.idle();
  });

  it('stores what jsonb cannot hold as JSON would write it, and a NUL as U+FFFD', async () => {
    const { calls, logs } = writer();
    logs.add(attempt('a'), 0, [['info', 'a\u0000b', 1, { at: new Date(0), n: 10n, s: 'x\u0000' }]]);
    await turn();
    expect(calls[0]!.lines[0]).toMatchObject({ message: 'a\uFFFDb', fields: { at: '1970-01-01T00:00:00.000Z', n: '10', s: 'x\uFFFD' } });
  });
});
