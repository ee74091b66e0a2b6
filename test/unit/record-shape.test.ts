/**
 * Task records share one V8 shape however they were made (src/store/records.ts, `createTaskRecord`):
 * fresh, spread from another by a step, or decoded from the store. Checked in a plain node process
 * with V8's natives syntax (`%HaveSameMap`), on the built runtime.
 */
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const dist = (path: string) => JSON.stringify(fileURLToPath(new URL(`../../dist/src/${path}`, import.meta.url)));

const SCRIPT = `
import { createTaskRecord } from ${dist('store/records.js')};
import { taskCodec } from ${dist('store/lmdb/codec.js')};
const fields = { id: 't1', agent: 'a', state: 'queued', input: { n: 1 }, priority: 0, lane: '', instanceKey: 'i', labels: {}, timeoutMs: 0, retry: { maxAttempts: 1, backoff: 'fixed', delayMs: 0, maxDelayMs: 0, jitter: 0 }, runReason: 'submit', createdAt: 1_700_000_000_000 };
const fresh = createTaskRecord(fields);
const other = createTaskRecord({ ...fields, id: 't2', input: null });
const started = { ...fresh, state: 'running', updatedAt: 1_700_000_000_001, token: 7 };
const decoded = taskCodec.fromValues(taskCodec.toValues(started));
const patched = taskCodec.patch(fresh, taskCodec.diff(fresh, started));
console.log(JSON.stringify({
  freshOther: %HaveSameMap(fresh, other),
  freshSpread: %HaveSameMap(fresh, started),
  freshDecoded: %HaveSameMap(fresh, decoded),
  freshPatched: %HaveSameMap(fresh, patched),
  fast: %HasFastProperties(fresh) && %HasFastProperties(started),
}));
`;

describe('task record shape', () => {
  it('is one map for fresh, spread, decoded and patched records', () => {
    const out = execFileSync(process.execPath, ['--allow-natives-syntax', '--input-type=module', '-e', SCRIPT], { encoding: 'utf8' });
    expect(JSON.parse(out)).toEqual({ freshOther: true, freshSpread: true, freshDecoded: true, freshPatched: true, fast: true });
  });
});
