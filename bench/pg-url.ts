/**
 * A PostgreSQL URL for the benches, with the user libpq and psql would log in as when it names
 * none: the OS user's name. node-postgres takes `$USER` instead, and sends no user at all when
 * that is unset (as under `runuser` and some CI runners), which the server refuses.
 */
import { userInfo } from 'node:os';

/** `raw` with the OS user's name when it names no user (and `PGUSER` does not either). */
export function withUser(raw: string): string {
  const parsed = new URL(raw);
  if (parsed.username !== '' || process.env.PGUSER !== undefined) return raw;
  parsed.username = userInfo().username;
  return parsed.href;
}
