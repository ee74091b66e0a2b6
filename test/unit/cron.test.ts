import { describe, expect, it } from 'vitest';
import { TroupeError, type TroupeErrorCode } from '../../src/errors.js';
import { assertTimeZone, compileCron, dailyAt, tickIso, windowStart, type CronSchedule } from '../../src/scheduler/cron.js';

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const at = (iso: string): number => Date.parse(iso);
const isoList = (ticks: number[]): string[] => ticks.map((t) => new Date(t).toISOString());

/** The TroupeError code `fn` throws (fails the test when it throws anything else, or nothing). */
function codeOf(fn: () => unknown): TroupeErrorCode {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(TroupeError);
    return (error as TroupeError).code;
  }
  throw new Error('expected a TroupeError, nothing was thrown');
}

function messageOf(fn: () => unknown): string {
  try {
    fn();
  } catch (error) {
    return (error as Error).message;
  }
  throw new Error('expected an error, nothing was thrown');
}

/** Ticks in the half-open local day [startMs, endMs). */
function ticksIn(schedule: CronSchedule, startMs: number, endMs: number): number[] {
  return schedule.between(startMs - 1, endMs - 1, 1_000);
}

describe('compileCron: accepted expressions', () => {
  it('compiles 5 fields, normalising whitespace', () => {
    const s = compileCron('  */15   9 * *\t1-5 ');
    expect(s.expression).toBe('*/15 9 * * 1-5');
    expect(s.fields).toBe(5);
    // 2026-01-05 is a Monday.
    expect(isoList(s.between(at('2026-01-05T00:00:00Z'), at('2026-01-05T23:59:59Z'), 10))).toEqual([
      '2026-01-05T09:00:00.000Z',
      '2026-01-05T09:15:00.000Z',
      '2026-01-05T09:30:00.000Z',
      '2026-01-05T09:45:00.000Z',
    ]);
  });

  it('compiles 6 fields with a leading seconds field', () => {
    const s = compileCron('30 */10 * * * *');
    expect(s.fields).toBe(6);
    expect(isoList(s.between(at('2026-01-01T00:00:00Z'), at('2026-01-01T00:25:00Z'), 10))).toEqual([
      '2026-01-01T00:00:30.000Z',
      '2026-01-01T00:10:30.000Z',
      '2026-01-01T00:20:30.000Z',
    ]);
  });

  it('accepts month and weekday names (an H inside THU is not a hash)', () => {
    const s = compileCron('0 12 * JAN THU');
    // 2026-01-01 is a Thursday.
    expect(s.next(at('2026-01-01T00:00:00Z'))).toBe(at('2026-01-01T12:00:00Z'));
  });

  it('defaults the zone to UTC', () => {
    const s = compileCron('0 9 * * *');
    expect(s.tz).toBe('UTC');
    expect(s.next(at('2026-06-01T00:00:00Z'))).toBe(at('2026-06-01T09:00:00Z'));
  });

  it('keeps the zone name as given', () => {
    expect(compileCron('0 9 * * *', 'US/Eastern').tz).toBe('US/Eastern');
  });

  it('returns a frozen schedule with no state carried between calls', () => {
    const s = compileCron('0 * * * *', 'Europe/Berlin');
    expect(Object.isFrozen(s)).toBe(true);
    const later = s.next(at('2026-10-25T05:10:00Z'));
    const earlier = s.next(at('2026-10-25T00:10:00Z'));
    expect(new Date(earlier).toISOString()).toBe('2026-10-25T01:00:00.000Z');
    expect(new Date(later).toISOString()).toBe('2026-10-25T06:00:00.000Z');
    expect(s.next(at('2026-10-25T05:10:00Z'))).toBe(later);
  });
});

