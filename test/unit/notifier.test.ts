import { describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { Notifier } from '../../src/pipeline/notifier.js';
import { EffectExecutor } from '../../src/pipeline/executor.js';

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

  it('carries each kind of internal news to its own listeners only', () => {
    const heard: string[] = [];
    const notifier = new Notifier();
    const timer = { id: 'start:t1:1', due: 5, kind: 'start' as const, taskId: 't1', run: 1 };
    notifier.onWork(() => heard.push('work'));
    notifier.onBusy(() => heard.push('busy'));
    notifier.onTimer((t) => heard.push(`timer ${t.id}`));
    notifier.onPauseEnded((agent, state, at) => heard.push(`pause ${agent} ${state.fastFails} ${at}`));
    notifier.onRefused(() => heard.push('refused'));
    notifier.work();
    notifier.busy();
    notifier.timerFired(timer);
    notifier.pauseEnded('a', { fastFails: 0 }, 9);
    notifier.refused();
    expect(heard).toEqual(['work', 'busy', 'timer start:t1:1', 'pause a 0 9', 'refused']);
  });
});

describe('the effects executor', () => {
  it('runs each effect with the handler its owner registered, and names the kinds nobody handles', () => {
    const executor = new EffectExecutor(pino({ level: 'silent' }));
    const ran: string[] = [];
    expect(executor.unhandled).toEqual(['dispatch', 'startFailed', 'notify', 'arm', 'disarm', 'stop', 'cleanWorkspace', 'armSchedule']);
    executor.handle({ dispatch: (id) => ran.push(`dispatch ${id}`), notify: (id) => ran.push(`notify ${id}`) });
    expect(() => executor.handle({ notify: () => undefined })).toThrow('effect handler notify registered twice');
    executor.run([{ kind: 'notify', taskId: 't1' }, { kind: 'dispatch', taskId: 't1', attemptId: 't1:1:1', attempt: {} as never }]);
    expect(ran).toEqual(['notify t1', 'dispatch t1:1:1']);
    expect(executor.unhandled).toEqual(['startFailed', 'arm', 'disarm', 'stop', 'cleanWorkspace', 'armSchedule']);
  });
});
