/**
 * What an attempt's outcome becomes on the wire: a value or a thrown error turned into a
 * {@link WireResult} the host can store, and log fields made plain. Nothing here throws.
 */
import { basename } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isAgentError } from './agent.js';
import { describeUnserializable, messageOf, Report, type AgentResult, type WireError, type WireResult } from './wire.js';

const STACK_LIMIT = 2_000;

/**
 * Fields of a log line, made storable if they are not: a JSON round trip (BigInts as decimal
 * strings; functions and symbols dropped), else one field saying what could not be stored.
 */
export function safeFields(fields: Record<string, unknown>): Record<string, unknown> {
  const problem = describeUnserializable(fields, 'fields');
  if (problem === undefined && typeof fields === 'object' && fields !== null && !Array.isArray(fields)) return fields;
  try {
    const copy: unknown = JSON.parse(JSON.stringify(fields, (_key, value: unknown) => (typeof value === 'bigint' ? value.toString() : value)));
    if (typeof copy === 'object' && copy !== null && !Array.isArray(copy) && describeUnserializable(copy) === undefined) return copy as Record<string, unknown>;
  } catch {
    // Below: what could not be stored, instead of the fields.
  }
  return { unserializable: problem ?? 'fields must be an object' };
}

const RESULT_KINDS = new Set(['success', 'fork', 'fail', 'sleep']);

/**
 * Ends `attempt` through `end` with what its agent returned: at once for a plain value, once it
 * settles for a thenable. Only an object's `then` is read, so a primitive (the common result) costs
 * no lookup. Reading `then`, or calling it, is agent code too: a Proxy's trap or a getter may throw.
 */
export function settle<A>(value: unknown, attempt: A, end: (attempt: A, kind: number, payload: unknown) => void): void {
  if (typeof value === 'object' && value !== null) {
    let then: unknown;
    try {
      then = (value as { then?: unknown }).then;
    } catch (error) {
      return end(attempt, Report.END, unreadableResult(error));
    }
    if (typeof then === 'function') {
      try {
        (then as PromiseLike<unknown>['then']).call(
          value,
          (resolved) => end(attempt, ...endReportOf(resolved)),
          (error: unknown) => end(attempt, Report.END, { ok: false, error: toWireError(error) } satisfies WireResult),
        );
      } catch (error) {
        end(attempt, Report.END, { ok: false, error: toWireError(error) } satisfies WireResult);
      }
      return;
    }
  }
  end(attempt, ...endReportOf(value));
}

/**
 * The report of an agent's return value: a plain value is success with that output (the common
 * case, sent as the bare value); a result object, or a value that cannot be stored, is a
 * {@link WireResult}.
 */
export function endReportOf(value: unknown): [kind: number, payload: unknown] {
  try {
    if (typeof value === 'object' && value !== null && RESULT_KINDS.has((value as { kind?: unknown }).kind as string)) return [Report.END, toResult(value)];
    const problem = describeUnserializable(value, 'result.output');
    return problem ? [Report.END, invalidResult(problem)] : [Report.OUTPUT, value];
  } catch (error) {
    // Its `kind` (or another field the result's shape is checked by) could not be read.
    return [Report.END, unreadableResult(error)];
  }
}

/** The end of an attempt whose returned value could not be read (a Proxy whose traps throw, a getter that throws). */
export function unreadableResult(error: unknown): WireResult {
  return invalidResult(`the agent returned a value that could not be read: ${messageOf(error)}`);
}

export function toResult(value: unknown): WireResult {
  let result: AgentResult;
  if (typeof value === 'object' && value !== null && RESULT_KINDS.has((value as { kind?: unknown }).kind as string)) {
    const shapeProblem = checkResultShape(value as AgentResult);
    if (shapeProblem) return invalidResult(shapeProblem);
    result = value as AgentResult;
  } else {
    result = value === undefined ? { kind: 'success' } : { kind: 'success', output: value };
  }
  const problem = describeUnserializable(result, 'result');
  if (problem) return invalidResult(problem);
  return { ok: true, result };
}

