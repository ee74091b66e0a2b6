/**
 * One attempt a cluster node claimed, host side (node-attempts.ts holds them): its claimed row,
 * its agent, its phase, and what the node keeps of it while it runs.
 */
import type { AbortReason, AttemptRequest } from '../../actors/wire.js';
import type { RegisteredAgent } from '../agents/registry.js';
import type { RetryPolicy } from '../api/tasks.js';
import type { ClockTimer } from '../clock.js';
import type { AbortOutcome } from '../pool/pool.js';
import type { ClaimedTask } from '../store/postgres/queue.js';
import type { AttemptPhase } from '../tasks/attempt.js';
import { carryTrace, type AttemptSpan } from '../telemetry/tracing.js';

/** One claimed attempt, host side. */
export class NodeAttempt {
  readonly claimed: ClaimedTask;
  readonly agent: RegisteredAgent;
  phase: AttemptPhase = 'dispatched';
  /** Set once the node asked it to stop (timeout, lost lease, shutdown). */
  stop: { reason: AbortReason; detail?: string } | undefined = undefined;
  /** The exit code its agent ended its thread with, once the thread said so. */
  endedThread: number | undefined = undefined;
  /** When its thread was last heard from (the claim counts), on the node's clock. */
  heardAt: number;
  /** When the node took it from its claim, on the node's clock. */
  readonly claimedAt: number;
  /** What its thread said about the abort. */
  abortAnswer: Promise<AbortOutcome> | undefined = undefined;
  timer: ClockTimer | undefined = undefined;
  /** When its thread began it (performance.now()), for the start-ahead window's execution average. */
  beganAt = 0;
  /** The number its next log line gets. */
  lines = 0;
  /** Once its agent asked for input: how many of the task's inputs it has taken (node-inputs.ts). */
  handed: number | undefined = undefined;
  /** Whether its agent waits on the host (an input): its slot's claim budget is free meanwhile. */
  parked = false;
  /** Its `troupe.attempt` span, when tracing is on (src/telemetry/tracing.ts): ended as its end is decided. */
  trace: AttemptSpan | undefined = undefined;

  /** Its timeout and retry policy: the task's own (as submitted) over its agent's registration here. */
  readonly timeoutMs: number;
  readonly retry: Readonly<RetryPolicy>;

  constructor(claimed: ClaimedTask, agent: RegisteredAgent, now: number) {
    this.claimed = claimed;
    this.agent = agent;
    this.heardAt = now;
    this.timeoutMs = claimed.timeoutMs ?? agent.timeoutMs;
    this.retry = claimed.retry === undefined ? agent.retry : { ...agent.retry, ...claimed.retry };
    this.claimedAt = now;
  }

  get attemptId(): string {
    return this.claimed.attemptId;
  }

  get token(): number {
    return this.claimed.token;
  }

  /** What its thread is handed: the claimed row's input, follow-up and workspace, the agent's module, its span's trace context. */
  request(): AttemptRequest {
    const { claimed, agent } = this;
    const request: AttemptRequest = { module: agent.module, agent: agent.name, taskId: claimed.id, attemptId: claimed.attemptId, run: claimed.run, attempt: claimed.attempt, token: claimed.token, input: claimed.input };
    if (claimed.followUp !== undefined) request.followUp = claimed.followUp;
    if (claimed.workspace !== undefined) request.workspace = claimed.workspace;
    carryTrace(request, this.trace);
    return request;
  }
}
