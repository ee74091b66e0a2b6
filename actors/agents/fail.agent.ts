/**
 * Built-in `fail` agent: fails on purpose, for tests and demos.
 * - `mode: 'throw'` (default) throws a retryable error;
 * - `mode: 'fatal'` throws `AgentError` with `retryable: false`;
 * - `mode: 'result'` returns `{ kind: 'fail' }`;
 * - `succeedOnAttempt: n` succeeds from attempt n on, to exercise retries.
 */
import { AgentError, defineAgent } from '../agent.js';

/** Input of the fail agent. */
export interface FailInput {
  mode?: 'throw' | 'fatal' | 'result';
  message?: string;
  succeedOnAttempt?: number;
}

export default defineAgent((input: FailInput | null, ctx) => {
  const message = input?.message ?? 'failing on purpose';
  if (input?.succeedOnAttempt !== undefined && ctx.attempt >= input.succeedOnAttempt) {
    return { recoveredOnAttempt: ctx.attempt };
  }
  ctx.log.warn(message, { attempt: ctx.attempt });
  switch (input?.mode ?? 'throw') {
    case 'fatal':
      throw new AgentError(message, { retryable: false, code: 'FATAL' });
    case 'result':
      return { kind: 'fail' as const, summary: message };
    default:
      throw new Error(message);
  }
});
