// comlink ships its ESM build as .mjs without an `exports` map; its types live beside the UMD build.
declare module 'comlink/dist/esm/comlink.mjs' {
  export * from 'comlink';
}
