/**
 * Cron schedules in IANA time zones: validation, the next tick after an instant, and daily windows.
 *
 * cron-parser expands and matches the fields, but only ever in UTC, where wall-clock time has no
 * gaps and no repeats. Turning a zone's wall-clock times into instants is done here instead of with
 * cron-parser's own `tz` option, because that option is inconsistent around DST changes (measured on
 * 5.10): `next()` from inside a spring-forward gap skips that day's shifted tick, `prev()` never sees
 * shifted ticks, and a daily 02:00 job in Australia/Lord_Howe (a 30-minute shift) never fires on its
 * spring-forward day.
 *
 * DST policy, by whether the hour field allows every hour:
 * - every hour (`0 * * * *`, `*\/5 * * * *`): real time. The job fires at each instant whose local
 *   time matches, so it skips the hour that does not exist and runs in both passes of a repeated hour.
 * - fixed hours (`30 2 * * *`): each matching wall-clock time fires once. A time that does not exist
 *   fires shifted forward by the length of the gap (02:30 becomes 03:30 when 02:00 jumps to 03:00),
 *   and a time that happens twice fires on its first pass only.
 * A shifted time that lands on another tick's instant fires once.
 *
 * All times are epoch ms passed in by the caller; nothing here reads the clock or caches state.
 */
import { CronExpression, CronExpressionParser, type CronFieldCollection } from 'cron-parser';
import { TroupeError } from '../errors.js';

const HOUR_MS = 3_600_000;
const DAY_MS = 24 * HOUR_MS;
/** The span within which a zone's offset is taken to change at most once. */
const SPAN_MS = 2 * DAY_MS;
const DEFAULT_TZ = 'UTC';
/** Where compileCron probes for a first tick: any fixed instant works, since a pattern without a year field repeats. */
const COMPILE_PROBE_MS = 0;
/** windowStart gives up looking back past this; a compiled schedule fires at least every 8 years (29 February). */
const MAX_LOOK_BACK_MS = 1_000 * 365 * DAY_MS;

/** A validated cron schedule in a time zone. */
export interface CronSchedule {
  /** The expression, trimmed and single-spaced. */
  readonly expression: string;
  /** The IANA zone name as given (default 'UTC'). */
  readonly tz: string;
  /** 5, or 6 when the expression has a leading seconds field. */
  readonly fields: 5 | 6;
  /** The first tick strictly after `afterMs` (epoch ms). Always returns a finite number, or throws INVALID_CRON for an expression that never fires (e.g. '0 0 30 2 *' — check this at compile time). */
  next(afterMs: number): number;
  /** Ticks t with fromMs < t <= toMs, ascending, at most `limit` (stop early). */
  between(fromMs: number, toMs: number, limit: number): number[];
}

/**
 * Validates and compiles. Throws TroupeError INVALID_TIMEZONE (bad zone, checked first) or
 * INVALID_CRON (not a string, not 5 or 6 whitespace-separated fields, `@` aliases, hashed `H`
 * values, or cron-parser rejects it; the message quotes the expression and includes cron-parser's
 * reason).
 */
