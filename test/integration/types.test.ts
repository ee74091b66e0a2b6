/**
 * The public types as a user's strict app meets them: test/types/app/consumer.ts is compiled in a
 * scratch app whose node_modules/troupe is this package (its exports and built declarations), with
 * strict, exactOptionalPropertyTypes and noUncheckedIndexedAccess. Its `@ts-expect-error` lines
 * are the mistakes the types must reject (a wrong input for a declared agent, a wrong output type,
 * a payload field an event does not have): each one that compiled would fail the build.
 */
import { execFile } from 'node:child_process';
import { copyFileSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { readmeBlocks, scratchDirs } from '../helpers.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const APP = join(ROOT, 'test/types/app');
const TSC = join(ROOT, 'node_modules/typescript/bin/tsc');
const dirs = scratchDirs();

/** A scratch app whose node_modules/troupe is this package, with the consumer's tsconfig. */
function scratchApp(): string {
  const app = dirs();
  mkdirSync(join(app, 'node_modules'));
  symlinkSync(ROOT, join(app, 'node_modules/troupe'), 'dir');
  symlinkSync(join(ROOT, 'node_modules/@types'), join(app, 'node_modules/@types'), 'dir');
  for (const file of ['tsconfig.json', 'package.json']) copyFileSync(join(APP, file), join(app, file));
  return app;
}

/** tsc on the app: its output ('' when it compiles). */
async function typecheck(app: string): Promise<string> {
  return promisify(execFile)(process.execPath, [TSC, '-p', app], { cwd: app }).then(
    () => '',
    (error: { stdout?: string }) => error.stdout ?? String(error),
  );
}

describe('public types in a strict app', () => {
  it('compile every ```ts block of the README (strict, exactOptionalPropertyTypes, noUncheckedIndexedAccess, skipLibCheck false)', async () => {
    const app = scratchApp();
    const blocks = readmeBlocks(join(ROOT, 'README.md'));
    expect(blocks.length).toBeGreaterThanOrEqual(10);
    const files: string[] = ['readme-prelude.ts'];
    copyFileSync(join(ROOT, 'test/types/readme-prelude.ts'), join(app, 'readme-prelude.ts'));
    for (const { line, code } of blocks) {
      // The agent module the README writes is the one the other blocks register and import.
      const file = code.startsWith('// coder.agent.ts') ? 'coder.agent.ts' : `readme-line-${line}.ts`;
      // A block with no import or export is a script; as a module it may use top-level await.
      writeFileSync(join(app, file), /^(import|export) /m.test(code) ? code : `${code}\nexport {};\n`);
      files.push(file);
    }
    writeFileSync(join(app, 'tsconfig.json'), JSON.stringify({ ...JSON.parse(readFileSync(join(APP, 'tsconfig.json'), 'utf8')), files }));
    expect(await typecheck(app)).toBe('');
  }, 60_000);


  it('type-check a consumer: typed submits and waits, narrowed events, error-code unions, optional options that take undefined', async () => {
    const app = scratchApp();
    copyFileSync(join(APP, 'consumer.ts'), join(app, 'consumer.ts'));
    expect(await typecheck(app)).toBe('');
  }, 60_000);
});
