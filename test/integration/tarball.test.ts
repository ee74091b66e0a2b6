/**
 * The package as a user gets it: `npm pack`, installed (from npm's cache) into a fresh strict
 * TypeScript app with tsx. There, a typed `.ts` agent runs through the API and through
 * `troupe run`; the app type-checks with skipLibCheck false, and a submit with the wrong input
 * for a declared agent fails to compile (`@ts-expect-error`); the README's code blocks compile.
 */
import { execFile, spawn } from 'node:child_process';
import { copyFileSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readmeBlocks, tempDir } from '../helpers.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const run = promisify(execFile);
const app = tempDir('troupe-tarball-app-');
const NPM = { cwd: app.path, env: { ...process.env, npm_config_audit: 'false', npm_config_fund: 'false', npm_config_update_notifier: 'false' }, maxBuffer: 16 * 1024 * 1024 };

const CODER = `import { defineAgent, AgentError } from 'troupe/agent';

export interface CoderInput { prompt: string; times?: number }
export interface CoderOutput { text: string }

enum Mood { Happy = 'happy' }

export default defineAgent<CoderInput, CoderOutput>(async (input, ctx) => {
  if (input.prompt === 'fail') throw new AgentError('asked to fail', { retryable: false, code: 'ASKED' });
  ctx.log.info('coding', { attempt: ctx.attempt });
  return { text: \`\${input.prompt.repeat(input.times ?? 1)} (\${Mood.Happy})\` };
});
`;

const HOST = `import { createRuntime, type Task } from 'troupe';
import type coder from './agents/coder.agent.js';
import type { CoderOutput } from './agents/coder.agent.js';

declare module 'troupe' {
  interface Agents {
    coder: typeof coder;
  }
}

const rt = await createRuntime({ dataDir: process.argv[2]!, logger: false, threads: 1 });
rt.agents.register({ name: 'coder', module: new URL('./agents/coder.agent.ts', import.meta.url) });
const task = await rt.submit({ agent: 'coder', input: { prompt: 'ab', times: 2 } });
const done: Task<CoderOutput> = await rt.wait(task.id);
const failed = await rt.wait((await rt.submit({ agent: 'coder', input: { prompt: 'fail' } })).id);
if (process.argv[3] === 'never') {
  // @ts-expect-error a declared agent's input is checked at compile time
  await rt.submit({ agent: 'coder', input: { prompt: 42 } });
}
console.log(JSON.stringify({ state: done.state, text: done.output?.text, failed: failed.state, code: failed.error?.code }));
await rt.close();
`;

const TSCONFIG = {
  compilerOptions: { target: 'ES2022', lib: ['ES2023'], module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, exactOptionalPropertyTypes: true, noUncheckedIndexedAccess: true, skipLibCheck: false, noEmit: true, allowImportingTsExtensions: true, types: ['node'] },
  include: ['*.ts', 'agents/*.ts'],
};

