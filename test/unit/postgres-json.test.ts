import { describe, expect, it } from 'vitest';
import { jsonOf, jsonOfFixed, jsonOfKnown } from '../../src/store/postgres/transaction.js';
import { TroupeError } from '../../src/errors.js';

/** The INVALID_INPUT jsonOf throws for `value`, or a failure when it throws nothing. */
function refusal(value: unknown, of: (value: unknown, where: string) => string | null = jsonOf): TroupeError {
  try {
    of(value, 'input');
  } catch (error) {
    expect(error).toBeInstanceOf(TroupeError);
    expect((error as TroupeError).code).toBe('INVALID_INPUT');
    return error as TroupeError;
  }
  throw new Error('expected INVALID_INPUT');
}

describe('jsonOf: a value as the text of a jsonb parameter', () => {
  it('writes plain JSON data as JSON.stringify does, and undefined as SQL NULL', () => {
    const value = { a: 1, b: ['x', null, true], c: { d: -0.5 }, skipped: undefined };
    expect(jsonOf(value, 'input')).toBe(JSON.stringify(value));
    expect(jsonOf('text', 'input')).toBe('"text"');
    expect(jsonOf(null, 'input')).toBe('null');
    expect(jsonOf(undefined, 'input')).toBeNull();
  });

  it('refuses what jsonb would not give back as it was, at any depth, naming where', () => {
    expect(refusal({ at: new Date(0) }).message).toBe('input.at is a Date, which JSON does not hold; it must be plain JSON data');
    expect(refusal([1, { bytes: new Uint8Array(2) }]).message).toBe('input[1].bytes is a Uint8Array, which JSON does not hold; it must be plain JSON data');
    expect(refusal({ n: 1n }).message).toBe('input.n is a BigInt, which JSON does not hold (store it as a string); it must be plain JSON data');
    expect(refusal(Buffer.from('x')).message).toBe('input is a Buffer, which JSON does not hold; it must be plain JSON data');
    expect(refusal({ text: 'a\u0000b' }).message).toMatch(/^input holds a NUL character/);
    const cycle: Record<string, unknown> = {};
    cycle.self = cycle;
    expect(refusal(cycle).message).toBe('input.self is a circular reference; it must be plain JSON data');
    expect(refusal({ f: () => 1 }).message).toBe('input.f is a function; it must be plain JSON data');
    // A getter that gives the walk one thing and JSON.stringify another is refused all the same.
    let reads = 0;
    const shifty = {
      get n(): unknown {
        return ++reads === 1 ? 1 : 2n;
      },
    };
    expect(refusal(shifty).message).toMatch(/^input is not JSON: .*BigInt/);
  });
});

describe('jsonOfFixed: the text of an object nothing changes, made once', () => {
  it('gives the same text for the same object without making it again, where jsonOf makes it anew', () => {
    const output = { n: 1 };
    expect(jsonOfFixed(output, 'output')).toBe('{"n":1}');
    // Changed behind its back, a fixed object keeps the text it was first given: only objects that
    // are never changed may go through it. jsonOf reads the object as it is now.
    output.n = 2;
    expect(jsonOfFixed(output, 'output')).toBe('{"n":1}');
    expect(jsonOf(output, 'output')).toBe('{"n":2}');
    expect(jsonOfFixed({ n: 2 }, 'output')).toBe('{"n":2}');
  });

  it('refuses as jsonOf does, every time, and passes primitives and undefined through', () => {
    const bad = { at: new Date(0) };
    expect(refusal(bad, jsonOfFixed).message).toBe('input.at is a Date, which JSON does not hold; it must be plain JSON data');
    expect(refusal(bad, jsonOfFixed).code).toBe('INVALID_INPUT');
    expect(jsonOfFixed(3, 'output')).toBe('3');
    expect(jsonOfFixed(undefined, 'output')).toBeNull();
  });
});

describe('jsonOfKnown: a kept text, or a new one that is not kept', () => {
  it('finds the text jsonOfFixed kept for the same object, and makes a caller\'s object anew each time', () => {
    const made = { n: 1 };
    jsonOfFixed(made, 'output');
    made.n = 2;
    expect(jsonOfKnown(made, 'output')).toBe('{"n":1}');
    const callers = { n: 1 };
    expect(jsonOfKnown(callers, 'output')).toBe('{"n":1}');
    callers.n = 2;
    expect(jsonOfKnown(callers, 'output')).toBe('{"n":2}');
    expect(refusal({ at: new Date(0) }, jsonOfKnown).code).toBe('INVALID_INPUT');
    expect(jsonOfKnown(undefined, 'output')).toBeNull();
  });
});