describe('compileCron: rejected expressions', () => {
  it.each([
    ['4 fields', '* * * *'],
    ['7 fields', '0 * * * * * *'],
    ['an @ alias', '@daily'],
    ['an @ alias with spaces', ' @hourly '],
    ['an empty string', ''],
    ['only whitespace', '   '],
  ])('rejects %s with INVALID_CRON', (_label, expression) => {
    expect(codeOf(() => compileCron(expression))).toBe('INVALID_CRON');
  });

  it.each([[42], [null], [undefined], [{}], [['0', '*', '*', '*', '*']]])('rejects the non-string %j with INVALID_CRON', (expression) => {
    expect(codeOf(() => compileCron(expression))).toBe('INVALID_CRON');
  });

  it.each([['60 * * * *'], ['0 24 * * *'], ['0 0 0 * *'], ['0 0 * 13 *'], ['0 0 * * 8'], ['61 0 0 * * *'], ['nope * * * *']])(
    'rejects %s (out of range or malformed) with INVALID_CRON',
    (expression) => {
      expect(codeOf(() => compileCron(expression))).toBe('INVALID_CRON');
    },
  );

  it("quotes the expression and gives cron-parser's reason", () => {
    const message = messageOf(() => compileCron(' 60  * * * * '));
    expect(message).toContain('"60 * * * *"');
    expect(message).toContain('expected range 0-59');
  });

  it('names the field count it found', () => {
    expect(messageOf(() => compileCron('* * * *'))).toContain('4 fields');
  });

  it.each([['0 0 30 2 *'], ['0 0 31 4 *'], ['0 0 0 30 2 *']])('rejects %s, which never fires, with INVALID_CRON', (expression) => {
    expect(codeOf(() => compileCron(expression))).toBe('INVALID_CRON');
  });

  it('rejects hashed H values, which cron-parser would randomise on every parse', () => {
    expect(codeOf(() => compileCron('H * * * *'))).toBe('INVALID_CRON');
    expect(codeOf(() => compileCron('0 H(0-5) * * *'))).toBe('INVALID_CRON');
  });
});

describe('time zones', () => {
  it.each([['Mars/Olympus'], [''], [42], [null], ['+01:00']])('rejects %j with INVALID_TIMEZONE', (tz) => {
    expect(codeOf(() => compileCron('0 * * * *', tz))).toBe('INVALID_TIMEZONE');
    expect(codeOf(() => assertTimeZone(tz))).toBe('INVALID_TIMEZONE');
  });

  it('checks the zone before the expression', () => {
    expect(codeOf(() => compileCron('not a cron', 'Mars/Olympus'))).toBe('INVALID_TIMEZONE');
    expect(codeOf(() => compileCron(7, 42))).toBe('INVALID_TIMEZONE');
  });

  it('assertTimeZone returns the zone and prefixes its message with where', () => {
    expect(assertTimeZone('Europe/Berlin')).toBe('Europe/Berlin');
    expect(messageOf(() => assertTimeZone('Mars/Olympus', 'schedule nightly'))).toMatch(/^schedule nightly: .*Mars\/Olympus/);
  });

  it('reads wall time in the zone, not in UTC', () => {
    // 09:00 in Tokyo (UTC+9, no DST) is midnight UTC; in Kolkata (UTC+5:30) it is 03:30 UTC.
    expect(compileCron('0 9 * * *', 'Asia/Tokyo').next(at('2026-01-01T12:00:00Z'))).toBe(at('2026-01-02T00:00:00Z'));
    expect(compileCron('0 9 * * *', 'Asia/Kolkata').next(at('2026-01-01T12:00:00Z'))).toBe(at('2026-01-02T03:30:00Z'));
  });
});

describe('next and between', () => {
  const hourly = compileCron('0 * * * *');

  it('next is strictly after: exactly on a tick gives the following one', () => {
    expect(hourly.next(at('2026-01-01T05:00:00Z'))).toBe(at('2026-01-01T06:00:00Z'));
    expect(hourly.next(at('2026-01-01T04:59:59.999Z'))).toBe(at('2026-01-01T05:00:00Z'));
    expect(hourly.next(at('2026-01-01T05:00:00.001Z'))).toBe(at('2026-01-01T06:00:00Z'));
  });

  it('next is strictly after with a seconds field, and for fractional ms', () => {
    const everySecond = compileCron('* * * * * *');
    expect(everySecond.next(at('2026-01-01T00:00:00Z'))).toBe(at('2026-01-01T00:00:01Z'));
    expect(everySecond.next(at('2026-01-01T00:00:00Z') + 999.5)).toBe(at('2026-01-01T00:00:01Z'));
    expect(everySecond.next(at('2026-01-01T00:00:01Z') - 0.5)).toBe(at('2026-01-01T00:00:01Z'));
  });

  it('next rejects a non-finite instant', () => {
    expect(codeOf(() => hourly.next(Number.NaN))).toBe('INVALID_INPUT');
    expect(codeOf(() => hourly.next(Number.POSITIVE_INFINITY))).toBe('INVALID_INPUT');
  });

  it('next finds sparse ticks years ahead', () => {
    const leapDay = compileCron('0 12 29 2 *', 'America/New_York');
    // 2100 is not a leap year.
    expect(leapDay.next(at('2096-03-01T00:00:00Z'))).toBe(at('2104-02-29T17:00:00Z'));
  });

  it('between excludes fromMs and includes toMs', () => {
    expect(isoList(hourly.between(at('2026-01-01T01:00:00Z'), at('2026-01-01T03:00:00Z'), 10))).toEqual([
      '2026-01-01T02:00:00.000Z',
      '2026-01-01T03:00:00.000Z',
    ]);
  });

  it('between stops at the limit', () => {
    expect(isoList(hourly.between(at('2026-01-01T00:30:00Z'), at('2026-01-02T00:00:00Z'), 3))).toEqual([
      '2026-01-01T01:00:00.000Z',
      '2026-01-01T02:00:00.000Z',
      '2026-01-01T03:00:00.000Z',
    ]);
    expect(hourly.between(at('2026-01-01T00:30:00Z'), at('2026-01-02T00:00:00Z'), 0)).toEqual([]);
  });

  it('between is empty when no tick falls in the range', () => {
    expect(hourly.between(at('2026-01-01T01:00:00Z'), at('2026-01-01T01:59:59.999Z'), 10)).toEqual([]);
    expect(hourly.between(at('2026-01-01T03:00:00Z'), at('2026-01-01T01:00:00Z'), 10)).toEqual([]);
  });
});

