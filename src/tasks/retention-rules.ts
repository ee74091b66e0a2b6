/**
 * Retention rules: how long settled tasks are kept, per state, for the runtime, an agent, or one
 * task (BullMQ's `removeOnComplete` / `removeOnFail` with `age` and `count`, pg-boss's
 * `deleteAfterSeconds`, Temporal's namespace retention). The background sweep that applies them
 * is retention.ts.
 */
import { TroupeError } from '../errors.js';
import type { TaskRetention } from '../store/records.js';

/** The states a task settles in, each with a rule of its own. */
export const SETTLED_STATES = ['done', 'failed', 'dropped', 'cancelled'] as const;
export type SettledState = (typeof SETTLED_STATES)[number];

/**
 * How long tasks settled in one state are kept: an age in ms (`Infinity`: for good), or
 * `{ ageMs, count }`: removed once older than `ageMs`, and beyond the `count` most recently
 * settled (per agent), whichever comes first. A side left out does not limit.
 */
export type RetentionRule = number | { ageMs?: number; count?: number };

/** An agent's rules, each replacing the runtime's for its state. */
export type RetentionPolicy = Partial<Record<SettledState, RetentionRule>>;

/** `createRuntime({ retention })`: the rules, and how often the background sweep applies them. */
export interface RuntimeRetention extends RetentionPolicy {
  /** How often the background sweep runs. @default 60_000 */
  sweepMs?: number;
  /**
   * How long the event log keeps events (ms; `Infinity`: for good). Older ones are removed by the
   * sweep; `events({ after })` with a cursor from before them rejects with CURSOR_EXPIRED. @default 30 days
   */
  eventsMs?: number;
}

/** A rule resolved: Infinity where it does not limit. */
export interface ResolvedRule {
  readonly ageMs: number;
  readonly count: number;
}
export type ResolvedPolicy = Readonly<Partial<Record<SettledState, ResolvedRule>>>;
export interface ResolvedRetention {
  readonly rules: Readonly<Record<SettledState, ResolvedRule>>;
  readonly sweepMs: number;
  readonly eventsMs: number;
}

const DAY = 86_400_000;
/** The defaults: done tasks for 7 days, the others for 30 (pg-boss keeps 7 days; failures are read later). */
export const DEFAULT_RETENTION: ResolvedRetention = Object.freeze({
  rules: Object.freeze({
    done: Object.freeze({ ageMs: 7 * DAY, count: Infinity }),
    failed: Object.freeze({ ageMs: 30 * DAY, count: Infinity }),
    dropped: Object.freeze({ ageMs: 30 * DAY, count: Infinity }),
    cancelled: Object.freeze({ ageMs: 30 * DAY, count: Infinity }),
  }),
  sweepMs: 60_000,
  eventsMs: 30 * DAY,
});

/** `createRuntime`'s `retention`, resolved over the defaults; null for `false` (nothing is removed in the background). */
export function resolveRuntimeRetention(value: unknown): ResolvedRetention | null {
  if (value === false) return null;
  if (value === undefined) return DEFAULT_RETENTION;
  const where = 'options.retention';
  const policy = policyOf(value, where, ['sweepMs', 'eventsMs']);
  const { sweepMs = DEFAULT_RETENTION.sweepMs, eventsMs = DEFAULT_RETENTION.eventsMs } = value as RuntimeRetention;
  if (!Number.isSafeInteger(sweepMs) || sweepMs < 1) throw invalid(`${where}.sweepMs must be a positive integer (ms)`);
  return Object.freeze({ rules: Object.freeze({ ...DEFAULT_RETENTION.rules, ...policy }), sweepMs, eventsMs: ageOf(eventsMs, `${where}.eventsMs`) });
}

/** An agent's `retention`, resolved (only the states it names); undefined when it names none. */
export function resolveAgentRetention(value: unknown, where: string): ResolvedPolicy | undefined {
  if (value === undefined) return undefined;
  return Object.freeze(policyOf(value, `${where}: retention`, []));
}

/** A task's own `retention`: ages only, in ms (`Infinity`: for good); a count belongs to an agent or the runtime. */
export function resolveTaskRetention(value: unknown, where: string): TaskRetention | undefined {
  if (value === undefined) return undefined;
  const out: TaskRetention = {};
  for (const [state, age] of entriesOf(value, where, [])) {
    if (typeof age === 'object' && age !== null) throw invalid(`${where}.${state} must be an age in ms: a count of tasks to keep is set on an agent or the runtime, not on one task`);
    out[state] = ageOf(age, `${where}.${state}`);
  }
  return Object.keys(out).length > 0 ? out : undefined;
}

function policyOf(value: unknown, where: string, extra: readonly string[]): Partial<Record<SettledState, ResolvedRule>> {
  const out: Partial<Record<SettledState, ResolvedRule>> = {};
  for (const [state, rule] of entriesOf(value, where, extra)) out[state] = ruleOf(rule, `${where}.${state}`);
  return out;
}

/** The [state, rule] entries of a policy object, its keys checked. */
function entriesOf(value: unknown, where: string, extra: readonly string[]): Array<[SettledState, unknown]> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw invalid(`${where} must be an object of rules per settled state (${SETTLED_STATES.join(', ')})${extra.length > 0 ? ', or false' : ''}`);
  const out: Array<[SettledState, unknown]> = [];
  for (const [key, rule] of Object.entries(value)) {
    if (extra.includes(key)) continue;
    if (!(SETTLED_STATES as readonly string[]).includes(key)) throw invalid(`${where}.${key} is not a settled state (${[...SETTLED_STATES, ...extra].join(', ')})`);
    if (rule !== undefined) out.push([key as SettledState, rule]);
  }
  return out;
}

function ruleOf(rule: unknown, where: string): ResolvedRule {
  if (typeof rule === 'number') return Object.freeze({ ageMs: ageOf(rule, where), count: Infinity });
  if (typeof rule !== 'object' || rule === null || Array.isArray(rule)) throw invalid(`${where} must be an age in ms or { ageMs?, count? }`);
  for (const key of Object.keys(rule)) if (key !== 'ageMs' && key !== 'count') throw invalid(`${where}.${key} is not a retention option (ageMs, count)`);
  const { ageMs, count } = rule as { ageMs?: unknown; count?: unknown };
  return Object.freeze({ ageMs: ageMs === undefined ? Infinity : ageOf(ageMs, `${where}.ageMs`), count: count === undefined ? Infinity : countOf(count, `${where}.count`) });
}

function ageOf(value: unknown, where: string): number {
  if (value === Infinity || (Number.isSafeInteger(value) && (value as number) >= 0)) return value as number;
  throw invalid(`${where} must be a non-negative integer of ms, or Infinity to keep for good`);
}

function countOf(value: unknown, where: string): number {
  if (value === Infinity || (Number.isSafeInteger(value) && (value as number) >= 0)) return value as number;
  throw invalid(`${where} must be a non-negative integer, or Infinity`);
}

function invalid(message: string): TroupeError {
  return new TroupeError('INVALID_OPTIONS', message);
}
