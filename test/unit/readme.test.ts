import { readFileSync } from 'node:fs';
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

  it('documents every runtime option', () => {
    const documented = tableAfter('## Options').map(([name]) => name!.replace(/`/g, ''));
    expect(documented.sort()).toEqual([...Object.keys(DEFAULTS), 'logger', 'createPool'].sort());
  });

  it('has the two quick-start lines, and CI runs the test line', () => {
    expect(readme).toContain('npm install && npm start');
    expect(readme).toContain('npm install && npm test');
    const ci = readFileSync(new URL('../../.ci/run', import.meta.url), 'utf8');
    expect(ci).toContain('npm install && npm test');
  });
});
