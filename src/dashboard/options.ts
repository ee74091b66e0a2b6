/**
 * The dashboard's options: where it listens and who may use it. On loopback (the default) anyone
 * on the machine may; on any other host every request must carry the token, which is generated
 * (and printed once) when none is given.
 */
import { randomBytes } from 'node:crypto';
import { isIP } from 'node:net';
import { TroupeError } from '../errors.js';

/** `createRuntime({ dashboard })`. */
export interface DashboardOptions {
  /** Port to listen on; 0 picks a free one. @default 0 */
  port?: number | undefined;
  /** Address to bind. Anything but loopback requires the token. @default '127.0.0.1' */
  host?: string | undefined;
  /**
   * Required on every request when given (`Authorization: Bearer <token>`, or `?token=` for the
   * page and its event stream). Generated when the host is not loopback and none is given.
   */
  token?: string | undefined;
}

/** The dashboard's options, validated. */
export interface ResolvedDashboard {
  readonly port: number;
  readonly host: string;
  /** Undefined: no token asked (loopback, none given). */
  readonly token: string | undefined;
  /** The token was generated here (the runtime prints it once). */
  readonly generated: boolean;
}

/** Whether `host` is a loopback address or name. */
export function isLoopback(host: string): boolean {
  if (host === 'localhost') return true;
  if (isIP(host) === 4) return host.startsWith('127.');
  return host === '::1' || host === '[::1]';
}

/** Validates `options.dashboard` (false or undefined: off). Throws INVALID_OPTIONS naming the field. */
export function resolveDashboard(value: DashboardOptions | boolean | undefined): ResolvedDashboard | null {
  if (value === undefined || value === false) return null;
  const given = value === true ? {} : value;
  if (typeof given !== 'object' || given === null) throw invalid('options.dashboard must be an object { port?, host?, token? }, true or false');
  for (const key of Object.keys(given)) if (key !== 'port' && key !== 'host' && key !== 'token') throw invalid(`options.dashboard.${key} is not a known option`);
  const port = given.port ?? 0;
  if (!(Number.isSafeInteger(port) && port >= 0 && port <= 65_535)) throw invalid('options.dashboard.port must be a port number (0..65535; 0 picks a free one)');
  const host = given.host ?? '127.0.0.1';
  if (typeof host !== 'string' || host.length === 0 || host.length > 255 || /[\s/]/.test(host)) throw invalid('options.dashboard.host must be a host name or an IP address');
  const token = given.token;
  if (token !== undefined && (typeof token !== 'string' || token.length < 16 || token.length > 256 || /[^\x21-\x7e]/.test(token))) {
    throw invalid('options.dashboard.token must be 16 to 256 printable ASCII characters without spaces');
  }
  if (token !== undefined) return Object.freeze({ port, host, token, generated: false });
  if (isLoopback(host)) return Object.freeze({ port, host, token: undefined, generated: false });
  return Object.freeze({ port, host, token: randomBytes(24).toString('base64url'), generated: true });
}

function invalid(message: string): TroupeError {
  return new TroupeError('INVALID_OPTIONS', message);
}
