/**
 * A strict TypeScript app using Troupe's public types (compiled by test/integration/types.test.ts
 * with strict, exactOptionalPropertyTypes and noUncheckedIndexedAccess). Each `@ts-expect-error`
 * is a mistake the types must catch: should one compile, tsc fails on the unused directive.
 */
import { createRuntime, type RuntimeEvent, type Task, type TaskErrorCode } from 'troupe';
import { defineAgent } from 'troupe/agent';
import { createTestRuntime, nextEvent } from 'troupe/testing';

interface ReviewInput {
  pr: number;
}
interface ReviewOutput {
  approved: boolean;
}

const review = defineAgent<ReviewInput, ReviewOutput>(async (input) => ({ approved: input.pr > 0 }));

declare module 'troupe' {
  interface Agents {
    review: typeof review;
    summarize: { input: { text: string }; output: { summary: string } };
  }
}

export async function app(): Promise<void> {
  const rt = await createRuntime({ dataDir: './.troupe', logger: false });

  const task = await rt.submit({ agent: 'review', input: { pr: 42 } });
  const done: Task<ReviewOutput> = await rt.wait(task.id);
  const approved: boolean | undefined = done.output?.approved;
  const pr: number = task.input.pr;

  // @ts-expect-error a declared agent's input is checked
  await rt.submit({ agent: 'review', input: { pr: 'forty-two' } });
  // @ts-expect-error a declared agent's input is required
  await rt.submit({ agent: 'review' });
  // @ts-expect-error the output type follows the task id
  const wrong: string | undefined = (await rt.wait(task.id)).output?.approved;

  const summary = await rt.wait((await rt.submit({ agent: 'summarize', input: { text: 'hi' } })).id);
  const text: string | undefined = summary.output?.summary;

  // An agent not declared runs untyped.
  const free = await rt.submit({ agent: 'echo', input: { anything: [1, 2] } });
  const untyped: unknown = (await rt.wait(free.id)).output;

  // Events narrow by type.
  rt.on('task.done', (ev) => {
    const attemptMs: number = ev.data.attemptMs;
    void attemptMs;
  });
  rt.on('task.failed', (ev) => {
    const code: TaskErrorCode | undefined = ev.data.error?.code;
    if (code === 'TIMEOUT') console.log('timed out');
  });
  // @ts-expect-error task.done has no error
  rt.on('task.done', (ev) => ev.data.error);
  for await (const ev of rt.events({ types: ['schedule.fired'], after: undefined })) {
    const scheduleId: string = ev.data.scheduleId;
    void scheduleId;
    break;
  }
  const any: RuntimeEvent = await nextEvent(rt, 'task.queued');
  if (any.type === 'task.queued') console.log(any.data.run);

  // Error codes are a union.
  if (done.error?.code === 'AGENT_ERROR') console.log(done.error.message);
  // Optional options accept undefined under exactOptionalPropertyTypes.
  await rt.list({ state: undefined, after: undefined, limit: 10 });
  await rt.wait(task.id, { timeoutMs: undefined });

  const t = await createTestRuntime({ threads: 1 });
  await t.advance(1_000);
  await t.close();
  await rt.close();
  void [approved, pr, wrong, text, untyped];
}
