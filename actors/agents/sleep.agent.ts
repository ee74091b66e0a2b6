/**
 * Built-in `sleep` agent: waits `ms` milliseconds (default 10), reporting progress, then returns
 * `{ sleptMs }`. It honours cancellation through `ctx.signal`.
 */
import { AgentError, defineAgent } from '../agent.js';
import { setLongTimeout } from '../long-timeout.js';

/** Input of the sleep agent. */
export interface SleepInput {
  ms?: number;
  /** Number of progress steps to report while sleeping. @default 4 */
  steps?: number;
}

export default defineAgent(async (input: SleepInput | null, ctx) => {
  const ms = Math.max(0, Number(input?.ms ?? 10));
  const steps = Math.max(1, Math.floor(Number(input?.steps ?? 4)));
  for (let i = 1; i <= steps; i++) {
    await delay(ms / steps, ctx.signal);
    ctx.progress(i / steps);
  }
  return { sleptMs: ms };
});

function delay(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(new AgentError('sleep aborted', { retryable: false, code: 'ABORTED' }));
    const timer = setLongTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      timer.clear();
      reject(new AgentError('sleep aborted', { retryable: false, code: 'ABORTED' }));
    };
    signal.addEventListener('abort', onAbort, { once: true });
  });
}
