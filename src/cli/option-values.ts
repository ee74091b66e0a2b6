/**
 * The values of the command line's options: each one parsed, and checked with the option named in
 * the error (USAGE, exit 2). The command line checks them all before anything touches the data
 * dir (see {@link checkOptionValues}); the commands parse them again to use them.
 */
import { usageError } from './cli-error.js';

/** Parsed option values of a command. */
export type Values = Record<string, string | boolean | string[] | undefined>;

/** Integer options and their minimum. */
const INTEGER_OPTIONS: Record<string, number> = { limit: 1, priority: Number.MIN_SAFE_INTEGER, threads: 1, slots: 1, tasks: 1 };

/** What a schedule may do when its previous task is still running. */
const OVERLAP = ['skip', 'allow', 'queue_one'];

/**
 * Checks every option value `command` was given, so a bad one is a usage error (exit 2) whether
 * or not a runtime answers, and before the data dir is opened.
 */
export function checkOptionValues(command: string, values: Values): void {
  for (const [name, min] of Object.entries(INTEGER_OPTIONS)) integerOption(`--${name}`, values[name], min);
  if (typeof values.input === 'string') parseJsonOption('--input', values.input);
  if (Array.isArray(values.label)) labelPairs(values.label);
  if (typeof values.before === 'string') beforeOption(values.before);
  if (command === 'schedules add') {
    if (typeof values.cron !== 'string' || typeof values.agent !== 'string') throw usageError('schedules add needs --cron and --agent');
    if (typeof values.overlap === 'string' && !OVERLAP.includes(values.overlap)) throw usageError(`--overlap must be one of ${OVERLAP.join(', ')}`);
  }
}

/** Parses an option's JSON value, naming the option when it does not parse. */
export function parseJsonOption(name: string, text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (error) {
    throw usageError(`${name} must be JSON (${(error as Error).message})`);
  }
}

/** Parses an integer option within bounds. */
export function integerOption(name: string, value: string | boolean | string[] | undefined, min = Number.MIN_SAFE_INTEGER): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (typeof value !== 'string' || value.trim() === '' || !Number.isSafeInteger(n) || n < min) {
    throw usageError(`${name} must be an integer${min > Number.MIN_SAFE_INTEGER ? ` >= ${min}` : ''} (got ${JSON.stringify(value)})`);
  }
  return n;
}

/** A string option's value, if it was given. */
export function stringOption(values: Values, name: string): string | undefined {
  const value = values[name];
  return typeof value === 'string' ? value : undefined;
}

/** `--label NAME=VALUE` options as a labels object; a value may hold `=`, a pair without one is a usage error. */
export function labelPairs(pairs: readonly string[]): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const pair of pairs) {
    const at = pair.indexOf('=');
    if (at <= 0) throw usageError(`--label takes NAME=VALUE (got ${JSON.stringify(pair)})`);
    labels[pair.slice(0, at)] = pair.slice(at + 1);
  }
  return labels;
}

/** `--before`: an ISO 8601 date or epoch milliseconds, as epoch milliseconds. */
export function beforeOption(text: string): number {
  const at = /^\d+$/.test(text) ? Number(text) : Date.parse(text);
  if (!Number.isSafeInteger(at)) throw usageError(`--before must be an ISO 8601 date or epoch milliseconds (got ${JSON.stringify(text)})`);
  return at;
}