describe('spring forward (the skipped hour)', () => {
  it('Europe/Berlin: a daily job in the skipped hour fires once, shifted by the gap', () => {
    const s = compileCron('30 2 * * *', 'Europe/Berlin');
    // Local 2026-03-29 runs 23:00Z to 22:00Z; 02:30 does not exist, 03:30 CEST is 01:30Z.
    expect(isoList(ticksIn(s, at('2026-03-28T23:00:00Z'), at('2026-03-29T22:00:00Z')))).toEqual(['2026-03-29T01:30:00.000Z']);
    expect(isoList(s.between(at('2026-03-27T12:00:00Z'), at('2026-03-30T12:00:00Z'), 10))).toEqual([
      '2026-03-28T01:30:00.000Z',
      '2026-03-29T01:30:00.000Z',
      '2026-03-30T00:30:00.000Z',
    ]);
  });

  it('Europe/Berlin: next from just after the jump still finds the shifted tick', () => {
    // cron-parser's own tz handling skips to the next day from here.
    const s = compileCron('30 2 * * *', 'Europe/Berlin');
    expect(s.next(at('2026-03-29T01:10:00Z'))).toBe(at('2026-03-29T01:30:00Z'));
    expect(s.next(at('2026-03-29T01:30:00Z'))).toBe(at('2026-03-30T00:30:00Z'));
  });

  it('America/New_York: a daily job in the skipped hour fires once, shifted by the gap', () => {
    const s = compileCron('30 2 * * *', 'America/New_York');
    // Local 2026-03-08 runs 05:00Z to 04:00Z next day; 03:30 EDT is 07:30Z.
    expect(isoList(ticksIn(s, at('2026-03-08T05:00:00Z'), at('2026-03-09T04:00:00Z')))).toEqual(['2026-03-08T07:30:00.000Z']);
  });

  it('Australia/Lord_Howe (a 30-minute shift): a daily job at the jump still fires that day', () => {
    // 02:00 jumps to 02:30 (+11) on 2026-10-04, i.e. 15:30Z on the 3rd.
    const s = compileCron('0 2 * * *', 'Australia/Lord_Howe');
    expect(isoList(s.between(at('2026-10-02T00:00:00Z'), at('2026-10-05T00:00:00Z'), 10))).toEqual([
      '2026-10-02T15:30:00.000Z',
      '2026-10-03T15:30:00.000Z',
      '2026-10-04T15:00:00.000Z',
    ]);
  });

  it.each([
    ['Europe/Berlin', '2026-03-28T23:00:00Z', '2026-03-29T22:00:00Z', '2026-03-29T01:00:00Z'],
    ['America/New_York', '2026-03-08T05:00:00Z', '2026-03-09T04:00:00Z', '2026-03-08T07:00:00Z'],
  ])('%s: an hourly job skips the hour that does not exist (23 ticks)', (tz, dayStart, dayEnd, jumpAt) => {
    const ticks = ticksIn(compileCron('0 * * * *', tz), at(dayStart), at(dayEnd));
    expect(ticks).toHaveLength(23);
    // One tick per real hour: the skipped 02:00 is neither run nor shifted onto a second 03:00.
    for (let i = 1; i < ticks.length; i++) expect(ticks[i]! - ticks[i - 1]!).toBe(HOUR);
    expect(ticks).toContain(at(jumpAt));
    expect(new Set(ticks).size).toBe(ticks.length);
  });

  it('several fixed times in the skipped hour each fire once, shifted', () => {
    const s = compileCron('*/20 2 * * *', 'Europe/Berlin');
    expect(isoList(ticksIn(s, at('2026-03-28T23:00:00Z'), at('2026-03-29T22:00:00Z')))).toEqual([
      '2026-03-29T01:00:00.000Z',
      '2026-03-29T01:20:00.000Z',
      '2026-03-29T01:40:00.000Z',
    ]);
  });
});

