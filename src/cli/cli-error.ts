/**
 * Errors the CLI reports itself (usage, a missing data dir, no runtime running), with the exit code
 * each one maps to. Errors a runtime reports keep their TroupeError code.
 */

/** Exit codes of the `troupe` binary. */
export const EXIT = {
  OK: 0,
  /** The command ran and failed, or the task it waited for did not end `done`. */
  FAILED: 1,
  /** Bad command line, or no data dir where one was expected. */
  USAGE: 2,
  /** A live runtime is needed but none runs, or one holds the dir and does not answer. */
  NO_RUNTIME: 3,
  /** Interrupted by Ctrl-C. */
  INTERRUPTED: 130,
} as const;

/** An error with a code to print and an exit code. */
export class CliError extends Error {
  readonly code: string;
  readonly exitCode: number;

  constructor(code: string, message: string, exitCode: number = EXIT.FAILED) {
    super(message);
    this.name = 'CliError';
    this.code = code;
    this.exitCode = exitCode;
  }
}

/**
 * The error of every command that needs a running runtime when none runs on `dataDir`: one code,
 * one exit code and the same words, whichever command asked and whether or not the dir exists yet.
 * `postgres`: TROUPE_STORE is set, so every command needs one (the data dir holds no store).
 */
export function notRunning(dataDir: string, options: { postgres?: boolean } = {}): CliError {
  const why = options.postgres ? ' (TROUPE_STORE is set: the commands reach PostgreSQL only through a running runtime)' : '';
  return new CliError('NOT_RUNNING', `no runtime is running in ${dataDir}${why}: start one with ${startCommand(dataDir)}`, EXIT.NO_RUNTIME);
}

/** The error of a command that reads a data dir that holds no Troupe store. */
export function noDataDir(dataDir: string): CliError {
  return new CliError('NO_DATA_DIR', `no Troupe data dir at ${dataDir}: start a runtime on it with ${startCommand(dataDir)}`, EXIT.USAGE);
}

/** The `troupe run` line that starts a runtime on `dataDir`, quoted for a POSIX shell where needed. */
function startCommand(dataDir: string): string {
  return `\`troupe run --agents <dir> --data-dir ${shellWord(dataDir)}\``;
}

/** `text` as one word of a POSIX shell command line: as it is when that is safe, else single-quoted. */
export function shellWord(text: string): string {
  return /^[\w@%+=:,./-]+$/.test(text) ? text : `'${text.replace(/'/g, `'\\''`)}'`;
}

/** A usage error: bad command, option or argument. */
export function usageError(message: string): CliError {
  return new CliError('USAGE', message, EXIT.USAGE);
}

/** The code and message of anything thrown: a CliError's or TroupeError's code, else `INTERNAL`. */
export function describeError(error: unknown): { code: string; message: string } {
  if (error instanceof Error) {
    const code = (error as { code?: unknown }).code;
    return { code: typeof code === 'string' && /^[A-Z][A-Z_]*$/.test(code) ? code : 'INTERNAL', message: error.message };
  }
  return { code: 'INTERNAL', message: String(error) };
}
