import { describe, expect, it } from 'vitest';
import { Notifier } from '../../src/pipeline/notifier.js';

describe('the internal notifier', () => {
  it('tells every settled listener, in the order they subscribed', () => {
    const heard: string[] = [];
    const notifier = new Notifier();
    notifier.onSettled((id) => heard.push(`a:${id}`));
    notifier.onSettled((id) => heard.push(`b:${id}`));
    notifier.settled('t1');
    expect(heard).toEqual(['a:t1', 'b:t1']);
  });

  it('tells attempt-ended listeners the task and the attempt, apart from settled ones', () => {
    const ended: Array<[string, string]> = [];
    const settled: string[] = [];
    const notifier = new Notifier();
    notifier.onAttemptEnded((taskId, attemptId) => ended.push([taskId, attemptId]));
    notifier.onSettled((id) => settled.push(id));
    notifier.attemptEnded('t1', 't1:1:1');
    expect(ended).toEqual([['t1', 't1:1:1']]);
    expect(settled).toEqual([]);
  });

  it('reports a listener that throws, and still tells the others', () => {
    const errors: Array<[unknown, string]> = [];
    const heard: string[] = [];
    const notifier = new Notifier((error, what) => errors.push([error, what]));
    const boom = new Error('boom');
    notifier.onSettled(() => {
      throw boom;
    });
    notifier.onSettled((id) => heard.push(id));
    notifier.onAttemptEnded(() => {
      throw boom;
    });
    notifier.settled('t1');
    notifier.attemptEnded('t1', 't1:1:1');
    expect(heard).toEqual(['t1']);
    expect(errors).toEqual([
      [boom, 'settled'],
      [boom, 'attemptEnded'],
    ]);
  });
});