describe('the packed package in a fresh strict TypeScript app', () => {
  afterAll(() => app.cleanup());

  beforeAll(async () => {
    // The build is the test run's (npm test builds first); packing runs no script.
    const { stdout } = await run('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', app.path], { cwd: ROOT, maxBuffer: 16 * 1024 * 1024 });
    const tarball = join(app.path, (JSON.parse(stdout) as Array<{ filename: string }>)[0]!.filename);
    const version = (name: string) => (JSON.parse(readFileSync(join(ROOT, 'node_modules', name, 'package.json'), 'utf8')) as { version: string }).version;
    writeFileSync(
      join(app.path, 'package.json'),
      JSON.stringify({
        name: 'strict-app',
        private: true,
        type: 'module',
        dependencies: { troupe: `file:${tarball}`, tsx: version('tsx') },
        devDependencies: { typescript: version('typescript'), '@types/node': version('@types/node') },
      }),
    );
    // Everything it needs is in npm's cache since this checkout's `npm ci`.
    await run('npm', ['install', '--prefer-offline', '--no-package-lock'], NPM);
    mkdirSync(join(app.path, 'agents'));
    writeFileSync(join(app.path, 'agents/coder.agent.ts'), CODER);
    writeFileSync(join(app.path, 'host.ts'), HOST);
    writeFileSync(join(app.path, 'tsconfig.json'), JSON.stringify(TSCONFIG));
  }, 240_000);

  it('type-checks the app against the installed declarations, rejecting the wrong input', async () => {
    const result = await run(process.execPath, [join(app.path, 'node_modules/typescript/bin/tsc'), '-p', app.path], NPM).then(
      () => '',
      (error: { stdout?: string }) => error.stdout ?? String(error),
    );
    expect(result).toBe('');
    // The installed package ships its bundled types and no source of its own dependencies' types.
    expect(readdirSync(join(app.path, 'node_modules/troupe/dist/types')).filter((f) => f.endsWith('.d.ts')).length).toBeGreaterThanOrEqual(3);
  }, 60_000);

  it('runs the .ts agent through the API, from a host that is TypeScript too (node --import tsx)', async () => {
    const { stdout } = await run(process.execPath, ['--import', 'tsx', 'host.ts', join(app.path, 'data-api')], NPM);
    expect(JSON.parse(stdout.trim())).toEqual({ state: 'done', text: 'abab (happy)', failed: 'failed', code: 'ASKED' });
  }, 60_000);

  it('runs the .ts agent through troupe run', async () => {
    const dataDir = join(app.path, 'data-cli');
    const bin = join(app.path, 'node_modules/.bin/troupe');
    const server = spawn(bin, ['run', '--agents', join(app.path, 'agents'), '--data-dir', dataDir, '--threads', '1'], { cwd: app.path, stdio: ['ignore', 'pipe', 'pipe'] });
    try {
      await new Promise<void>((resolve, reject) => {
        let out = '';
        server.stdout!.on('data', (chunk: Buffer) => {
          out += chunk.toString();
          if (/^troupe running/m.test(out)) resolve();
        });
        server.once('exit', (code) => reject(new Error(`troupe run exited ${code}: ${out}`)));
      });
      const { stdout } = await run(bin, ['submit', 'coder', '--input', '{"prompt":"xy","times":3}', '--wait', '--json', '--data-dir', dataDir], NPM);
      expect(JSON.parse(stdout)).toMatchObject({ state: 'done', output: { text: 'xyxyxy (happy)' } });
    } finally {
      server.kill('SIGINT');
      await new Promise((resolve) => server.once('close', resolve));
    }
  }, 60_000);

  it("compiles the README's code blocks against the installed package", async () => {
    const readme = join(app.path, 'readme');
    mkdirSync(readme);
    const files = ['prelude.ts'];
    copyFileSync(join(ROOT, 'test/types/readme-prelude.ts'), join(readme, 'prelude.ts'));
    for (const { line, code } of readmeBlocks(join(ROOT, 'README.md'))) {
      const file = code.startsWith('// coder.agent.ts') ? 'coder.agent.ts' : `line-${line}.ts`;
      writeFileSync(join(readme, file), /^(import|export) /m.test(code) ? code : `${code}\nexport {};\n`);
      files.push(file);
    }
    writeFileSync(join(readme, 'package.json'), '{"type":"module"}');
    writeFileSync(join(readme, 'tsconfig.json'), JSON.stringify({ compilerOptions: { ...TSCONFIG.compilerOptions, typeRoots: [join(app.path, 'node_modules/@types')] }, files }));
    const result = await run(process.execPath, [join(app.path, 'node_modules/typescript/bin/tsc'), '-p', readme], NPM).then(
      () => '',
      (error: { stdout?: string }) => error.stdout ?? String(error),
    );
    expect(result).toBe('');
  }, 60_000);
});