describe('fall back (the repeated hour)', () => {
  it('Europe/Berlin: a daily job in the repeated hour fires once, on the first pass', () => {
    const s = compileCron('30 2 * * *', 'Europe/Berlin');
    // Local 2026-10-25 runs 22:00Z to 23:00Z next day; 02:30 CEST is 00:30Z, 02:30 CET would be 01:30Z.
    expect(isoList(ticksIn(s, at('2026-10-24T22:00:00Z'), at('2026-10-25T23:00:00Z')))).toEqual(['2026-10-25T00:30:00.000Z']);
    // From inside the second pass, the next tick is the following day.
    expect(s.next(at('2026-10-25T01:10:00Z'))).toBe(at('2026-10-26T01:30:00Z'));
  });

  it('America/New_York: a daily job in the repeated hour fires once, on the first pass', () => {
    const s = compileCron('30 1 * * *', 'America/New_York');
    // Local 2026-11-01 runs 04:00Z to 05:00Z next day; 01:30 EDT is 05:30Z, 01:30 EST would be 06:30Z.
    expect(isoList(ticksIn(s, at('2026-11-01T04:00:00Z'), at('2026-11-02T05:00:00Z')))).toEqual(['2026-11-01T05:30:00.000Z']);
    expect(s.next(at('2026-11-01T05:30:00Z'))).toBe(at('2026-11-02T06:30:00Z'));
  });

  it.each([
    ['Europe/Berlin', '2026-10-24T22:00:00Z', '2026-10-25T23:00:00Z', ['2026-10-25T00:00:00.000Z', '2026-10-25T01:00:00.000Z', '2026-10-25T02:00:00.000Z']],
    ['America/New_York', '2026-11-01T04:00:00Z', '2026-11-02T05:00:00Z', ['2026-11-01T05:00:00.000Z', '2026-11-01T06:00:00.000Z', '2026-11-01T07:00:00.000Z']],
  ])('%s: an hourly job runs once per real hour (25 ticks)', (tz, dayStart, dayEnd, aroundChange) => {
    const ticks = ticksIn(compileCron('0 * * * *', tz), at(dayStart), at(dayEnd));
    expect(ticks).toHaveLength(25);
    for (let i = 1; i < ticks.length; i++) expect(ticks[i]! - ticks[i - 1]!).toBe(HOUR);
    expect(isoList(ticks)).toEqual(expect.arrayContaining(aroundChange));
  });
});

