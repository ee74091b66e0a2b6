/**
 * Agent modules imported in a worker thread ({@link importAgent}); TypeScript ones through tsx,
 * registered at the thread's first TypeScript agent and scoped to agent imports (see
 * {@link importTypeScript}).
 */
import { fileURLToPath } from 'node:url';
import type { ScopedImport } from 'tsx/esm/api';
import { agentFunctionOf, type AgentFunction } from './agent.js';
import { TypeScriptLoaderMissing } from './results.js';

/** Imports an agent module (a URL string) and finds its agent: the default export, made with defineAgent() or a function. */
export async function importAgent(module: string): Promise<AgentFunction> {
  const namespace = (TYPESCRIPT.test(new URL(module).pathname) ? await importTypeScript(module) : await import(module)) as Record<string, unknown>;
  const fn = agentFunctionOf(namespace.default) ?? agentFunctionOf(esModuleDefault(namespace.default));
  if (!fn) throw new Error('the module has no default export made with defineAgent() or a function');
  return fn;
}

/** Agent modules that need a TypeScript loader (tsx): `.ts`, `.mts` and `.cts`. */
export const TYPESCRIPT = /\.[cm]?ts$/;
/** This thread's tsx loader, registered at the first TypeScript agent: `.js` agents never pay for it. */
let typescript: Promise<ScopedImport> | undefined;

/**
 * Imports a TypeScript agent through tsx. A loader the host registered (`node --import tsx`) does
 * not reach worker threads, so each thread registers its own. It is tsx's namespaced `register()`,
 * once per thread: global `register()` fails on a `.ts` file that Node reads as CommonJS (no
 * `"type": "module"` above it) and would hook every later import of the thread, and `tsImport()`
 * registers another loader at every call, so each retry of a failing agent would add one. tsx
 * resolves from troupe's own location, as the app installed it beside troupe.
 */
export function importTypeScript(module: string): Promise<Record<string, unknown>> {
  if (!typescript) {
    const registering = import('tsx/esm/api').then((tsx) => tsx.register({ namespace: 'troupe-agents' }).import);
    // A failed import of tsx is tried again by the next TypeScript agent rather than kept.
    registering.catch(() => {
      if (typescript === registering) typescript = undefined;
    });
    typescript = registering;
  }
  return typescript.then(
    (scopedImport) => scopedImport(module, import.meta.url) as Promise<Record<string, unknown>>,
    (error: unknown) => {
      // Only tsx itself missing: a tsx that lacks its own dependencies says so in its own error.
      const missing = (error as NodeJS.ErrnoException).code === 'ERR_MODULE_NOT_FOUND' && (error as Error).message.includes("'tsx'");
      throw missing ? new TypeScriptLoaderMissing(fileURLToPath(module), { cause: error }) : error;
    },
  );
}

/**
 * The default export of an ES module compiled to CommonJS: a `.ts` agent Node reads as CommonJS
 * (no `"type": "module"` above it) is imported as `{ default: { __esModule: true, default } }`.
 */
export function esModuleDefault(exported: unknown): unknown {
  return typeof exported === 'object' && exported !== null && (exported as { __esModule?: unknown }).__esModule === true ? (exported as { default?: unknown }).default : undefined;
}
