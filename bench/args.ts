/**
 * The benches' command lines: node:util's parseArgs, plus `--help` (each option with its
 * default), and a bad option or value told in one line with the usage and exit code 2, not a
 * stack trace.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';

type Options = NonNullable<ParseArgsConfig['options']>;

/** What {@link benchArgs} gives a bench. */
export interface BenchArgs<O extends Options> {
  values: ReturnType<typeof parseArgs<{ options: O }>>['values'];
  /** The option `name` as an integer ≥ `min`, or the usage error. */
  int(name: keyof O & string, min: number): number;
  /** The option `name` as a finite number ≥ `min`, or the usage error. */
  number(name: keyof O & string, min: number): number;
  /** Prints `message` with the usage to stderr and exits with code 2. */
  fail(message: string): never;
}

/**
 * Parses the process's arguments for the bench `command` (`npm run bench`, say), whose options are
 * `options` (strings and booleans, each with its default where it has one) and which `about` says
 * in a line. `--help` prints the usage and exits.
 */
export function benchArgs<const O extends Options>(command: string, about: string, options: O): BenchArgs<O> {
  const usage = () =>
    [
      `usage: ${command} [options]`,
      about,
      '',
      ...Object.entries(options).map(([name, option]) => `  --${name}${option.type === 'string' ? ' <value>' : ''}${option.default !== undefined ? `  (default: ${String(option.default)})` : ''}`),
      '  --help  this text',
    ].join('\n');
  const fail = (message: string): never => {
    console.error(`${command}: ${message}\n\n${usage()}`);
    process.exit(2);
  };
  let values: Record<string, unknown>;
  try {
    values = parseArgs({ options: { ...options, help: { type: 'boolean', default: false } }, strict: true, allowPositionals: false }).values;
  } catch (error) {
    return fail((error as Error).message);
  }
  if (values.help) {
    console.log(usage());
    process.exit(0);
  }
  const numberOf = (name: string, min: number, integer: boolean) => {
    const n = Number(values[name]);
    if (!(integer ? Number.isSafeInteger(n) : Number.isFinite(n)) || n < min) fail(`--${name} must be ${integer ? 'an integer' : 'a number'} ≥ ${min} (got ${JSON.stringify(values[name])})`);
    return n;
  };
  return {
    values: values as BenchArgs<O>['values'],
    int: (name, min) => numberOf(name, min, true),
    number: (name, min) => numberOf(name, min, false),
    fail,
  };
}
