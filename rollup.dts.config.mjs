/**
 * Bundles the public declarations (`npm run build` runs it after tsc): one .d.ts per package entry
 * (troupe, troupe/agent, troupe/testing) holding the types reachable from it and nothing else, so
 * a user's program compiles against Troupe without the declarations of lmdb, Piscina, XState or
 * the store, even with `skipLibCheck: false`. Types the entries share go to one chunk, so a
 * `Runtime` from `troupe/testing` is the same type as one from `troupe`.
 */
import { dts } from 'rollup-plugin-dts';

export default {
  input: {
    index: 'dist/src/index.d.ts',
    agent: 'dist/actors/agent.d.ts',
    testing: 'dist/src/testing/index.d.ts',
  },
  output: { dir: 'dist/types', format: 'es', chunkFileNames: 'shared-[hash].d.ts' },
  // Kept as imports: the logger option is a pino logger or pino options.
  external: [/^node:/, 'pino'],
  plugins: [dts({ respectExternal: false })],
};
