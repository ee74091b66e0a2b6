/**
 * What a batch logs: each key's net change in the batch. An earlier op of the same key in the
 * batch is superseded and not logged, and what is logged is relative to the key's version before
 * the batch, so a task submitted, started and settled in one batch logs nothing. The overlay
 * (overlay.ts) is told every op as it is written, which is how it knows the versions.
 */
import type { Key } from '../port.js';
import { REMOVED, type Overlay } from './overlay.js';
import { CODECS, FINAL, PATCH, PATCHED, REMOVAL, UNLOGGED } from './layout.js';
import type { Batch } from './batch-writer.js';

/** Puts the ops of `batch` from `from` on in the overlay, and rewrites them into the net change the log keeps. */
export function netChanges(overlay: Overlay, batch: Batch, from: number): void {
  const { ops } = batch;
  // One clock read per batch, not per commit: the overlay only needs it to tell cold entries (500 ms).
  const at = batch.at;
  for (let i = from; i < ops.length; i += 3) {
    const index = ops[i] as number;
    const key = ops[i + 1] as Key;
    const final = index >= FINAL;
    const removal = !final && index >= REMOVAL;
    const db = final ? index - FINAL : removal ? index - REMOVAL : index;
    const value = removal ? REMOVED : ops[i + 2];
    overlay.set(db, key, value, batch.no, at, final, i);
    if (overlay.priorOp >= 0) ops[overlay.priorOp] = UNLOGGED;
    if (final) {
      // Written in this commit: logged only as a marker, which tells a replay that the database
      // has this version and that any earlier change of the key still in the log is stale. Always
      // logged: a key whose earlier version was written and left the overlay may still have
      // changes in the log behind the checkpoint (another record holds it back), and a replay
      // without the marker would write one of those over this version. No patch is taken against
      // its earlier version, so that version is let go now rather than when the commit lands (it
      // was kept alive for every task waiting on its settle commit). A later change in this batch
      // is then logged whole instead of as a patch.
      overlay.entry!.before = undefined;
      ops[i + 2] = null;
      continue;
    }
    if (removal) continue;
    const before = overlay.before;
    if (PATCHED.has(db)) batch.touched.push(overlay.entry!);
    // A new version of a record the log or its database holds: log only what changed (the same
    // object changed in place is logged whole).
    if (before !== undefined && before !== REMOVED && before !== value && PATCHED.has(db)) {
      ops[i] = db + PATCH;
      ops[i + 2] = CODECS.get(db)!.diff(before, value);
    }
  }
}
