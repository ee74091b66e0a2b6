/**
 * One transaction on a pooled connection, plain data as jsonb, and times as epoch ms: what every
 * durable verb of the PostgreSQL queue (queue.ts, settle.ts, sweeper.ts, limits.ts, schedules.ts)
 * needs.
 */
import type pg from 'pg';
import { describeUnserializable } from '../../../actors/wire.js';
import { TroupeError } from '../../errors.js';
import { isTerminal, TASK_STATES } from '../../../machines/index.js';

/**
 * Runs `work` between BEGIN and COMMIT on one connection of `pool`, and rolls back if it throws.
 * A TroupeError passes through; anything else (the server or the connection failed) becomes
 * STORE_FAILED naming `what`. A connection whose ROLLBACK failed is discarded, not pooled again.
 * `begin` is what opens it: BEGIN, or BEGIN with a first statement of no parameters sent with it
 * (one round trip instead of two).
 */
export async function transaction<T>(pool: pg.Pool, what: string, work: (client: pg.PoolClient) => Promise<T>, begin = 'BEGIN'): Promise<T> {
  let client: pg.PoolClient;
  try {
    client = await pool.connect();
  } catch (error) {
    throw storeFailed(what, error);
  }
  let broken: Error | undefined;
  try {
    await client.query(begin);
    const result = await work(client);
    await client.query('COMMIT');
    return result;
  } catch (error) {
    await client.query('ROLLBACK').catch((rollback: Error) => (broken = rollback));
    throw error instanceof TroupeError ? error : storeFailed(what, error);
  } finally {
    client.release(broken);
  }
}

/** STORE_FAILED for `what`, keeping the driver's error as the cause. */
export function storeFailed(what: string, error: unknown): TroupeError {
  return new TroupeError('STORE_FAILED', `${what} failed: ${(error as Error)?.message ?? String(error)}`, { cause: error });
}

/**
 * `value` as the text of a jsonb parameter (undefined: SQL NULL), or INVALID_INPUT naming `where`.
 * jsonb holds only what JSON does, and no NUL character (PostgreSQL refuses `\u0000` in jsonb), so
 * the rest is refused here, before a transaction starts, rather than failing it half-way or
 * coming back changed: BigInts, and the Dates and Uint8Arrays the LMDB store keeps (JSON would
 * turn them into a string and an object). The walk that refuses them is what lets the text be made
 * by a plain `JSON.stringify`: a replacer that looked for them took as long again (1.3 µs against
 * 0.5 for a small object), on a path that makes several per task.
 */
export function jsonOf(value: unknown, where: string): string | null {
  if (value === undefined) return null;
  const problem = describeUnserializable(value, where, true);
  if (problem) throw new TroupeError('INVALID_INPUT', `${problem}; it must be plain JSON data`);
  let text: string | undefined;
  try {
    text = JSON.stringify(value);
  } catch (error) {
    // A getter that throws, or gives a BigInt, only when read again after the walk.
    throw new TroupeError('INVALID_INPUT', `${where} is not JSON: ${(error as Error).message}`);
  }
  if (text === undefined) return null;
  // (A lone surrogate, which jsonb refuses too, the walk above refused.) JSON.stringify escapes a
  // NUL; an escaped backslash before the `u` is the string's own.
  if (text.includes('\\u0000') && NUL_ESCAPE.test(text)) throw new TroupeError('INVALID_INPUT', `${where} holds a NUL character (\\u0000), which PostgreSQL does not store in jsonb`);
  return text;
}

/** `\u0000` in JSON text, not preceded by a backslash of its own. */
const NUL_ESCAPE = /(?<!\\)(?:\\\\)*\\u0000/;

/**
 * {@link jsonOf} of an object that nothing changes once it is made (an attempt's output as its
 * thread sent it, the result and error derived from it: cluster/attempt-end.ts makes them): its
 * text is kept with it, so the settle's check and write of the same end ({@link jsonOfKnown}) find
 * it instead of making it again. Only their maker may call this: a caller's own value (an input,
 * an end given to settleAttempts) may change before it is submitted again.
 */
export function jsonOfFixed(value: unknown, where: string): string | null {
  if (typeof value !== 'object' || value === null) return jsonOf(value, where);
  const known = fixedTexts.get(value);
  if (known !== undefined) return known;
  const text = jsonOf(value, where);
  if (text !== null) fixedTexts.set(value, text);
  return text;
}

/** {@link jsonOf}, or the text {@link jsonOfFixed} kept for this very object; keeps nothing itself. */
export function jsonOfKnown(value: unknown, where: string): string | null {
  const known = typeof value === 'object' && value !== null ? fixedTexts.get(value) : undefined;
  return known !== undefined ? known : jsonOf(value, where);
}

const fixedTexts = new WeakMap<object, string>();

/** `text` with each NUL character, which PostgreSQL stores in neither text nor jsonb, replaced by U+FFFD. */
export function withoutNul(text: string): string {
  return text.includes('\u0000') ? text.replaceAll('\u0000', '\uFFFD') : text;
}

/**
 * SQL selecting the timestamp `expression` as epoch ms `AS as`: a double, which keeps the
 * microseconds (to about a quarter of one for dates of this century). NULL stays NULL.
 */
export function epochMs(expression: string, as = expression): string {
  return `(extract(epoch FROM ${expression}) * 1000)::float8 AS ${as}`;
}

/**
 * The settled states as an SQL list, `('done', 'failed', 'dropped', 'cancelled')`, from the one
 * transition table: what `state IN …` says, and the partial indexes' predicates say alike.
 */
export const SETTLED_SQL = `(${TASK_STATES.filter((state) => isTerminal(state))
  .map((state) => `'${state}'`)
  .join(', ')})`;
