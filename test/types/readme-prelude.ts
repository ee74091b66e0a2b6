/**
 * What the README's code blocks use without declaring it: a block is a snippet, not a program.
 * test/integration/types.test.ts compiles each block as a module of the strict consumer app with
 * these declared globally (a block that declares or imports one of them shadows it).
 */
import type { builtinAgent as BuiltinAgent, createRuntime as CreateRuntime, Runtime, RuntimeOptions, TaskSpec } from 'troupe';
import type { defineAgent as DefineAgent } from 'troupe/agent';
import type { createTestRuntime as CreateTestRuntime } from 'troupe/testing';
import type { execFileSync as ExecFileSync } from 'node:child_process';

declare global {
  const rt: Runtime;
  const options: RuntimeOptions;
  const spec: TaskSpec;
  const id: string;
  const taskId: string;
  const cursor: string;
  const signal: AbortSignal;
  const instanceKey: string;
  const createRuntime: typeof CreateRuntime;
  const builtinAgent: typeof BuiltinAgent;
  const defineAgent: typeof DefineAgent;
  const createTestRuntime: typeof CreateTestRuntime;
  const execFileSync: typeof ExecFileSync;
}
export {};
