/**
 * TypeScript agents as a user's app holds them, for the tests that load them through tsx
 * (integration/contract-ts-agents.ts, integration/ts-agents.test.ts): the sources are written into
 * an app dir at run time, so they are still TypeScript when loaded (tsc compiles test/fixtures to
 * dist/).
 */
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** This package's root: what an app's `node_modules/troupe` links to. */
export const root = fileURLToPath(new URL('..', import.meta.url));

/** An agent with TypeScript-only syntax: an interface, an enum, `as const`, annotations, a `.ts` helper imported as `.js`. */
export const CODER = `
import { AgentError, defineAgent } from 'troupe/agent';
import { shout } from './shout.js';

interface Prompt {
  prompt: string;
  fail?: boolean;
}
enum Verdict {
  Fixed = 'fixed',
}
const STEPS = ['read', 'edit', 'test'] as const;
type Step = (typeof STEPS)[number];

export default defineAgent(async (input: Prompt): Promise<{ verdict: Verdict; steps: Step[]; said: string }> => {
  if (input.fail) throw new AgentError(\`cannot \${input.prompt}\`, { retryable: false, code: 'CANNOT' });
  return { verdict: Verdict.Fixed, steps: [...STEPS], said: shout(input.prompt) };
});
`;

/** The `.ts` helper CODER imports as `./shout.js`. */
export const SHOUT = `export const shout = (text: string): string => \`\${text.toUpperCase()}!\`;\n`;

/** CODER's output for the prompt 'fix the build'. */
export const FIXED = { verdict: 'fixed', steps: ['read', 'edit', 'test'], said: 'FIX THE BUILD!' };

/** How {@link tsApp} makes its app dir. */
export interface TsAppOptions {
  /** A CommonJS package: no `"type": "module"` in its package.json. */
  commonjs?: boolean;
  /** Packages of this package's node_modules to link into the app's. */
  link?: string[];
  /** Links `node_modules/troupe` to this package; default true. */
  linkTroupe?: boolean;
}

/**
 * Makes `dir` an app dir: `package.json` (an ES module package unless `commonjs`),
 * `node_modules/troupe` linked to this package (its `dist/` is what an install holds) unless
 * `linkTroupe` is false, the packages in `link` linked to this package's, and `files`. Returns `dir`.
 */
export function tsApp(dir: string, files: Record<string, string>, options: TsAppOptions = {}): string {
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'app', private: true, ...(options.commonjs ? {} : { type: 'module' }) }));
  mkdirSync(join(dir, 'node_modules'));
  if (options.linkTroupe !== false) symlinkSync(root, join(dir, 'node_modules', 'troupe'));
  for (const name of options.link ?? []) symlinkSync(join(root, 'node_modules', name), join(dir, 'node_modules', name));
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(dirname(join(dir, path)), { recursive: true });
    writeFileSync(join(dir, path), text);
  }
  return dir;
}
