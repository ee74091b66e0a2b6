import { describe, expect, it } from 'vitest';
import { Lifecycle, validateCloseOptions } from '../../src/lifecycle.js';
import { capturedLog } from '../log-capture.js';

const capture = () => capturedLog('info');

describe('Lifecycle', () => {
  it('goes starting → running → draining → closed, logging each change', () => {
    const { log, lines } = capture();
    const life = new Lifecycle(log);
    expect(life.state).toBe('starting');
    life.set('running');
    life.set('draining', { timeoutMs: 5 });
    life.set('closed');
    expect(life.state).toBe('closed');
    expect(lines.map((l) => [l.from, l.to])).toEqual([
      ['starting', 'running'],
      ['running', 'draining'],
      ['draining', 'closed'],
    ]);
    expect(lines[1]).toMatchObject({ timeoutMs: 5 });
  });

  it('lets a failed start drain and close', () => {
    const life = new Lifecycle(capture().log);
    life.set('draining');
    life.set('closed');
    expect(life.state).toBe('closed');
  });

  it('refuses any other change with ILLEGAL_STATE naming both states', () => {
    const life = new Lifecycle(capture().log);
    expect(() => life.set('closed')).toThrow(expect.objectContaining({ code: 'ILLEGAL_STATE', message: 'the runtime cannot go from starting to closed' }));
    life.set('running');
    expect(() => life.set('running')).toThrow(expect.objectContaining({ code: 'ILLEGAL_STATE' }));
    life.set('draining');
    life.set('closed');
    expect(() => life.set('running')).toThrow(expect.objectContaining({ code: 'ILLEGAL_STATE', message: 'the runtime cannot go from closed to running' }));
    expect(life.state).toBe('closed');
  });

  it('guards calls: ILLEGAL_STATE while starting, CLOSED while draining or closed, each naming the state', () => {
    const life = new Lifecycle(capture().log);
    expect(() => life.assertRunning('submit')).toThrow(expect.objectContaining({ code: 'ILLEGAL_STATE', message: 'submit: the runtime is still starting' }));
    life.set('running');
    expect(() => life.assertRunning('submit')).not.toThrow();
    life.set('draining');
    expect(() => life.assertRunning('get')).toThrow(expect.objectContaining({ code: 'CLOSED', message: 'get: the runtime is draining' }));
    life.set('closed');
    expect(() => life.assertRunning('get')).toThrow(expect.objectContaining({ code: 'CLOSED', message: 'get: the runtime is closed' }));
  });
});

describe('validateCloseOptions', () => {
  it('fills the defaults', () => {
    expect(validateCloseOptions(undefined)).toEqual({ timeoutMs: 15_000, force: false });
    expect(validateCloseOptions({ force: true })).toEqual({ timeoutMs: 15_000, force: true });
  });

  it.each([
    [{ timeoutMs: -1 }, 'close: timeoutMs must be a non-negative integer'],
    [{ timeoutMs: 1.5 }, 'close: timeoutMs must be a non-negative integer'],
    [{ timeoutMs: '10' }, 'close: timeoutMs must be a non-negative integer'],
    [{ force: 'yes' }, 'close: force must be a boolean'],
    [{ timeout: 10 }, 'close: timeout is not a close option (timeoutMs, force)'],
    [null, 'close: options must be an object'],
    [5, 'close: options must be an object'],
  ])('rejects %j', (options, message) => {
    expect(() => validateCloseOptions(options)).toThrow(expect.objectContaining({ code: 'INVALID_OPTIONS', message }));
  });
});
