/**
 * When the CLI colours task states: on a terminal, never with a non-empty NO_COLOR, and with
 * FORCE_COLOR where stdout is not a terminal; and how wide a coloured cell shows.
 */
import { describe, expect, it } from 'vitest';
import { colourEnabled, coloured, plain, visibleLength } from '../../src/cli/colour.js';

const tty = { isTTY: true };
const pipe = { isTTY: false };

describe('colourEnabled', () => {
  it('colours a terminal, not a pipe nor a dumb terminal', () => {
    expect(colourEnabled(tty, {})).toBe(true);
    expect(colourEnabled(pipe, {})).toBe(false);
    expect(colourEnabled({}, {})).toBe(false);
    expect(colourEnabled(tty, { TERM: 'dumb' })).toBe(false);
  });

  it('turns colour off with any non-empty NO_COLOR, even when forced', () => {
    expect(colourEnabled(tty, { NO_COLOR: '1' })).toBe(false);
    expect(colourEnabled(tty, { NO_COLOR: '0' })).toBe(false);
    expect(colourEnabled(pipe, { NO_COLOR: 'yes', FORCE_COLOR: '1' })).toBe(false);
    expect(colourEnabled(tty, { NO_COLOR: '' })).toBe(true);
  });

  it('turns colour on for a pipe with FORCE_COLOR, and off with FORCE_COLOR=0 or false', () => {
    expect(colourEnabled(pipe, { FORCE_COLOR: '1' })).toBe(true);
    expect(colourEnabled(pipe, { FORCE_COLOR: '' })).toBe(true);
    expect(colourEnabled(tty, { FORCE_COLOR: '0' })).toBe(false);
    expect(colourEnabled(tty, { FORCE_COLOR: 'false' })).toBe(false);
  });
});

describe('paint', () => {
  it('wraps a state in its colour, leaves what has none, and counts only what shows', () => {
    expect(coloured('done')).toBe('\u001b[32mdone\u001b[39m');
    expect(coloured('cancelled', 'cancelled 2')).toBe('\u001b[2mcancelled 2\u001b[22m');
    expect(coloured('idle')).toBe('idle');
    expect(plain('failed', 'failed 3')).toBe('failed 3');
    expect(visibleLength(coloured('needs_attention'))).toBe('needs_attention'.length);
  });
});
