/**
 * Troupe's public API. Nothing runs at import time.
 */
export type { Runtime, RuntimeState, CloseOptions, AgentsApi } from './api/runtime.js';
export { createRuntime } from './create-runtime.js';
export type { BackupInfo } from './store/port.js';
export type { PruneOptions, PruneResult } from './tasks/prune.js';
export type { RetentionPolicy, RetentionRule, RuntimeRetention } from './tasks/retention-rules.js';
export type { RetentionStats } from './tasks/retention.js';
export type { RuntimeOptions, FastFailBackoff, StarvationPolicy, StoreOption } from './options.js';
export { DEFAULTS, DEFAULT_RETRY, DEFAULT_BACKOFF, DEFAULT_STARVATION } from './options.js';
export { TroupeError, ERROR_CODES, coerceError, isTroupeError } from './errors.js';
export type { TroupeErrorCode, TroupeErrorOptions } from './errors.js';
export { ManualClock, systemClock } from './clock.js';
export type { Clock, ClockTimer } from './clock.js';
export { builtinAgent } from './agents/registry.js';
export type { AgentRegistration, RegisteredAgent, BuiltinAgentName, ConcurrencyLimits, RateLimit, DailyLimit } from './agents/registry.js';
export type { SchedulesApi, Schedule, ScheduleSpec, ScheduleUpdate, OverlapPolicy, CatchUpPolicy } from './scheduler/scheduler.js';
export type { AgentFlowView } from './governor/flow.js';
export type { Agents, AgentInput, AgentOutput, Task, TaskId, TaskSpec, TaskSpecFields, TaskHold, TaskError, TaskErrorCode, WorkspaceSpec, WorkspaceKeep, ListOptions, TaskPage, WaitOptions } from './api/tasks.js';
export type { RuntimeEvent, RuntimeEventMap, EventStreamOptions, EventPayloads, EventData, AttemptEnded, QueuedReason } from './api/events.js';
export type { InstanceView } from './router/router.js';
export type { LogLine, LogOptions } from './events/logs.js';
export type { RuntimeStats, AgentStats } from './stats.js';
export type { RetryPolicy, TaskResult, TaskRetention } from './api/tasks.js';
export { EVENT_TYPES } from './api/events.js';
export type { EventType } from './api/events.js';
export type { Fault, AgentResult } from '../actors/wire.js';
export type { TaskState, AttemptExit } from '../machines/states.js';