export function compileCron(expression: unknown, tz?: unknown): CronSchedule {
  const zone = assertTimeZone(tz === undefined ? DEFAULT_TZ : tz);
  const { normalized, fields } = splitFields(expression);
  const quoted = JSON.stringify(normalized);

  let parsed: CronFieldCollection;
  try {
    // Parsing here surfaces syntax and range errors (and '0 0 30 2 *', which cron-parser rejects as
    // an impossible day of month) before the schedule is stored. The expanded fields are read-only,
    // so every next() call can share them instead of parsing again.
    parsed = CronExpressionParser.parse(normalized, { currentDate: COMPILE_PROBE_MS, tz: 'UTC' }).fields;
  } catch (error) {
    throw new TroupeError('INVALID_CRON', `invalid cron expression ${quoted}: ${reasonOf(error)}`, { cause: error });
  }

  const everyHour = parsed.hour.values.length === 24;
  const offsetOf = offsetReader(zone);

  /** The first wall-clock tick at or after `wallMs` (local time written as if it were UTC). */
  function firstWallFrom(wallMs: number): number {
    // cron-parser returns ticks strictly after currentDate, and ticks fall on whole seconds, so
    // starting 1 ms earlier makes the bound inclusive.
    return new CronExpression(parsed, { currentDate: wallMs - 1, tz: 'UTC' }).next().toDate().getTime();
  }

  /**
   * The stretch of time from `cursor` that keeps one offset: its offset, where it ends (the next
   * change, or SPAN_MS on), and the change that began it if that was within SPAN_MS before `cursor`.
   * Offsets are assumed to change at most once in any SPAN_MS.
   */
  function segmentAt(cursor: number): Segment {
    const offset = offsetOf(cursor);
    const earlier = offsetOf(cursor - SPAN_MS);
    const later = offsetOf(cursor + SPAN_MS);
    return {
      offset,
      end: later === offset ? cursor + SPAN_MS : changeIn(offsetOf, cursor, cursor + SPAN_MS),
      change: earlier === offset ? null : { at: changeIn(offsetOf, cursor - SPAN_MS, cursor), from: earlier },
    };
  }

  function nextAfter(afterMs: number): number {
    if (typeof afterMs !== 'number' || !Number.isFinite(afterMs)) {
      throw new TroupeError('INVALID_INPUT', `cron ${quoted}: next() needs a finite epoch ms (got ${show(afterMs)})`);
    }
    // Ticks fall on whole seconds, so "after afterMs" and "after its whole millisecond" agree.
    const after = Math.floor(afterMs);
    try {
      // Walk forward one constant-offset stretch at a time; within one, instants and wall times keep order.
      for (let cursor = after; ; ) {
        const { offset, end, change } = segmentAt(cursor);
        const earliest = Math.max(after + 1, cursor);
        let best = Infinity;
        // After clocks fall back, fixed-hour jobs skip the second pass of the repeated wall times.
        const secondPassEnd = change && change.from > offset && !everyHour ? change.at + change.from : -Infinity;
        const queryFrom = Math.max(earliest + offset, secondPassEnd);
        const wall = firstWallFrom(queryFrom);
        if (wall - offset < end) best = wall - offset;
        // After clocks spring forward, fixed-hour jobs run the skipped wall times shifted by the gap.
        if (change && change.from < offset && !everyHour) {
          const skipped = firstWallFrom(Math.max(change.at + change.from, earliest + change.from));
          if (skipped < change.at + offset) best = Math.min(best, skipped - change.from);
        }
        if (best !== Infinity) return best;
        // No wall tick lies in [queryFrom, wall), so no instant in [queryFrom + DAY, wall - DAY) can
        // be a tick whatever its offset; skip there when this stretch reaches it (sparse schedules).
        cursor = end >= queryFrom + DAY_MS ? Math.max(end, wall - DAY_MS) : end;
      }
    } catch (error) {
      throw new TroupeError('INVALID_CRON', `cron expression ${quoted} has no tick after ${show(afterMs)}: ${reasonOf(error)}`, { cause: error });
    }
  }

  // An expression cron-parser accepts can still never fire; finding one tick now proves it fires forever.
  nextAfter(COMPILE_PROBE_MS);

  return Object.freeze({
    expression: normalized,
    tz: zone,
    fields,
    next: nextAfter,
    between(fromMs: number, toMs: number, limit: number): number[] {
      const ticks: number[] = [];
      const max = Math.floor(limit);
      // The limit is checked before each next() so a full page costs no extra lookup.
      for (let tick = fromMs; ticks.length < max; ) {
        tick = nextAfter(tick);
        if (tick > toMs) break;
        ticks.push(tick);
      }
      return ticks;
    },
  });
}

/** Throws INVALID_TIMEZONE unless `tz` is a string naming a zone Intl knows. Returns it. */
export function assertTimeZone(tz: unknown, where = 'tz'): string {
  if (typeof tz !== 'string' || tz === '') {
    throw new TroupeError('INVALID_TIMEZONE', `${where}: a time zone must be a non-empty IANA zone name (got ${show(tz)})`);
  }
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: tz });
  } catch (error) {
    if (error instanceof RangeError) {
      throw new TroupeError('INVALID_TIMEZONE', `${where}: unknown time zone ${JSON.stringify(tz)}`, { cause: error });
    }
    throw error;
  }
  return tz;
}

/** The ISO-8601 UTC string of a tick, as used in idempotency keys `schedule:<id>:<tick ISO>`. */
export function tickIso(ms: number): string {
  if (typeof ms !== 'number' || !Number.isFinite(ms)) {
    throw new TroupeError('INVALID_INPUT', `a tick must be a finite epoch ms (got ${show(ms)})`);
  }
  return new Date(ms).toISOString();
}

/**
 * A daily reset: 'HH:MM' (24h) in a zone → a CronSchedule firing daily at that wall time. Throws
 * INVALID_OPTIONS for a malformed 'HH:MM' and INVALID_TIMEZONE for a bad zone (checked first, as
 * compileCron does).
 */
export function dailyAt(hhmm: unknown, tz?: unknown): CronSchedule {
  const zone = assertTimeZone(tz === undefined ? DEFAULT_TZ : tz);
  const match = typeof hhmm === 'string' ? /^([01]\d|2[0-3]):([0-5]\d)$/.exec(hhmm) : null;
  if (!match) throw new TroupeError('INVALID_OPTIONS', `a daily reset time must be 'HH:MM' in 24-hour time (got ${show(hhmm)})`);
  return compileCron(`${Number(match[2])} ${Number(match[1])} * * *`, zone);
}

