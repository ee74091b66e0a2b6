import { readdirSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ERROR_CODES } from '../../src/errors.js';
import { DEFAULTS } from '../../src/options.js';

const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');

function tableAfter(heading: string): string[][] {
  const start = readme.indexOf(heading);
  expect(start, `README has a "${heading}" section`).toBeGreaterThan(-1);
  const rows: string[][] = [];
  let inTable = false;
  for (const line of readme.slice(start).split('\n').slice(1)) {
    if (line.startsWith('|')) {
      inTable = true;
      rows.push(line.split(/(?<!\\)\|/).slice(1, -1).map((c) => c.trim()));
    } else if (inTable) break;
  }
  return rows.slice(2); // header and separator
}

describe('README stays true to the code', () => {
  it('lists exactly the error codes of the catalogue, with their retryability', () => {
    const rows = tableAfter('## Error codes');
    const documented = rows.map(([code, retryable]) => [code!.replace(/`/g, ''), retryable]);
    const catalogue = Object.entries(ERROR_CODES).map(([code, { retryable }]) => [code, retryable ? 'yes' : 'no']);
    expect(documented).toEqual(catalogue);
  });

  it('has every code that crosses the thread boundary or the API in the catalogue; agent and CLI codes are listed', () => {
    // Every `code: 'X'` / `TroupeError('X'` / `AgentError(…, { code: 'X' })` literal in the sources.
    const found = new Map<string, string>();
    const walk = (dir: URL) => {
      for (const entry of readdirSync(dir, { withFileTypes: true })) {
        const url = new URL(entry.name + (entry.isDirectory() ? '/' : ''), dir);
        if (entry.isDirectory()) walk(url);
        else if (entry.name.endsWith('.ts')) {
          const text = readFileSync(url, 'utf8');
          for (const m of text.matchAll(/(?:code: '|TroupeError\(')([A-Z][A-Z_]+)'/g)) found.set(m[1]!, url.pathname);
        }
      }
    };
    for (const dir of ['src/', 'actors/', 'machines/']) walk(new URL(`../../${dir}`, import.meta.url));
    expect(found.size).toBeGreaterThan(20);
    const section = readme.slice(readme.indexOf('## Error codes'), readme.indexOf('## Benchmarks'));
    for (const [code, file] of found) {
      // Codes of the built-in agents (task error codes), of the CLI and of the dashboard's HTTP API are listed beside the table;
      // everything else, the host's and the agent context's, is in the one catalogue.
      const listedElsewhere = /\/actors\/agents\/|\/src\/cli\/|\/src\/dashboard\//.test(file);
      if (listedElsewhere) expect(section, `${code} (${file}) is documented`).toContain(`\`${code}\``);
      else expect(Object.keys(ERROR_CODES), `${code} (${file}) is in ERROR_CODES`).toContain(code);
    }
  });

  it('documents every runtime option', () => {
    const documented = tableAfter('## Options').map(([name]) => name!.replace(/`/g, ''));
    expect(documented.sort()).toEqual([...Object.keys(DEFAULTS), 'logger', 'createPool', 'store'].sort());
  });

  it('has the two quick-start lines, and CI runs the test line', () => {
    expect(readme).toContain('npm ci && npm start');
    expect(readme).toContain('npm ci && npm test');
    const ci = readFileSync(new URL('../../.ci/run', import.meta.url), 'utf8');
    expect(ci).toContain('npm ci && npm test');
  });
});
