/**
 * What a cluster node stores of an agent's registration on its row of `troupe_agents`, for every
 * runtime to honour: its limits (store/postgres/limits.ts), its fast-failure backoff (backoff.ts)
 * its capabilities for routing by `requires` (routing.ts) and its retention rules (retention.ts). A
 * registration that gives none of one leaves what is stored of it as it is; `backoff: false`
 * clears a stored backoff.
 */
import type pg from 'pg';
import type { RegisteredAgent } from '../agents/registry.js';
import { setAgentBackoff } from '../store/postgres/backoff.js';
import { isLimited, setAgentLimits } from '../store/postgres/limits.js';
import { setAgentRetention } from '../store/postgres/retention.js';
import { setAgentCapabilities } from '../store/postgres/routing.js';
import { turnsBackoffOff } from './options.js';

/** Stores `agent`'s cluster-wide limits, backoff, capabilities and retention when its registration gives any (see the module comment). */
export async function storeLimits(db: pg.Pool, agent: RegisteredAgent): Promise<void> {
  const limits = { concurrency: agent.concurrency, models: agent.models, rate: agent.rate, dailyLimit: agent.dailyLimit };
  if (isLimited(limits)) await setAgentLimits(db, agent.name, limits);
  if (agent.backoff !== null || turnsBackoffOff(agent)) await setAgentBackoff(db, agent.name, agent.backoff);
  if (agent.capabilities.length > 0) await setAgentCapabilities(db, agent.name, agent.capabilities, agent.retry.maxAttempts);
  if (agent.retention !== null) await setAgentRetention(db, agent.name, agent.retention);
}
