#!/usr/bin/env node
/**
 * The `troupe` binary. Commands:
 *   troupe demo [--tasks N] [--data-dir DIR] [--threads N]   run the demo (what `npm start` runs)
 *   troupe help                                               this text
 */
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { runDemo } from './demo.js';
import { TroupeError } from '../errors.js';

const HELP = `troupe: a durable agent-dispatch runtime

usage:
  troupe demo [--tasks N] [--data-dir DIR] [--threads N]
      Submits N tasks (default 3000) to the built-in echo, sleep and fail agents on the
      embedded LMDB data dir (default ./.troupe), shows live progress and a summary.
      Run it again to resume: tasks are keyed, so nothing is submitted twice.
  troupe help
`;

async function main(argv: string[]): Promise<number> {
  const [command = 'help', ...rest] = argv;
  if (command === 'help' || command === '--help' || command === '-h') {
    process.stdout.write(HELP);
    return 0;
  }
  if (command === 'demo') {
    const { values } = parseArgs({
      args: rest,
      options: { tasks: { type: 'string', default: '3000' }, 'data-dir': { type: 'string', default: './.troupe' }, threads: { type: 'string' } },
    });
    const tasks = Number(values.tasks);
    const threads = values.threads === undefined ? undefined : Number(values.threads);
    if (!Number.isSafeInteger(tasks) || tasks < 1) throw new TroupeError('INVALID_OPTIONS', `--tasks must be a positive integer (got ${values.tasks})`);
    const counts = await runDemo({ dataDir: resolve(values['data-dir']!), tasks, threads });
    return counts.pending === 0 ? 0 : 1;
  }
  process.stderr.write(`unknown command ${JSON.stringify(command)}\n\n${HELP}`);
  return 2;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error: unknown) => {
    const message = error instanceof TroupeError ? `${error.code}: ${error.message}` : error instanceof Error ? (error.stack ?? error.message) : String(error);
    process.stderr.write(`troupe: ${message}\n`);
    process.exit(1);
  },
);