/**
 * The start of the daily window containing `nowMs`: the latest reset tick <= nowMs (the previous
 * tick). Meant for daily schedules; any schedule works, at a cost that grows with its ticks per day.
 */
export function windowStart(daily: CronSchedule, nowMs: number): number {
  // Only next() is needed: look back a little over one day (a DST day lasts up to 25 hours), doubling
  // for a schedule whose previous tick is further back.
  for (let lookBack = DAY_MS + 2 * HOUR_MS; lookBack <= MAX_LOOK_BACK_MS; lookBack *= 2) {
    let tick = daily.next(nowMs - lookBack);
    if (tick > nowMs) continue;
    for (let following = daily.next(tick); following <= nowMs; following = daily.next(tick)) tick = following;
    return tick;
  }
  throw new TroupeError('INVALID_CRON', `cron expression ${JSON.stringify(daily.expression)} has no tick at or before ${show(nowMs)}`);
}

/** A stretch of time with one UTC offset (see segmentAt). */
interface Segment {
  offset: number;
  end: number;
  change: { at: number; from: number } | null;
}

/** The instant (to the second) the offset changes in (lo, hi], given that it differs at the two ends. */
function changeIn(offsetOf: (ms: number) => number, lo: number, hi: number): number {
  const before = offsetOf(lo);
  let low = Math.floor(lo / 1_000);
  let high = Math.ceil(hi / 1_000);
  while (high - low > 1) {
    const mid = Math.floor((low + high) / 2);
    if (offsetOf(mid * 1_000) === before) low = mid;
    else high = mid;
  }
  return high * 1_000;
}

/** Splits an expression into its fields, rejecting what cron-parser would silently accept or randomise. */
function splitFields(expression: unknown): { normalized: string; fields: 5 | 6 } {
  if (typeof expression !== 'string') {
    throw new TroupeError('INVALID_CRON', `a cron expression must be a string (got ${show(expression)})`);
  }
  const atoms = expression.trim().split(/\s+/).filter((atom) => atom !== '');
  const normalized = atoms.join(' ');
  const quoted = JSON.stringify(normalized);
  // cron-parser expands '@daily' and friends itself; they are refused so stored schedules keep one form.
  if (atoms.length === 1 && atoms[0]!.startsWith('@')) {
    throw new TroupeError('INVALID_CRON', `invalid cron expression ${quoted}: '@' aliases are not supported; write the 5 fields (e.g. "0 0 * * *" for @daily)`);
  }
  // cron-parser pads fewer fields with defaults (so '' means every minute) instead of rejecting them.
  if (atoms.length !== 5 && atoms.length !== 6) {
    throw new TroupeError('INVALID_CRON', `invalid cron expression ${quoted}: it has ${atoms.length} fields; expected 5 (minute hour day-of-month month day-of-week) or 6 (a leading seconds field)`);
  }
  // cron-parser draws an unseeded random value for each 'H' on every parse, so ticks would differ
  // from one next() call to the next. An 'H' next to letters is part of a name such as 'THU'.
  if (atoms.some((atom) => /(?<![A-Za-z])H(?![A-Za-z])/.test(atom))) {
    throw new TroupeError('INVALID_CRON', `invalid cron expression ${quoted}: hashed 'H' values are not supported`);
  }
  return { normalized, fields: atoms.length === 6 ? 6 : 5 };
}

/**
 * A reader of the zone's UTC offset (ms, east positive) at an instant, from Intl's local date and
 * time. The formatter is built once per schedule; it holds no state between calls.
 */
function offsetReader(tz: string): (ms: number) => number {
  const format = new Intl.DateTimeFormat('en-US', {
    timeZone: tz,
    hourCycle: 'h23',
    year: 'numeric',
    month: 'numeric',
    day: 'numeric',
    hour: 'numeric',
    minute: 'numeric',
    second: 'numeric',
  });
  return (ms) => {
    // Intl shows whole seconds, so compare against the whole second too.
    const instant = Math.floor(ms / 1_000) * 1_000;
    const part: Partial<Record<Intl.DateTimeFormatPartTypes, number>> = {};
    for (const { type, value } of format.formatToParts(instant)) part[type] = Number(value);
    const wall = new Date(0);
    // setUTCFullYear, unlike Date.UTC, does not read years 0-99 as 1900-1999.
    wall.setUTCFullYear(part.year!, part.month! - 1, part.day!);
    wall.setUTCHours(part.hour!, part.minute!, part.second!, 0);
    return wall.getTime() - instant;
  };
}

function reasonOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** A short, safe rendering of any value for an error message. */
function show(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (value === null || (typeof value !== 'object' && typeof value !== 'function')) return String(value);
  return Array.isArray(value) ? 'an array' : `a ${typeof value}`;
}