function checkResultShape(result: AgentResult): string | undefined {
  const optionalString = (name: 'summary' | 'branch' | 'rev') => {
    const v = (result as Record<string, unknown>)[name];
    return v === undefined || typeof v === 'string' ? undefined : `result.${name} must be a string`;
  };
  if (result.kind === 'fork' && (typeof result.branch !== 'string' || typeof result.rev !== 'string')) {
    return "a { kind: 'fork' } result needs string branch and rev";
  }
  if (result.kind === 'sleep' && !(Number.isInteger(result.wakeAfterMs) && result.wakeAfterMs >= 0)) {
    return "a { kind: 'sleep' } result needs wakeAfterMs, a non-negative integer";
  }
  return optionalString('summary') ?? optionalString('branch') ?? optionalString('rev');
}

/** An end saying the agent's result cannot be stored: `message` says why. */
export function invalidResult(message: string): WireResult {
  return { ok: false, error: { code: 'INVALID_RESULT', message, retryable: false, fault: 'agent' } };
}

/** A TypeScript agent met a thread where tsx, its loader, is not installed. */
export class TypeScriptLoaderMissing extends Error {
  /** The agent module's path. */
  readonly path: string;

  constructor(path: string, options?: ErrorOptions) {
    super(`tsx is not installed: it loads TypeScript agents such as ${path}`, options);
    this.name = 'TypeScriptLoaderMissing';
    this.path = path;
  }
}

/** Why an agent module did not load, naming the module; never throws, whatever was thrown. */
export function loadError(agent: string, module: string, error: unknown): WireError {
  const path = pathOf(module);
  try {
    if (error instanceof TypeScriptLoaderMissing) {
      const message = `agent ${agent} is TypeScript (${basename(error.path)}): install tsx (npm i -D tsx) to run .ts agents without a build step, or register its compiled .js`;
      return { code: 'AGENT_LOAD_FAILED', message, retryable: false, fault: 'agent' };
    }
    const message = messageOf(error);
    // A loader's own message (tsx, a SyntaxError's frame) may name the file already.
    const where = message.includes(path) ? message : `${path}: ${message}`;
    return { code: 'AGENT_LOAD_FAILED', message: `agent ${agent} failed to load: ${where}`, retryable: false, fault: 'agent', stack: stackOf(error) };
  } catch {
    // What was thrown cannot even be read (a Proxy whose traps throw).
    return { code: 'AGENT_LOAD_FAILED', message: `agent ${agent} failed to load: ${path}: it threw a value that could not be read`, retryable: false, fault: 'agent' };
  }
}

/** A module's file path, for a `file:` URL; else the URL as given. */
function pathOf(module: string): string {
  try {
    return fileURLToPath(module);
  } catch {
    return module;
  }
}

export function toWireError(error: unknown): WireError {
  try {
    return wireErrorOf(error);
  } catch {
    // What was thrown cannot even be read (a Proxy whose traps throw, a getter that throws).
    return { code: 'AGENT_ERROR', message: 'the agent threw a value that could not be read', retryable: true, fault: 'agent' };
  }
}

function wireErrorOf(error: unknown): WireError {
  if (isAgentError(error)) {
    return { code: error.code, message: error.message, retryable: error.retryable, fault: 'agent', stack: stackOf(error) };
  }
  if (error instanceof Error) {
    return { code: 'AGENT_ERROR', message: error.message || error.name, retryable: true, fault: 'agent', stack: stackOf(error) };
  }
  let message: string;
  try {
    message = `non-error thrown: ${JSON.stringify(error)}`;
  } catch {
    message = `non-error thrown: ${messageOf(error)}`;
  }
  return { code: 'AGENT_ERROR', message, retryable: true, fault: 'agent' };
}

function stackOf(error: unknown): string | undefined {
  return error instanceof Error && typeof error.stack === 'string' ? error.stack.slice(0, STACK_LIMIT) : undefined;
}
