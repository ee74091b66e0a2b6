/**
 * Logger resolution. Troupe never configures global logging: it takes the embedding app's pino
 * instance, or builds one from pino options, or stays silent.
 */
import { pino, type Logger, type LoggerOptions } from 'pino';
import { TroupeError } from './errors.js';

/** What `RuntimeOptions.logger` accepts. */
export type LoggerOption = Logger | LoggerOptions | false;

/** Returns a child logger tagged `{component: 'troupe'}`. */
export function resolveLogger(option: LoggerOption | undefined): Logger {
  if (option === false) return pino({ level: 'silent' });
  if (option === undefined) return pino({ level: 'warn', name: 'troupe' });
  if (isLogger(option)) return option.child({ component: 'troupe' });
  try {
    return pino({ name: 'troupe', ...option });
  } catch (error) {
    // pino refuses what it cannot use (a level it does not know, a bad transport): name the option.
    throw new TroupeError('INVALID_OPTIONS', `options.logger: ${(error as Error).message}`, { cause: error });
  }
}

function isLogger(value: LoggerOption): value is Logger {
  return typeof (value as Logger).child === 'function' && typeof (value as Logger).info === 'function';
}

export type { Logger };
