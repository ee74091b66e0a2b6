/**
 * Colour in the CLI's text output: task states, in tables and lines, when stdout is a terminal.
 * `NO_COLOR` (any non-empty value, as no-color.org asks) turns it off; `FORCE_COLOR` turns it on
 * where stdout is not a terminal (a pipe, a pager, a test), unless it is `0` or `false`. `--json`
 * output is never coloured.
 */

/** SGR escape sequences (colour on, colour off) by task state. */
const STATE_SGR: Readonly<Record<string, readonly [string, string]>> = {
  queued: ['\u001b[33m', '\u001b[39m'],
  running: ['\u001b[36m', '\u001b[39m'],
  waiting: ['\u001b[33m', '\u001b[39m'],
  sleeping: ['\u001b[33m', '\u001b[39m'],
  needs_attention: ['\u001b[35m', '\u001b[39m'],
  done: ['\u001b[32m', '\u001b[39m'],
  failed: ['\u001b[31m', '\u001b[39m'],
  dropped: ['\u001b[2m', '\u001b[22m'],
  cancelled: ['\u001b[2m', '\u001b[22m'],
};

/** An SGR escape sequence: what {@link visibleLength} does not count. */
const SGR = /\u001b\[[0-9;]*m/g;

/** Writes `text` (by default the state's own name) in the colour of task state `state`, or as it is. */
export type Paint = (state: string, text?: string) => string;

/** Paint that leaves text as it is. */
export const plain: Paint = (state, text = state) => text;

/** Paint in each state's colour; a state without one is left as it is. */
export const coloured: Paint = (state, text = state) => {
  const sgr = STATE_SGR[state];
  return sgr && text.length > 0 ? `${sgr[0]}${text}${sgr[1]}` : text;
};

/**
 * Whether text written to `stream` is coloured: never with a non-empty `NO_COLOR`; with
 * `FORCE_COLOR` unless it is `0` or `false`; otherwise only on a terminal that is not `TERM=dumb`.
 */
export function colourEnabled(stream: { readonly isTTY?: boolean }, env: NodeJS.ProcessEnv = process.env): boolean {
  if (env.NO_COLOR) return false;
  const force = env.FORCE_COLOR;
  if (force !== undefined) return force !== '0' && force !== 'false';
  return stream.isTTY === true && env.TERM !== 'dumb';
}

/** The length of `text` on screen: escape sequences take no columns. */
export function visibleLength(text: string): number {
  return text.replace(SGR, '').length;
}
