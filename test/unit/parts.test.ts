import { describe, expect, it } from 'vitest';
import { sliceOf, type EngineParts } from '../../src/tasks/parts.js';
import { DISPATCHER_PARTS } from '../../src/tasks/dispatcher.js';
import { INTERACTION_PARTS } from '../../src/tasks/interact.js';

/** A stand-in for every part: each a distinct object, so identity shows what was handed over. */
const PART_NAMES = ['options', 'store', 'clock', 'log', 'governor', 'router', 'pool', 'agents', 'timers', 'table', 'flow', 'logs', 'pipeline', 'notifier'] as const;
const parts = Object.fromEntries(PART_NAMES.map((name) => [name, { name }])) as unknown as EngineParts;

describe('sliceOf', () => {
  it('hands a module exactly the parts it names, the same objects, and nothing else', () => {
    const slice = sliceOf(parts, INTERACTION_PARTS);
    expect(Object.keys(slice).sort()).toEqual([...INTERACTION_PARTS].sort());
    for (const key of INTERACTION_PARTS) expect(slice[key]).toBe(parts[key]);
    expect('pool' in slice).toBe(false);
  });

  it('gives every module its own object', () => {
    const a = sliceOf(parts, DISPATCHER_PARTS);
    const b = sliceOf(parts, DISPATCHER_PARTS);
    expect(a).not.toBe(b);
    expect(a).toEqual(b);
  });
});
