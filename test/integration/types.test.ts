/**
 * The public types as a user's strict app meets them: test/types/app/consumer.ts is compiled in a
 * scratch app whose node_modules/troupe is this package (its exports and built declarations), with
 * strict, exactOptionalPropertyTypes and noUncheckedIndexedAccess. Its `@ts-expect-error` lines
 * are the mistakes the types must reject (a wrong input for a declared agent, a wrong output type,
 * a payload field an event does not have): each one that compiled would fail the build.
 */
import { execFile } from 'node:child_process';
import { copyFileSync, mkdirSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { scratchDirs } from '../helpers.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const APP = join(ROOT, 'test/types/app');
const TSC = join(ROOT, 'node_modules/typescript/bin/tsc');
const dirs = scratchDirs();

describe('public types in a strict app', () => {
  it('type-check a consumer: typed submits and waits, narrowed events, error-code unions, optional options that take undefined', async () => {
    const app = dirs();
    mkdirSync(join(app, 'node_modules'));
    symlinkSync(ROOT, join(app, 'node_modules/troupe'), 'dir');
    symlinkSync(join(ROOT, 'node_modules/@types'), join(app, 'node_modules/@types'), 'dir');
    for (const file of ['consumer.ts', 'tsconfig.json', 'package.json']) copyFileSync(join(APP, file), join(app, file));
    const result = await promisify(execFile)(process.execPath, [TSC, '-p', app], { cwd: app }).then(
      () => ({ ok: true, output: '' }),
      (error: { stdout?: string }) => ({ ok: false, output: error.stdout ?? String(error) }),
    );
    expect(result.output).toBe('');
    expect(result.ok).toBe(true);
  }, 60_000);
});