describe('matches a brute-force reading of the DST policy', () => {
  /** Wall-clock fields of an instant in `tz`, read straight from Intl. */
  function wallReader(tz: string): (t: number) => { hour: number; minute: number; key: string; wallMs: number } {
    const format = new Intl.DateTimeFormat('en-US', { timeZone: tz, hourCycle: 'h23', year: 'numeric', month: 'numeric', day: 'numeric', hour: 'numeric', minute: 'numeric' });
    return (t) => {
      const p = Object.fromEntries(format.formatToParts(t).map((part) => [part.type, Number(part.value)]));
      return { hour: p.hour!, minute: p.minute!, key: `${p.year}-${p.month}-${p.day} ${p.hour}:${p.minute}`, wallMs: Date.UTC(p.year!, p.month! - 1, p.day!, p.hour!, p.minute!) };
    };
  }

  /**
   * Minute by minute: every-hour jobs fire whenever the wall time matches; fixed-hour jobs fire on
   * a wall time's first pass only, and at (jump + how far into the gap) for wall times a jump skipped.
   */
  function bruteForce(tz: string, matches: (hour: number, minute: number) => boolean, everyHour: boolean, fromMs: number, toMs: number): number[] {
    const wall = wallReader(tz);
    const ticks = new Set<number>();
    const seen = new Set<string>();
    let previous: ReturnType<typeof wall> | null = null;
    for (let t = fromMs - 3 * HOUR; t <= toMs; t += MINUTE) {
      const w = wall(t);
      if (previous && !everyHour) {
        for (let skipped = previous.wallMs + MINUTE; skipped < w.wallMs; skipped += MINUTE) {
          const d = new Date(skipped);
          if (matches(d.getUTCHours(), d.getUTCMinutes())) ticks.add(t + (skipped - previous.wallMs - MINUTE));
        }
      }
      if (matches(w.hour, w.minute) && (everyHour || !seen.has(w.key))) ticks.add(t);
      seen.add(w.key);
      previous = w;
    }
    return [...ticks].filter((t) => t > fromMs && t <= toMs).sort((a, b) => a - b);
  }

  const cases: [string, (hour: number, minute: number) => boolean, boolean][] = [
    ['30 2 * * *', (h, m) => h === 2 && m === 30, false],
    ['30 1 * * *', (h, m) => h === 1 && m === 30, false],
    ['*/20 2 * * *', (h, m) => h === 2 && m % 20 === 0, false],
    ['45 2,3 * * *', (h, m) => (h === 2 || h === 3) && m === 45, false],
    ['30 * * * *', (_h, m) => m === 30, true],
    ['*/7 * * * *', (_h, m) => m % 7 === 0, true],
  ];
  const windows: [string, string][] = [
    ['Europe/Berlin', '2026-03-28T12:00:00Z'],
    ['Europe/Berlin', '2026-10-24T12:00:00Z'],
    ['America/New_York', '2026-03-07T12:00:00Z'],
    ['America/New_York', '2026-10-31T12:00:00Z'],
    ['Australia/Lord_Howe', '2026-04-04T00:00:00Z'],
    ['Australia/Lord_Howe', '2026-10-03T00:00:00Z'],
  ];

  it.each(windows)('%s from %s: between and next agree with it over two days', (tz, start) => {
    const fromMs = at(start);
    const toMs = fromMs + 2 * 24 * HOUR;
    for (const [expression, matches, everyHour] of cases) {
      const schedule = compileCron(expression, tz);
      const expected = bruteForce(tz, matches, everyHour, fromMs, toMs);
      expect(isoList(schedule.between(fromMs, toMs, 1_000)), `${expression} in ${tz}`).toEqual(isoList(expected));
      // next() from points off the ticks, including inside the gap or the repeated hour.
      for (let after = fromMs; after < toMs - 12 * HOUR; after += 17 * MINUTE + 13_001) {
        const want = expected.find((t) => t > after);
        if (want === undefined) break;
        expect(schedule.next(after), `${expression} in ${tz} after ${new Date(after).toISOString()}`).toBe(want);
      }
    }
  });
});

describe('tickIso', () => {
  it('renders a tick as ISO-8601 UTC with milliseconds', () => {
    expect(tickIso(at('2026-03-29T01:30:00Z'))).toBe('2026-03-29T01:30:00.000Z');
    expect(tickIso(0)).toBe('1970-01-01T00:00:00.000Z');
    expect(`schedule:nightly:${tickIso(compileCron('0 3 * * *', 'Asia/Tokyo').next(at('2026-01-01T00:00:00Z')))}`).toBe(
      'schedule:nightly:2026-01-01T18:00:00.000Z',
    );
  });

  it('rejects a non-finite instant', () => {
    expect(codeOf(() => tickIso(Number.NaN))).toBe('INVALID_INPUT');
  });
});

describe('dailyAt', () => {
  it("compiles 'HH:MM' to a daily expression in the zone", () => {
    const d = dailyAt('07:05', 'Europe/Berlin');
    expect(d.expression).toBe('5 7 * * *');
    expect(d.tz).toBe('Europe/Berlin');
    expect(d.next(at('2026-01-10T12:00:00Z'))).toBe(at('2026-01-11T06:05:00Z'));
  });

  it('defaults to UTC and accepts the ends of the day', () => {
    expect(dailyAt('00:00').tz).toBe('UTC');
    expect(dailyAt('00:00').expression).toBe('0 0 * * *');
    expect(dailyAt('23:59').next(at('2026-01-01T00:00:00Z'))).toBe(at('2026-01-01T23:59:00Z'));
  });

  it.each([['7:05'], ['24:00'], ['12:60'], ['12:5'], ['12:05:00'], [' 12:05'], ['noon'], [''], [1205], [undefined], [null]])(
    'rejects %j with INVALID_OPTIONS',
    (hhmm) => {
      expect(codeOf(() => dailyAt(hhmm, 'UTC'))).toBe('INVALID_OPTIONS');
    },
  );

  it('rejects a bad zone with INVALID_TIMEZONE', () => {
    expect(codeOf(() => dailyAt('03:00', 'Mars/Olympus'))).toBe('INVALID_TIMEZONE');
    expect(codeOf(() => dailyAt('03:00', ''))).toBe('INVALID_TIMEZONE');
  });
});

