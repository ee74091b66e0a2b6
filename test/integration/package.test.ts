/**
 * What `npm pack` would publish: the LICENSE, source maps that resolve inside the package (each
 * source is shipped or embedded), and nothing from test/ or bench/. Reads the built dist/, as the
 * other integration tests do; `--ignore-scripts` skips the prepack build.
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join, posix } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

interface SourceMap {
  sources: string[];
  sourceRoot?: string;
  sourcesContent?: Array<string | null>;
}

describe('the packed package', () => {
  let files: Set<string>;

  beforeAll(async () => {
    const { stdout } = await promisify(execFile)('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: ROOT, maxBuffer: 64 * 1024 * 1024 });
    const [pack] = JSON.parse(stdout) as Array<{ files: Array<{ path: string }> }>;
    files = new Set(pack!.files.map((f) => f.path));
  }, 60_000);

  it('ships the LICENSE, the MIT one package.json names', () => {
    expect(files).toContain('LICENSE');
    const license = readFileSync(join(ROOT, 'LICENSE'), 'utf8');
    expect(license).toMatch(/^MIT License\n\nCopyright \(c\) 2026 Troupe contributors\n/);
    expect((JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { license: string }).license).toBe('MIT');
  });

  it('ships nothing from test/ or bench/', () => {
    expect(files.size).toBeGreaterThan(50);
    expect([...files].filter((path) => /(^|\/)(test|bench)\//.test(path))).toEqual([]);
  });

  it('has source maps whose every source is in the package or embedded in the map', () => {
    const maps = [...files].filter((path) => path.endsWith('.js.map'));
    expect(maps.length).toBeGreaterThan(50);
    const unresolved: string[] = [];
    for (const path of maps) {
      const map = JSON.parse(readFileSync(join(ROOT, path), 'utf8')) as SourceMap;
      map.sources.forEach((source, i) => {
        if (typeof map.sourcesContent?.[i] === 'string') return;
        const shipped = posix.normalize(posix.join(posix.dirname(path), map.sourceRoot ?? '', source));
        if (!files.has(shipped)) unresolved.push(`${path}: ${source}`);
      });
    }
    expect(unresolved).toEqual([]);
  });

  it('points every shipped script at a map that is shipped too', () => {
    const dangling: string[] = [];
    for (const path of [...files].filter((p) => p.endsWith('.js'))) {
      const url = /\/\/# sourceMappingURL=(\S+)\s*$/.exec(readFileSync(join(ROOT, path), 'utf8'))?.[1];
      if (url !== undefined && !files.has(posix.join(posix.dirname(path), url))) dangling.push(`${path} -> ${url}`);
    }
    expect(dangling).toEqual([]);
  });
});
