/** Raw Piscina worker for the bench: the same no-op function the Troupe agent runs. */
import { noop, type NoopOutput } from './noop.agent.js';

export default function run(): NoopOutput {
  return noop();
}