describe('windowStart', () => {
  it('is the latest reset at or before now', () => {
    const d = dailyAt('04:00');
    expect(windowStart(d, at('2026-05-10T12:00:00Z'))).toBe(at('2026-05-10T04:00:00Z'));
    expect(windowStart(d, at('2026-05-10T03:00:00Z'))).toBe(at('2026-05-09T04:00:00Z'));
  });

  it('starts the window exactly at the reset instant', () => {
    const d = dailyAt('04:00');
    expect(windowStart(d, at('2026-05-10T04:00:00Z'))).toBe(at('2026-05-10T04:00:00Z'));
    expect(windowStart(d, at('2026-05-10T04:00:00Z') - 1)).toBe(at('2026-05-09T04:00:00Z'));
  });

  it('follows a reset in the skipped hour (Europe/Berlin spring forward)', () => {
    const d = dailyAt('02:30', 'Europe/Berlin');
    // The 2026-03-29 reset happens at 03:30 CEST (01:30Z); that window lasts 23 hours.
    expect(windowStart(d, at('2026-03-29T01:29:59.999Z'))).toBe(at('2026-03-28T01:30:00Z'));
    expect(windowStart(d, at('2026-03-29T01:30:00Z'))).toBe(at('2026-03-29T01:30:00Z'));
    expect(windowStart(d, at('2026-03-30T00:29:59.999Z'))).toBe(at('2026-03-29T01:30:00Z'));
    expect(windowStart(d, at('2026-03-30T00:30:00Z'))).toBe(at('2026-03-30T00:30:00Z'));
  });

  it('follows a reset in the repeated hour (Europe/Berlin fall back): one 25-hour window', () => {
    const d = dailyAt('02:30', 'Europe/Berlin');
    expect(windowStart(d, at('2026-10-25T00:30:00Z'))).toBe(at('2026-10-25T00:30:00Z'));
    // The second 02:30 (01:30Z) does not start a new window.
    expect(windowStart(d, at('2026-10-25T01:30:00Z'))).toBe(at('2026-10-25T00:30:00Z'));
    expect(windowStart(d, at('2026-10-26T01:29:59.999Z'))).toBe(at('2026-10-25T00:30:00Z'));
    expect(windowStart(d, at('2026-10-26T01:30:00Z'))).toBe(at('2026-10-26T01:30:00Z'));
  });

  it('follows a midnight reset across America/New_York spring forward', () => {
    const d = dailyAt('00:00', 'America/New_York');
    // Midnight is 05:00Z before the change and 04:00Z after it.
    expect(windowStart(d, at('2026-03-08T12:00:00Z'))).toBe(at('2026-03-08T05:00:00Z'));
    expect(windowStart(d, at('2026-03-09T03:59:59.999Z'))).toBe(at('2026-03-08T05:00:00Z'));
    expect(windowStart(d, at('2026-03-09T04:00:00Z'))).toBe(at('2026-03-09T04:00:00Z'));
  });

  it('follows a midnight that does not exist (America/Santiago springs forward at 00:00)', () => {
    const d = dailyAt('00:00', 'America/Santiago');
    // 2026-09-06 00:00 -04 jumps to 01:00 -03 at 04:00Z; the reset fires then.
    expect(windowStart(d, at('2026-09-06T03:59:59.999Z'))).toBe(at('2026-09-05T04:00:00Z'));
    expect(windowStart(d, at('2026-09-06T04:00:00Z'))).toBe(at('2026-09-06T04:00:00Z'));
    expect(windowStart(d, at('2026-09-07T02:59:59.999Z'))).toBe(at('2026-09-06T04:00:00Z'));
    expect(windowStart(d, at('2026-09-07T03:00:00Z'))).toBe(at('2026-09-07T03:00:00Z'));
  });

  it('works for a schedule whose previous tick is more than a day back', () => {
    const monthly = compileCron('0 0 1 * *');
    expect(windowStart(monthly, at('2026-05-20T00:00:00Z'))).toBe(at('2026-05-01T00:00:00Z'));
  });
});
