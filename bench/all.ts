/**
 * `npm run bench`: the dispatch bench (bench/dispatch.ts) with the arguments given, then, when
 * PG_URL is set, the cluster bench (bench/cluster.ts) with its defaults. npm appends a script's
 * arguments to the end of its command line, so a script of two commands gave them to the second:
 * `npm run bench -- --settings` ran the whole dispatch bench and then refused `--settings` in the
 * cluster bench. The cluster bench is not run after `--help`, `--settings` or `--json` (whose
 * output is one JSON document); `npm run bench:cluster -- <options>` runs it alone.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';

const args = process.argv.slice(2);

/** Runs the bench script `file` (next to this one) with `argv`, its output as this process's; resolves with its exit code. */
async function run(file: string, argv: readonly string[]): Promise<number> {
  const child = spawn(process.execPath, [...process.execArgv, fileURLToPath(new URL(file, import.meta.url)), ...argv], { stdio: 'inherit' });
  const [code, signal] = (await once(child, 'exit')) as [number | null, NodeJS.Signals | null];
  return code ?? (signal ? 1 : 0);
}

const code = await run('./dispatch.js', args);
if (code !== 0) process.exit(code);
if (process.env.PG_URL && !args.some((arg) => arg === '--help' || arg === '--settings' || arg === '--json')) process.exit(await run('./cluster.js', ['--if-pg']));
