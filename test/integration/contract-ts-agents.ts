/**
 * The contract of TypeScript agents (contract.ts's suite, run by contract-lmdb.test.ts and
 * contract-postgres.test.ts): a `*.agent.ts` (or `.mts`, `.cts`) module runs without a build step,
 * loaded in the worker threads through tsx, which the threads register themselves; its output and
 * its thrown AgentError are stored as a `.js` agent's are; one that does not compile fails with
 * AGENT_LOAD_FAILED and tsx's compile error. The agents live in temp app dirs (test/ts-app.ts)
 * written before the runtime registers them; the tests share one runtime (see `sharedRuntime`),
 * each waiting for its own tasks by id. A user's script run by node on a data dir stays in
 * ts-agents.test.ts.
 */
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import type { AgentRegistration } from 'troupe';
import { tempDir } from '../helpers.js';
import { CODER, FIXED, SHOUT, tsApp } from '../ts-app.js';
import { sharedRuntime, type ContractBackend } from './contract.js';

/** Registers the TypeScript agents' contract tests against `backend` under `name`. */
export function tsAgentsContract(name: string, backend: ContractBackend): void {
  describe(`TypeScript agents on ${name}`, () => {
    const esm = tempDir();
    const cjs = tempDir();
    afterAll(() => {
      esm.cleanup();
      cjs.cleanup();
    });
    tsApp(esm.path, { 'coder.agent.ts': CODER, 'shout.ts': SHOUT, 'broken.agent.ts': 'export default (input: { n: number } => input.n;\n' });
    // A CommonJS package: Node reads its plain .ts agent as CommonJS.
    tsApp(
      cjs.path,
      {
        'esm.agent.mts': 'export default (input: { n: number }): number => input.n * 2;\n',
        'cjs.agent.cts': 'const triple = (input: { n: number }): number => input.n * 3;\nmodule.exports = triple;\n',
        'plain.agent.ts': 'const enum Offset { By = 4 }\nexport default (input: { n: number }): number => input.n + Offset.By;\n',
      },
      { commonjs: true },
    );
    const agent = (agentName: string, file: string): AgentRegistration => ({ name: agentName, module: pathToFileURL(file), retry: { maxAttempts: 1 } });
    const rt = sharedRuntime(backend, {
      agents: [
        agent('coder', join(esm.path, 'coder.agent.ts')),
        agent('broken', join(esm.path, 'broken.agent.ts')),
        agent('esm', join(cjs.path, 'esm.agent.mts')),
        agent('cjs', join(cjs.path, 'cjs.agent.cts')),
        agent('plain', join(cjs.path, 'plain.agent.ts')),
      ],
    });

    it('runs a .ts agent to done with its output, TypeScript syntax and .ts helper included', async () => {
      const task = await rt().submit({ agent: 'coder', input: { prompt: 'fix the build' } });
      const final = await rt().wait(task.id);
      expect(final.error).toBeUndefined();
      expect(final).toMatchObject({ state: 'done', output: FIXED });
    });

    it('fails with the error the agent threw, code and message', async () => {
      const task = await rt().submit({ agent: 'coder', input: { prompt: 'divide by zero', fail: true } });
      expect(await rt().wait(task.id)).toMatchObject({
        state: 'failed',
        error: { code: 'CANNOT', message: 'cannot divide by zero', retryable: false, fault: 'agent' },
      });
    });

    it('runs .mts and .cts agents, and a .ts agent that Node reads as CommonJS', async () => {
      const tasks = await rt().submitMany(['esm', 'cjs', 'plain'].map((agentName) => ({ agent: agentName, input: { n: 10 } })));
      const finals = await Promise.all(tasks.map((task) => rt().wait(task.id)));
      expect(finals.map((t) => [t.agent, t.state, t.output ?? t.error])).toEqual([
        ['esm', 'done', 20],
        ['cjs', 'done', 30],
        ['plain', 'done', 14],
      ]);
    });

    it('fails a .ts agent that does not compile with AGENT_LOAD_FAILED and the compile error', async () => {
      const task = await rt().submit({ agent: 'broken', input: { n: 1 } });
      const final = await rt().wait(task.id);
      expect(final).toMatchObject({ state: 'failed', error: { code: 'AGENT_LOAD_FAILED', retryable: false } });
      // tsx's compile error, with the file, line and column.
      expect(final.error!.message).toMatch(/^agent broken failed to load: .*\/broken\.agent\.ts:1:37: ERROR: Expected "\)" but found "=>"/s);
    });
  });
}
