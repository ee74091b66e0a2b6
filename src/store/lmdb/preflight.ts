/**
 * A look at `data.mdb` before LMDB maps it. LMDB trusts its file: a truncated one makes it touch
 * pages past the end (SIGBUS), zeroed meta pages make it follow garbage (SIGSEGV), and an empty
 * one opens as a new, empty store. None of that is an error a caller can catch, so the checks LMDB
 * does not make are made here, and such a file is refused with STORE_CORRUPT and left untouched.
 *
 * LMDB keeps two meta pages, pages 0 and 1; the one with the higher transaction id is current.
 * Each holds, after the page header, the magic 0xBEEFC0DE, the format version, the map address
 * and size, the two core database records (the first of which carries the page size; each ends
 * with its root page), the last page in use and the transaction id. Offsets below are those of
 * the 64-bit layout lmdb-js writes. A file cut short by a page or two at its end cannot be told
 * from one whose last pages were never written, and is let through (see checkDataFile).
 */
import { closeSync, openSync, readSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { TroupeError } from '../../errors.js';

const MAGIC = 0xbeefc0de;
const META = { magic: 0x18, pageSize: 0x30, freeRoot: 0x58, mainRoot: 0x88, lastPage: 0x90, txnId: 0x98, end: 0xa0 };
/** The root of an empty database. */
const NO_PAGE = 0xffffffffffffffffn;
/** Page sizes LMDB may have used: the OS page size when the file was made. */
const PAGE_SIZES = [4096, 8192, 16384, 32768, 65536];

interface Meta {
  pageSize: number;
  lastPage: bigint;
  txnId: bigint;
  roots: bigint[];
}

/** Throws STORE_CORRUPT when `<dataDir>/data.mdb` exists but LMDB could not open it safely. */
export function checkDataFile(dataDir: string): void {
  const path = join(dataDir, 'data.mdb');
  const stat = statSync(path, { throwIfNoEntry: false });
  if (!stat) return;
  const corrupt = (why: string) => new TroupeError('STORE_CORRUPT', `${path} ${why}; Troupe refuses to open it and leaves it as it is (restore it from a backup, or move the data dir aside to start empty)`);
  if (stat.size === 0) throw corrupt('is empty (0 bytes): an empty file would open as an empty store, every task gone');
  if (stat.size < 2 * PAGE_SIZES[0]!) throw corrupt(`is ${stat.size} bytes, shorter than its two meta pages`);
  const fd = openSync(path, 'r');
  try {
    const first = metaAt(fd, 0);
    const pageSize = first?.pageSize ?? PAGE_SIZES.find((size) => metaAt(fd, size)?.pageSize === size);
    const second = pageSize === undefined ? undefined : metaAt(fd, pageSize);
    const metas = [first, second].filter((m): m is Meta => m !== undefined && m.pageSize === pageSize);
    if (metas.length === 0 || pageSize === undefined) throw corrupt('has no valid meta page (both are damaged or zeroed)');
    const current = metas.reduce((a, b) => (b.txnId > a.txnId ? b : a));
    const pages = BigInt(stat.size) / BigInt(pageSize);
    // The last pages counted in use may never have been written (freed again in the transaction
    // that took them), so a file a few pages short is not damaged. A core root past the end, or a
    // file short by more than an eighth of its pages, is: LMDB would read past the end at once.
    const rootPastEnd = current.roots.find((root) => root !== NO_PAGE && root >= pages);
    if (rootPastEnd !== undefined) throw corrupt(`is truncated: its root page ${rootPastEnd} is past its end (${pages} pages of ${pageSize} bytes)`);
    const missing = current.lastPage + 1n - pages;
    if (missing > 16n && missing * 8n > current.lastPage) throw corrupt(`is truncated: ${stat.size} bytes, ${missing} pages short of the ${current.lastPage + 1n} it uses`);
  } finally {
    closeSync(fd);
  }
}

/** The meta page at `offset`, if it carries the magic and a plausible page size. */
function metaAt(fd: number, offset: number): Meta | undefined {
  const bytes = Buffer.alloc(META.end);
  if (readSync(fd, bytes, 0, META.end, offset) < META.end) return undefined;
  if (bytes.readUInt32LE(META.magic) !== MAGIC) return undefined;
  const pageSize = bytes.readUInt32LE(META.pageSize);
  if (!PAGE_SIZES.includes(pageSize)) return undefined;
  return {
    pageSize,
    lastPage: bytes.readBigUInt64LE(META.lastPage),
    txnId: bytes.readBigUInt64LE(META.txnId),
    roots: [bytes.readBigUInt64LE(META.freeRoot), bytes.readBigUInt64LE(META.mainRoot)],
  };
}
