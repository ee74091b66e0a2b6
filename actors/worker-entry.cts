/**
 * Piscina's entry for each thread, in CommonJS on purpose. Piscina loads its `filename` with
 * `require()` first; on Node 20 that loads an ES module synchronously (require(esm)), and a thread
 * terminated during that load (close, or a force-stop racing a replacement thread) aborts the whole
 * process with `FATAL ERROR: v8::ToLocalChecked Empty MaybeLocal`. This file loads the real worker
 * with a dynamic `import()` instead, which a termination ends cleanly. Piscina awaits the `default`
 * of what `require()` gave (here, this promise), so it gets the worker's handler once it resolves.
 */
module.exports = import('./worker.js').then((worker: { default: unknown }) => worker.default);
