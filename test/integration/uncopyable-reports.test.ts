/**
 * What an agent hands over is copied to the host only at the end of the turn. An agent that
 * changes it before then (a function added to logged fields, or to the value it returned) must not
 * cost the turn's other reports: its own outcome and the attempts beside it still reach the host
 * (real threads, LMDB runtime).
 */
import { describe, expect, it } from 'vitest';
import { builtinAgent } from 'troupe';
import { fixtureAgent, runtimes } from '../helpers.js';

const runtime = runtimes();
const hostile = { name: 'hostile', module: fixtureAgent('hostile'), retry: { maxAttempts: 1 } };

describe('a report that can no longer be copied', () => {
  it('is replaced (fields by a note, an output by INVALID_RESULT); the rest of its turn still reaches the host', async () => {
    // One thread with room for all three, so they share its turns.
    const rt = await runtime({ threads: 1, slotsPerThread: 3, agents: [hostile, builtinAgent('echo')] });
    const [logged, echo, returned] = await rt.submitMany([
      { agent: 'hostile', input: { mode: 'mutateLog' } },
      { agent: 'echo', input: 'beside it' },
      { agent: 'hostile', input: { mode: 'mutateOutput' } },
    ]);
    // Bounded: before the fix these stayed running until their lease ran out.
    expect(await rt.wait(logged!.id, { timeoutMs: 5_000 })).toMatchObject({ state: 'done', output: 'logged' });
    expect(await rt.wait(echo!.id, { timeoutMs: 5_000 })).toMatchObject({ state: 'done', output: 'beside it', attempts: 1 });
    const invalid = await rt.wait(returned!.id, { timeoutMs: 5_000 });
    expect(invalid).toMatchObject({ state: 'failed', attempts: 1, error: { code: 'INVALID_RESULT', retryable: false } });
    expect(invalid.error!.message).toContain('result.output.cb is a function');
    const lines = [];
    for await (const line of rt.logs(logged!.id)) lines.push(line);
    expect(lines).toMatchObject([{ message: 'state', fields: { unserializable: expect.stringContaining('fields.cb is a function') } }]);
  });
});
