/**
 * The bench's no-op agent: returns when it started (epoch ms, sub-ms precision) so both the raw
 * Piscina run and the Troupe run measure submit → start the same way, inside the worker.
 */
import { defineAgent } from '../actors/agent.js';

/** Output of the no-op agent. */
export interface NoopOutput {
  startedAt: number;
}

/** The function both runs execute. */
export function noop(): NoopOutput {
  return { startedAt: performance.timeOrigin + performance.now() };
}

export default defineAgent(() => noop());
